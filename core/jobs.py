"""Background training jobs: a FIFO queue of runs and a few worker threads that train them.

    manager = JobManager(RunStore())          # one per server process (the app caches it)
    run_id = manager.submit(TrainConfig(objective="lacvit"))
    manager.progress(run_id)                  # plain dict: status, step/total, ETA, curves
    manager.cancel(run_id)                    # queued -> cancelled at once; running -> within one step
    manager.request_cancel(run_id)            # the same for a run of another process, through the store

Every run is created in the run store as `queued` the moment it is submitted, so every browser
session (and the CLI) sees it; the store stays the source of truth for status, metrics and
artifacts. The manager adds what only the owning process knows: the queue order, the stop flags
and an in-memory progress record per job (latest event, loss / accuracy history, ETA), updated by
the worker under a lock and read by the UI as plain dict copies. No Streamlit import here: pages
poll `progress()` from a `run_every` fragment; the worker never touches the UI.

Why threads, not subprocesses (measured on the 2-core CPU box with test_vit on mnist5k, three tries
each, while other work kept the load average at 7-9; an ad-hoc script: thread = this manager,
subprocess = `python -c "train(...)"` polled through the store and stopped by SIGTERM -> should_stop):

    submit -> first training step    thread  0.1-0.3 s      subprocess  18-22 s (10-15 s on an idle box)
    cancel() -> run recorded ended   thread  0.005-0.36 s   subprocess  0.04-1.1 s

A subprocess pays the torch / timm / open_clip imports, the dataset load and the model build on
every run, and needs IPC for progress; a thread shares the warm imports, the in-process dataset
cache and the feature cache, and torch releases the GIL in its kernels, so the UI stays responsive
(the browser test opens another page in about a second while a run trains). Cancelling is
cooperative either way: `should_stop` is checked every step, and the prepare phase (feature caching,
embedding) is interrupted at its next progress event. A subprocess would only win on hard isolation
(killing a hung native call, handing memory back to the OS), which this one-GPU / small-CPU tool
does not need: a crashing run already ends as `failed` and the worker carries on.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import EmbedLabError, InvalidConfig
from .store import TERMINAL, RunStore

_logger = logging.getLogger(__name__)

ACTIVE = ("queued", "running")  # statuses of a job that still needs the worker
RESUMABLE = ("interrupted", "failed", "cancelled")  # statuses `resume()` accepts
_HISTORY_CAP = 2000  # points kept per curve in memory (train() logs ~100 loss points per run)
_KEEP_FINISHED = 200  # finished jobs kept in memory; older ones are read back from the store
_DELETE_WAIT_S = 120.0  # how long delete() waits for a running job to stop


@dataclass
class Job:
    """One submitted run as the manager sees it; mutated only under the manager's lock."""

    run_id: str
    config: Any  # core.train.TrainConfig (validated and resolved)
    resume: bool = False
    status: str = "queued"  # queued | running | finished | failed | cancelled
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    phase: str = "waiting in the queue"  # what the run is doing now, for the UI
    phase_done: int | None = None
    phase_total: int | None = None
    stage: str | None = None
    step: int = 0
    total: int | None = None
    first_step: tuple[float, int] | None = None  # (time, step) of the first step seen: the ETA's baseline
    last_step_t: float | None = None
    loss: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    val_acc: list[tuple[int, float]] = field(default_factory=list)  # (step, val accuracy)
    error: str | None = None
    summary: dict = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)  # set when the job has left the worker

    def eta(self, now: float | None = None) -> float | None:
        """Seconds to the last step, from the step rate since the first step (None until known)."""
        if self.status != "running" or self.total is None or self.first_step is None:
            return None
        t0, s0 = self.first_step
        if self.step <= s0 or self.last_step_t is None:
            return None
        rate = (self.last_step_t - t0) / (self.step - s0)  # seconds per step
        return max(0.0, rate * (self.total - self.step))


