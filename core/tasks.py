"""Background work that is not a training run (a data selection from the Train page), owned by the JobManager.

A page must not compute in its script thread (the page freezes, and a rerun or a closed tab loses the
work), and per-session threads are invisible to every other session and to shutdown. So the one
process-wide `JobManager` holds a `TaskRunner` (`manager.tasks`): `submit(kind, label, fn)` starts `fn`
on its own daemon thread and returns a `Task` handle the page polls. At most `max_running` tasks compute
at once (the others wait their turn, status "queued"), so two sessions selecting on one small CPU do not
halve each other. `fn` receives a `progress(message)` callback; its return value becomes `task.result`,
an EmbedLabError its one-line message, anything else "<kind> failed: <type>: <message>" (never lost with
the thread). Finished tasks are kept (the newest `keep` of them) so a page that comes back later still
shows the outcome.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import EmbedLabError

log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")


@dataclass
class Task:
    """One piece of background work; the runner's thread writes it, pages only read it."""

    id: str
    kind: str  # what it is, e.g. "selection"
    label: str  # what the page shows, e.g. "VeCAF, 200"
    status: str = "queued"  # queued | running | finished | failed
    progress: str = ""  # the latest progress message
    result: Any = None
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def elapsed(self, now: float | None = None) -> float:
        return ((self.finished or now or time.time()) - (self.started or self.submitted))


class TaskRunner:
    def __init__(self, max_running: int = 1, keep: int = 64):
        self._slots = threading.Semaphore(max(1, max_running))
        self._lock = threading.Lock()
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._ids = itertools.count(1)
        self._keep = keep
        self._closed = False

    def submit(self, kind: str, label: str, fn: Callable[[Callable[[str], None]], Any]) -> Task:
        """Start `fn(progress)` in the background; returns its Task at once."""
        with self._lock:
            if self._closed:
                raise EmbedLabError("the server is shutting down: no new background work")
            task = Task(id=f"{kind}-{next(self._ids)}", kind=kind, label=label)
            self._tasks[task.id] = task
            self._forget_old()
        task.thread = threading.Thread(target=self._run, args=(task, fn), name=f"embedlab-task-{task.id}", daemon=True)
        task.thread.start()
        return task

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def list(self, kind: str | None = None) -> list[Task]:
        """Tasks, oldest first (of one kind when given)."""
        with self._lock:
            return [t for t in self._tasks.values() if kind is None or t.kind == kind]

    def shutdown(self, timeout: float = 5.0) -> None:
        """Refuse new tasks and wait up to `timeout` s for running ones (their threads are daemons)."""
        with self._lock:
            self._closed = True
            threads = [t.thread for t in self._tasks.values() if t.active and t.thread is not None]
        deadline = time.time() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.time()))

    # --- internals ---------------------------------------------------------------------------
    def _run(self, task: Task, fn) -> None:
        with self._slots:
            task.status, task.started = "running", time.time()

            def progress(message: str) -> None:
                task.progress = str(message)

            try:
                task.result = fn(progress)
                task.status = "finished"
            except EmbedLabError as exc:
                task.error, task.status = str(exc), "failed"
            except Exception as exc:  # a crash must reach the page as a message, not vanish with the thread
                log.debug("task %s crashed", task.id, exc_info=True)
                task.error, task.status = f"{task.kind} failed: {type(exc).__name__}: {exc}", "failed"
            finally:
                task.finished = time.time()

    def _forget_old(self) -> None:
        done = [tid for tid, t in self._tasks.items() if not t.active]
        for tid in done[:max(0, len(done) - self._keep)]:
            del self._tasks[tid]