class JobManager:
    """FIFO queue + `max_running` daemon worker threads running `core.train.train`.

    Thread-safe: any number of sessions may submit, cancel and poll concurrently.

    Args:
        store: the run store (its root is the EMBEDLAB_HOME runs live in).
        max_running: how many runs train at once (1 suits one GPU or a small CPU).
        train_fn: the training function, `train(cfg, store=, run_id=, root=, on_event=,
            should_stop=, resume=) -> summary dict`; tests inject a fake.
        validate_fn: `validate(cfg, root) -> resolved cfg`, raising EmbedLabError on bad settings.
    """

    def __init__(self, store: RunStore | None = None, *, max_running: int = 1,
                 train_fn: Callable[..., dict] | None = None,
                 validate_fn: Callable[..., Any] | None = None):
        if max_running < 1:
            raise InvalidConfig(f"max_running must be at least 1, not {max_running}")
        if train_fn is None or validate_fn is None:
            from . import train as _train  # torch import deferred until a manager is built

            train_fn = train_fn or _train.train
            validate_fn = validate_fn or _train.validate
        self.store = store or RunStore()
        self.max_running = max_running
        self._train_fn = train_fn
        self._validate_fn = validate_fn
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[str] = deque()  # run ids waiting, oldest first
        self._jobs: dict[str, Job] = {}  # run id -> job (queued, running and recently finished)
        self._workers: list[threading.Thread] = []
        self._resume_lock = threading.Lock()  # two sessions resuming the same run must queue it once
        self._closed = False

    # --- submitting ---------------------------------------------------------------------------
    def validate(self, cfg):
        """The resolved config, or EmbedLabError with a one-line message (nothing is queued)."""
        return self._validate_fn(cfg, self.store.root)

    def submit(self, cfg) -> str:
        """Validate `cfg`, create the run as `queued` in the store and queue it; returns the run id."""
        return self.submit_many([cfg])[0]

    def submit_many(self, cfgs: Iterable) -> list[str]:
        """Validate every config first, then queue them all in order (all or nothing).

        Weights files must be ones imported into EMBEDLAB_HOME/weights/: a browser user can never
        point a run at another file on the server.
        """
        from .backbones import weights_in_home

        cfgs = list(cfgs)
        for cfg in cfgs:
            if not weights_in_home(cfg.weights, self.store.root):
                raise InvalidConfig(f"weights {cfg.weights!r} are not an imported weights file; upload the file on the Train page")
        resolved = [self.validate(cfg) for cfg in cfgs]
        ids = []
        for cfg in resolved:
            run_id = self.store.create_run(cfg.to_dict(), status="queued")
            self._enqueue(Job(run_id, cfg))
            ids.append(run_id)
        return ids

    def resume(self, run_id: str) -> str:
        """Re-queue an interrupted / failed / cancelled run; it continues from its last checkpoint.

        A run that never reached its first checkpoint starts again from step 0.
        """
        from .train import CHECKPOINT, TrainConfig

        with self._resume_lock:
            with self._lock:
                job = self._jobs.get(run_id)
                if job is not None and job.status in ACTIVE:
                    raise InvalidConfig(f"run {run_id} is already {job.status}")
            record = self.store.get(run_id)
            if record.status not in RESUMABLE:
                raise InvalidConfig(f"run {run_id} is {record.status}; "
                                    "only interrupted, failed or cancelled runs can be resumed")
            cfg = self.validate(TrainConfig.from_dict(record.config))
            has_checkpoint = (self.store.run_dir(run_id) / CHECKPOINT).exists()
            self.store.set_status(run_id, "queued")
            self._enqueue(Job(run_id, cfg, resume=has_checkpoint))
        return run_id

    def _enqueue(self, job: Job) -> None:
        with self._wake:
            if self._closed:
                raise EmbedLabError("the job manager is shutting down; try again after the restart")
            self._jobs[job.run_id] = job
            self._queue.append(job.run_id)
            self._start_workers()
            self._wake.notify()

    # --- controlling --------------------------------------------------------------------------
    def cancel(self, run_id: str) -> bool:
        """Cancel a queued run (it never starts) or stop a running one within one step.

        Returns False if this process is not running or queueing `run_id`.
        """
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None or job.status not in ACTIVE:
                return False
            job.stop.set()
            if job.status == "running":
                job.phase = "stopping"
                return True
            if run_id in self._queue:
                self._queue.remove(run_id)
            job.status, job.error, job.finished = "cancelled", "cancelled before it started", time.time()
            job.phase = "cancelled"
            job.done.set()
        self.store.set_status(run_id, "cancelled", error=job.error)
        return True

    def request_cancel(self, run_id: str) -> str | None:
        """Stop `run_id` wherever it runs: "local" when this manager runs or queues it (`cancel`),
        "remote" when another process (a CLI, another server) does: the request goes through the store
        and that run ends `cancelled` at its next step. None when it is not queued or running (any
        more); a run whose process has died is marked `interrupted` on the way."""
        if self.cancel(run_id):
            return "local"
        self.store.recover_interrupted()
        return "remote" if self.store.request_cancel(run_id) else None

    def delete(self, run_id: str, *, timeout: float = _DELETE_WAIT_S) -> None:
        """Delete a run and its artifacts; a running run is cancelled first and awaited."""
        with self._lock:
            job = self._jobs.get(run_id)
        if job is not None and job.status in ACTIVE:
            self.cancel(run_id)
            if not job.done.wait(timeout):
                raise EmbedLabError(f"run {run_id} did not stop within {timeout:.0f} s; try deleting it again")
        elif job is None:
            record = self.store.get(run_id)  # UnknownName if there is no such run
            if record.status in ACTIVE:
                self.store.recover_interrupted()  # a dead owner's run becomes interrupted
                if self.store.get(run_id).status in ACTIVE:
                    raise EmbedLabError(f"run {run_id} is {record.status} in another process ({record.owner}); "
                                        "cancel it first, then delete it once it has stopped")
        self.store.delete(run_id)
        with self._lock:
            self._jobs.pop(run_id, None)

    def shutdown(self, *, cancel: bool = True, timeout: float = 30.0) -> None:
        """Stop accepting jobs, cancel queued and running ones, and wait for the workers."""
        with self._wake:
            self._closed = True
            ids = list(self._jobs)
            self._wake.notify_all()
        if cancel:
            for run_id in ids:
                self.cancel(run_id)
        deadline = time.time() + timeout
        for worker in list(self._workers):
            worker.join(max(0.0, deadline - time.time()))

    # --- reading ------------------------------------------------------------------------------
    def queue_position(self, run_id: str) -> int | None:
        """1 for the next run to start, 2 for the one after it, ...; None if not waiting."""
        with self._lock:
            try:
                return self._queue.index(run_id) + 1
            except ValueError:
                return None

    def queued(self) -> list[str]:
        with self._lock:
            return list(self._queue)

    def running(self) -> list[str]:
        with self._lock:
            return [j.run_id for j in self._jobs.values() if j.status == "running"]

    def active(self) -> list[str]:
        """Run ids this process is running or queueing, running first, then in queue order."""
        with self._lock:
            return [j.run_id for j in self._jobs.values() if j.status == "running"] + list(self._queue)

    def status(self, run_id: str) -> str:
        with self._lock:
            job = self._jobs.get(run_id)
            if job is not None:
                return job.status
        return self.store.get(run_id).status

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        """Block until the job has left the worker (tests, CLI); True if it did."""
        with self._lock:
            job = self._jobs.get(run_id)
        return True if job is None else job.done.wait(timeout)

    def peek(self, run_id: str | None = None) -> tuple | None:
        """A cheap fingerprint of what the UI shows, read WITHOUT the lock (plain attribute and len() reads,
        atomic under the GIL): (status, stopping, queue length) of a run this manager holds (None if it holds
        none), or (jobs held, queue length) with no run id. The live board (core/live.py) compares it on
        every viewer's poll, so a status change shows at once while `progress()` is still copied once a second."""
        if run_id is None:
            return len(self._jobs), len(self._queue)
        job = self._jobs.get(run_id)
        return None if job is None else (job.status, job.stop.is_set(), len(self._queue))

    def progress(self, run_id: str) -> dict:
        """A plain-dict snapshot for the UI; falls back to the store for runs of other processes."""
        now = time.time()
        with self._lock:  # the worker takes this lock at every step: copy plain fields only, nothing slower
            job = self._jobs.get(run_id)
            if job is not None:
                pos = self._queue.index(run_id) + 1 if job.status == "queued" and run_id in self._queue else None
                p = {
                    "run_id": run_id, "status": job.status, "phase": job.phase,
                    "phase_done": job.phase_done, "phase_total": job.phase_total, "stage": job.stage,
                    "step": job.step, "total": job.total, "eta": job.eta(now), "queue_position": pos,
                    "elapsed": (job.finished or now) - job.started if job.started else None,
                    "loss": list(job.loss), "val_acc": list(job.val_acc), "error": job.error,
                    "summary": dict(job.summary), "stopping": job.stop.is_set() and job.status == "running",
                    "submitted": job.submitted, "local": True,
                }
        if job is None:
            return self._progress_from_store(run_id, now)
        p["config"] = job.config.to_dict()  # the job's config never changes: serialised outside the lock
        return p

    def _progress_from_store(self, run_id: str, now: float) -> dict:
        record = self.store.get(run_id)
        metrics = self.store.metrics(run_id, keys=("loss", "val_acc", "val_centroid_acc"))
        p = record.progress or {}
        summary = record.summary or {}
        return {
            "run_id": run_id, "status": record.status, "config": record.config,
            "phase": "training" if record.status == "running" else record.status, "phase_done": None, "phase_total": None,
            "stage": p.get("stage"), "step": int(p.get("step", summary.get("steps", 0)) or 0), "total": p.get("total"),
            "eta": None, "queue_position": None, "elapsed": record.duration,
            "loss": _dedup(metrics.get("loss", [])),
            "val_acc": _dedup(metrics.get("val_centroid_acc", []) + metrics.get("val_acc", [])),  # val_acc wins a step
            "error": record.error, "summary": summary, "submitted": record.created, "local": False,
            "stopping": record.status in ACTIVE and self.store.cancel_requested(run_id),
        }

    # --- the worker ---------------------------------------------------------------------------
    def _start_workers(self) -> None:
        """Called under the lock: make sure `max_running` workers are alive (started lazily)."""
        self._workers = [w for w in self._workers if w.is_alive()]
        while len(self._workers) < self.max_running:
            worker = threading.Thread(target=self._work, name=f"embedlab-worker-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed and not self._queue:
                    return
                job = self._jobs[self._queue.popleft()]
                job.status, job.started, job.phase = "running", time.time(), "starting"
            try:
                self._run(job)
            except BaseException:  # noqa: BLE001 - nothing may end the worker; the job records it
                _logger.exception("worker: job %s escaped its handler", job.run_id)
            finally:
                job.done.set()
                self._forget_old()

    def _run(self, job: Job) -> None:
        try:
            result = self._train_fn(job.config, store=self.store, run_id=job.run_id, root=self.store.root,
                                    on_event=lambda e: self._on_event(job, e), should_stop=job.stop.is_set,
                                    resume=job.resume)
            status = (result or {}).get("status", "finished")
            error = (result or {}).get("error")
            summary = {k: v for k, v in (result or {}).items() if k not in ("run_id", "status", "error")}
        except BaseException as exc:  # noqa: BLE001 - a crashing run ends as failed, the queue goes on
            if isinstance(exc, EmbedLabError):
                error = str(exc)
            else:
                _logger.error("run %s crashed:\n%s", job.run_id, traceback.format_exc())
                error = f"{type(exc).__name__}: {exc}"
            status, summary = ("cancelled", {}) if job.stop.is_set() else ("failed", {})
            if status == "cancelled":
                error = "cancelled by the user"
        if status not in TERMINAL:
            status, error = "failed", error or f"the training function ended with status {status!r}"
        self._reconcile(job.run_id, status, error)
        with self._lock:
            job.status, job.error, job.finished = status, error, time.time()
            job.summary.update(summary)
            job.phase = status

    def _reconcile(self, run_id: str, status: str, error: str | None) -> None:
        """Make sure the store does not keep a finished job as queued / running."""
        try:
            if self.store.exists(run_id) and self.store.get(run_id).status in ACTIVE:
                self.store.set_status(run_id, status, error=error)
        except Exception:  # noqa: BLE001 - the run may have been deleted meanwhile
            _logger.exception("could not record the end of run %s", run_id)

    def _on_event(self, job: Job, event: dict) -> None:
        """Runs in the worker thread: fold one train() event into the job's progress record."""
        kind = event.get("type")
        now = time.time()
        with self._lock:
            if kind == "prepare":
                job.phase = event.get("what", "preparing")
                job.phase_done, job.phase_total = event.get("done"), event.get("total")
            elif kind == "stage":
                job.stage, job.phase, job.phase_done, job.phase_total = event.get("stage"), "training", None, None
            elif kind == "step":
                job.step, job.total, job.stage = int(event["step"]), event.get("total"), event.get("stage", job.stage)
                job.phase, job.phase_done, job.phase_total = "training", None, None
                if job.first_step is None:
                    job.first_step = (now, job.step)
                job.last_step_t = now
                if event.get("loss") is not None:
                    _append(job.loss, (job.step, float(event["loss"])))
            elif kind == "eval":
                acc = event.get("val_acc", event.get("val_centroid_acc"))
                if acc is not None:
                    _append(job.val_acc, (int(event.get("step", job.step)), float(acc)))
            elif kind == "done":
                job.summary.update({k: v for k, v in event.items() if k not in ("type", "run_id", "status", "error")})

    def _forget_old(self) -> None:
        with self._lock:
            finished = [j for j in self._jobs.values() if j.status not in ACTIVE]
            excess = len(finished) - _KEEP_FINISHED
            for j in sorted(finished, key=lambda j: j.finished or 0)[:max(0, excess)]:
                self._jobs.pop(j.run_id, None)


def _append(points: list, point: tuple) -> None:
    if points and points[-1][0] == point[0]:
        points[-1] = point  # a resumed run re-logs the steps after its checkpoint
    else:
        points.append(point)
    if len(points) > _HISTORY_CAP:
        del points[::2]  # thin evenly: keeps the curve's shape at half the points


def _dedup(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Last value per step, in step order (a resumed run logs some steps twice)."""
    return sorted({int(s): v for s, v in points if v is not None}.items())

