"""Background training jobs: a fair queue of runs and a few worker threads that train them.

    manager = JobManager(RunStore())          # one per server process (the app caches it)
    run_id = manager.submit(TrainConfig(objective="lacvit"), owner=identity)
    manager.progress(run_id)                  # plain dict: status, step/total, ETA, curves
    manager.queue_positions()                 # {run_id: (position, wait estimate s or None)}
    manager.cancel(run_id, by=identity)       # queued -> cancelled at once; running -> within one step
    manager.request_cancel(run_id, by=identity)  # the same for a run of another process, through the store

The fair queue (workshop mode: a room of people on one server). Each person (`owner_id`, see
core/workshop.py) has their own first-in-first-out line. When a worker is free it starts the head of
the line of the person whose most recent start on this server is the oldest; a person none of whose
runs has started yet (since this server started) counts as older than everyone, and ties between
such people go to the one whose waiting head was submitted first. So everyone waiting gets a turn
before anyone gets a second one: alice queueing five runs and bob two after her start as alice, bob,
alice, bob, alice, alice, alice. A resume joins its owner's line at the back. Outside workshop mode
every run is "local"'s and the queue is the plain FIFO it always was. A person may have at most
`queue_cap()` runs waiting (EMBEDLAB_QUEUE_CAP, default 4 in workshop mode, unlimited otherwise;
the running ones do not count): one more is refused with QueueFull. In workshop mode only a run's
owner or the instructor may cancel, delete or resume it (NotAllowed otherwise); `by=None` is the
local user / CLI, who may do anything.

Workers: `default_workers()` (EMBEDLAB_WORKERS; default one per CUDA GPU, 1 on a CPU); with several
GPUs worker i trains its runs whose device is "auto" on cuda:i, so two GPUs train two runs at once.

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
That held until browsers watched: a run in a server thread shares the GIL with every session's
reruns (4 viewers stopped it, BENCHMARKS.md "Viewers on the Train page"), so the app now passes
`train_fn=core.process_worker.train` (EMBEDLAB_TRAIN_IN=process, its default): the worker thread
stays, and the run trains in a child process whose events it folds in here as before.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
import dataclasses
import itertools
import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import EmbedLabError, InvalidConfig, NoCheckpoint, QueueFull
from .store import LOCAL_OWNER, TERMINAL, RunStore
from .workshop import LOCAL, Identity, check_manage, workshop_enabled

_logger = logging.getLogger(__name__)

ACTIVE = ("queued", "running")  # statuses of a job that still needs the worker
RESUMABLE = ("interrupted", "failed", "cancelled")  # statuses `resume()` accepts
_HISTORY_CAP = 2000  # points kept per curve in memory (train() logs ~100 loss points per run)
_KEEP_FINISHED = 200  # finished jobs kept in memory; older ones are read back from the store
_DELETE_WAIT_S = 120.0  # how long delete() waits for a running job to stop
WORKERS_ENV = "EMBEDLAB_WORKERS"  # how many runs train at once (EMBEDLAB_MAX_RUNNING: its older name)
QUEUE_CAP_ENV = "EMBEDLAB_QUEUE_CAP"  # runs one person may have waiting; 0 = no limit
WORKSHOP_QUEUE_CAP = 4  # the default cap in workshop mode
_RATE_RUNS = 20  # recent finished runs of a backbone whose seconds per step make a wait estimate
_RATE_TTL_S = 30.0  # how long a measured seconds-per-step is reused (queue_positions is polled by every page)


def default_workers() -> int:
    """EMBEDLAB_WORKERS (or its older name EMBEDLAB_MAX_RUNNING) when set; else one per CUDA GPU, 1 on a CPU."""
    for name in (WORKERS_ENV, "EMBEDLAB_MAX_RUNNING"):
        raw = os.environ.get(name, "").strip()
        if raw:
            try:
                n = int(raw)
            except ValueError:
                n = 0
            if n < 1:
                raise InvalidConfig(f"{name}={raw!r}: give how many runs may train at once, a whole number of at least 1")
            return n
    return max(1, _cuda_count())


def queue_cap() -> int | None:
    """Runs one person may have waiting: EMBEDLAB_QUEUE_CAP (0 = no limit), default 4 in workshop mode, else None."""
    raw = os.environ.get(QUEUE_CAP_ENV, "").strip()
    if not raw:
        return WORKSHOP_QUEUE_CAP if workshop_enabled() else None
    try:
        cap = int(raw)
    except ValueError:
        cap = -1
    if cap < 0:
        raise InvalidConfig(f"{QUEUE_CAP_ENV}={raw!r}: give how many runs one person may queue, a whole number (0 = no limit)")
    return cap or None


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch, or a broken driver: train on the CPU
        return 0


def fair_order(waiting: Iterable[tuple[str, str]], last_start: dict[str, int], limit: int | None = None) -> list[str]:
    """The order in which `waiting` runs ((run_id, owner_id), in submission order) will start.

    Round-robin by owner: repeatedly the head of the owner whose `last_start` (a start counter; absent =
    never started, older than any) is the smallest, ties to the earlier-submitted head; FIFO per owner.
    """
    lines: dict[str, deque[tuple[int, str]]] = {}
    for i, (run_id, owner) in enumerate(waiting):
        lines.setdefault(owner, deque()).append((i, run_id))
    marks = {owner: last_start.get(owner, -1) for owner in lines}
    seq = max(last_start.values(), default=-1)
    order: list[str] = []
    while lines and (limit is None or len(order) < limit):
        owner = min(lines, key=lambda o: (marks[o], lines[o][0][0]))
        order.append(lines[owner].popleft()[1])
        if not lines[owner]:
            del lines[owner]
        seq += 1
        marks[owner] = seq
    return order


@dataclass
class Job:
    """One submitted run as the manager sees it; mutated only under the manager's lock."""

    run_id: str
    config: Any  # core.train.TrainConfig (validated and resolved)
    prepared: Any = None  # core.train.Prepared: what validation loaded, handed to train_fn (None: config)
    resume: bool = False
    owner_id: str = LOCAL_OWNER  # the person whose queue line it waits in (core.workshop.Identity.owner_id)
    owner_name: str | None = None
    cancelled_by: str | None = None  # the name of whoever cancelled someone else's run (workshop mode)
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
    """Fair queue (round-robin by owner, see the module's docstring) + `max_running` daemon worker
    threads running `core.train.train`.

    Thread-safe: any number of sessions may submit, cancel and poll concurrently.

    Args:
        store: the run store (its root is the EMBEDLAB_HOME runs live in).
        max_running: how many runs train at once (1 suits one GPU or a small CPU); None: `default_workers()`.
        train_fn: the training function, `train(cfg, store=, run_id=, root=, on_event=,
            should_stop=, resume=) -> summary dict`; tests inject a fake.
        validate_fn: `validate(cfg, root) -> resolved cfg`, raising EmbedLabError on bad settings.
        devices: the device worker i gives its "auto" runs (devices[i % len]); default: cuda:0..N-1 when
            there are several GPUs, else none (each run picks its own device as before).

    With the real train and validate, a run is validated once, in `submit`: `core.train.prepare`'s
    result (the resolved config and its loaded data split) goes to the worker as train's `cfg`.
    """

    def __init__(self, store: RunStore | None = None, *, max_running: int | None = 1,
                 train_fn: Callable[..., dict] | None = None,
                 validate_fn: Callable[..., Any] | None = None,
                 devices: list[str] | None = None):
        if max_running is None:
            max_running = default_workers()
        if max_running < 1:
            raise InvalidConfig(f"max_running must be at least 1, not {max_running}")
        self._prepare_fn = None  # (cfg, root) -> Prepared, when train_fn takes one
        if train_fn is None or validate_fn is None:
            from . import train as _train  # torch import deferred until a manager is built

            if train_fn is None and validate_fn is None:
                self._prepare_fn = _train.prepare
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
        self._admit_lock = threading.Lock()  # the cap check and the enqueue it allows happen as one step
        self._last_start: dict[str, int] = {}  # owner_id -> start counter of their latest start (fair order)
        self._starts = itertools.count()
        n_gpus = _cuda_count() if devices is None else 0
        self._devices = list(devices) if devices is not None else ([f"cuda:{i}" for i in range(n_gpus)] if n_gpus > 1 else [])
        self._rates: dict[str, tuple[float, float | None]] = {}  # backbone -> (measured at, seconds per step)
        self._closed = False
        from .tasks import TaskRunner

        self.tasks = TaskRunner()  # background work that is not a run (Train page selections): core/tasks.py

    # --- submitting ---------------------------------------------------------------------------
    def validate(self, cfg):
        """The resolved config, or EmbedLabError with a one-line message (nothing is queued)."""
        return self._validate_fn(cfg, self.store.root)

    def submit(self, cfg, owner: Identity | None = None) -> str:
        """Validate `cfg`, create the run as `queued` in the store and queue it; returns the run id."""
        return self.submit_many([cfg], owner=owner)[0]

    def submit_many(self, cfgs: Iterable, owner: Identity | None = None) -> list[str]:
        """Validate every config first, then queue them all in order (all or nothing), owned by `owner`
        (None: the local user). QueueFull when they would take `owner` past the per-person cap.

        Weights files must be ones imported into EMBEDLAB_HOME/weights/: a browser user can never
        point a run at another file on the server.
        """
        from .backbones import weights_in_home

        cfgs = list(cfgs)
        for cfg in cfgs:
            if not weights_in_home(cfg.weights, self.store.root):
                raise InvalidConfig(f"weights {cfg.weights!r} are not an imported weights file; upload the file on the Train page")
        owner = owner or LOCAL
        self._check_cap(owner.owner_id, len(cfgs))  # refused before the (slower) validation, and again below
        prepared = [self._prepare(cfg) for cfg in cfgs]
        name = None if owner.owner_id == LOCAL_OWNER else owner.name
        ids = []
        with self._admit_lock:
            self._check_cap(owner.owner_id, len(prepared))
            for cfg, ready in prepared:
                run_id = self.store.create_run(cfg.to_dict(), status="queued", owner_id=owner.owner_id, owner_name=name)
                self._enqueue(Job(run_id, cfg, prepared=ready, owner_id=owner.owner_id, owner_name=name))
                ids.append(run_id)
        return ids

    def _prepare(self, cfg) -> tuple[Any, Any]:
        """(resolved config, the validated run for the worker or None), or EmbedLabError: the one validation."""
        if self._prepare_fn is None:
            return self.validate(cfg), None
        ready = self._prepare_fn(cfg, self.store.root)
        return ready.cfg, ready

    def _check_cap(self, owner_id: str, adding: int) -> None:
        cap = queue_cap()
        if cap is None:
            return
        with self._lock:
            waiting = sum(self._jobs[r].owner_id == owner_id for r in self._queue)
        if waiting + adding > cap:
            have = f"{waiting} run{'s' * (waiting != 1)} waiting" if waiting else "no runs waiting"
            raise QueueFull(f"the queue takes at most {cap} waiting run{'s' * (cap != 1)} per person ({QUEUE_CAP_ENV}); "
                            f"you have {have} and asked for {adding} more: wait until one starts, or cancel one")

    def resume_point(self, run_id: str) -> int | None:
        """The step a resume of `run_id` continues from (its checkpoint's); None: no usable checkpoint, so a
        resume starts over from step 0 (and `resume` asks for `restart_ok=True` first)."""
        return self.store.checkpoint_step(run_id)

    def resume(self, run_id: str, by: Identity | None = None, *, restart_ok: bool = False) -> str:
        """Re-queue an interrupted / failed / cancelled run; it continues from its last checkpoint
        (`resume_point`), in its owner's queue line.

        A run with no usable checkpoint would start over from step 0: that raises NoCheckpoint (saying
        so) unless `restart_ok=True`. NotAllowed in workshop mode unless `by` owns the run or is the instructor.
        """
        from .train import TrainConfig

        with self._resume_lock:
            record = self.store.get(run_id)
            check_manage(by, record.owner_id, run_id, "resume", record.owner_name)
            with self._lock:
                job = self._jobs.get(run_id)
                if job is not None and job.status in ACTIVE:
                    raise InvalidConfig(f"run {run_id} is already {job.status}")
            if record.status not in RESUMABLE:
                raise InvalidConfig(f"run {run_id} is {record.status}; "
                                    "only interrupted, failed or cancelled runs can be resumed")
            step = self.resume_point(run_id)
            if step is None and not restart_ok:
                raise NoCheckpoint(f"run {run_id} has no checkpoint: resume starts over from step 0; "
                                   "confirm to train it again from the start")
            cfg, ready = self._prepare(TrainConfig.from_dict(record.config))
            with self._admit_lock:
                self._check_cap(record.owner_id, 1)
                self.store.set_status(run_id, "queued")
                self._enqueue(Job(run_id, cfg, prepared=ready, resume=step is not None, owner_id=record.owner_id,
                                  owner_name=record.owner_name))
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
    def cancel(self, run_id: str, by: Identity | None = None) -> bool:
        """Cancel a queued run (it never starts) or stop a running one within one step.

        Returns False if this process is not running or queueing `run_id`. NotAllowed in workshop mode
        unless `by` owns the run or is the instructor.
        """
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None or job.status not in ACTIVE:
                return False
            check_manage(by, job.owner_id, run_id, "cancel", job.owner_name)
            if by is not None and by.owner_id != job.owner_id and workshop_enabled():
                job.cancelled_by = by.name + (" (instructor)" if by.instructor else "")  # the owner sees who did it
            job.stop.set()
            if job.status == "running":
                job.phase = "stopping"
                return True
            if run_id in self._queue:
                self._queue.remove(run_id)
            before = f"cancelled by {job.cancelled_by} before it started" if job.cancelled_by else "cancelled before it started"
            job.status, job.error, job.finished = "cancelled", before, time.time()
            job.phase = "cancelled"
            job.done.set()
        self.store.set_status(run_id, "cancelled", error=job.error)
        return True

    def request_cancel(self, run_id: str, by: Identity | None = None) -> str | None:
        """Stop `run_id` wherever it runs: "local" when this manager runs or queues it (`cancel`),
        "remote" when another process (a CLI, another server) does: the request goes through the store
        and that run ends `cancelled` at its next step. None when it is not queued or running (any
        more); a run whose process has died is marked `interrupted` on the way. NotAllowed as `cancel`."""
        if self.cancel(run_id, by):
            return "local"
        if by is not None and self.store.exists(run_id):
            record = self.store.get(run_id)
            check_manage(by, record.owner_id, run_id, "cancel", record.owner_name)
        self.store.recover_interrupted()
        return "remote" if self.store.request_cancel(run_id) else None

    def delete(self, run_id: str, by: Identity | None = None, *, timeout: float = _DELETE_WAIT_S) -> None:
        """Delete a run and its artifacts; a running run is cancelled first and awaited. NotAllowed in
        workshop mode unless `by` owns the run or is the instructor."""
        with self._lock:
            job = self._jobs.get(run_id)
        if job is not None:
            check_manage(by, job.owner_id, run_id, "delete", job.owner_name)
        elif by is not None and self.store.exists(run_id):
            record = self.store.get(run_id)
            check_manage(by, record.owner_id, run_id, "delete", record.owner_name)
        if job is not None and job.status in ACTIVE:
            self.cancel(run_id, by)
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
        self.tasks.shutdown(max(0.0, deadline - time.time()))

    # --- reading ------------------------------------------------------------------------------
    def queue_position(self, run_id: str) -> int | None:
        """1 for the next run to start, 2 for the one after it, ... (the fair order); None if not waiting."""
        with self._lock:
            return self._position(run_id)

    def _position(self, run_id: str) -> int | None:
        """Under the lock."""
        if run_id not in self._queue:
            return None
        return self._fair_order().index(run_id) + 1

    def _fair_order(self, limit: int | None = None) -> list[str]:
        """Under the lock: the waiting run ids in the order they will start."""
        return fair_order([(r, self._jobs[r].owner_id) for r in self._queue], self._last_start, limit)

    def queued(self) -> list[str]:
        """Waiting run ids in the order they will start."""
        with self._lock:
            return self._fair_order()

    def queue_positions(self) -> dict[str, tuple[int, float | None]]:
        """{run_id: (1-based position in the fair order, estimated seconds until it starts or None)} for
        every waiting run.

        The estimate plays the queue forward: each worker is free when its running run ends (its ETA from
        the step rate; before its first step, the typical duration below less the time it has run), and
        each waiting run, in order, takes the first free worker for its typical duration: its steps times
        the median seconds per step (wall time, preparation included) of the last finished runs with the
        same backbone on this server. None ("unknown") from the first run on for which any of this is not
        known yet (a backbone never run here, an epochs budget, a running run with no estimate).
        """
        now = time.time()
        with self._lock:
            order = self._fair_order()
            running = [(j.eta(now), (now - j.started) if j.started else 0.0, j.config)
                       for j in self._jobs.values() if j.status == "running"]
            waiting = [self._jobs[r].config for r in order]
        free: list[float | None] = []
        for eta, elapsed, cfg in running:
            if eta is None and (typical := self.typical_duration(cfg)) is not None:
                eta = max(0.0, typical - elapsed)
            free.append(eta)
        free += [0.0] * max(0, self.max_running - len(free))
        out: dict[str, tuple[int, float | None]] = {}
        for i, (run_id, cfg) in enumerate(zip(order, waiting)):
            if any(f is None for f in free):
                out[run_id] = (i + 1, None)
                continue
            k = min(range(len(free)), key=free.__getitem__)
            start = free[k]
            out[run_id] = (i + 1, start)
            duration = self.typical_duration(cfg)
            free[k] = None if duration is None else start + duration
        return out

    def typical_duration(self, cfg) -> float | None:
        """Seconds a run of `cfg` typically takes here: steps x measured seconds per step (None: unknown)."""
        steps = getattr(cfg, "steps", None)
        rate = self._seconds_per_step(getattr(cfg, "backbone", ""))
        return None if rate is None or not steps else rate * steps

    def _seconds_per_step(self, backbone: str) -> float | None:
        now = time.time()
        cached = self._rates.get(backbone)
        if cached is not None and now - cached[0] < _RATE_TTL_S:
            return cached[1]
        rates = []
        try:
            for r in self.store.list(status=("finished",), limit=200):
                steps = r.config.get("steps") or (r.progress or {}).get("total")
                if r.backbone == backbone and r.duration and steps:
                    rates.append(r.duration / float(steps))
                    if len(rates) >= _RATE_RUNS:
                        break
        except Exception:  # noqa: BLE001 - an estimate is never worth an error on the page
            _logger.debug("could not read run durations", exc_info=True)
        rate = statistics.median(rates) if rates else None
        self._rates[backbone] = (now, rate)
        return rate

    def running(self) -> list[str]:
        with self._lock:
            return [j.run_id for j in self._jobs.values() if j.status == "running"]

    def active(self) -> list[str]:
        """Run ids this process is running or queueing, running first, then in queue order."""
        with self._lock:
            return [j.run_id for j in self._jobs.values() if j.status == "running"] + self._fair_order()

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
                pos = self._position(run_id) if job.status == "queued" else None
                p = {
                    "run_id": run_id, "status": job.status, "phase": job.phase,
                    "phase_done": job.phase_done, "phase_total": job.phase_total, "stage": job.stage,
                    "step": job.step, "total": job.total, "eta": job.eta(now), "queue_position": pos,
                    "elapsed": (job.finished or now) - job.started if job.started else None,
                    "loss": list(job.loss), "val_acc": list(job.val_acc), "error": job.error,
                    "summary": dict(job.summary), "stopping": job.stop.is_set() and job.status == "running",
                    "submitted": job.submitted, "local": True,
                    "owner_id": job.owner_id, "owner_name": job.owner_name,
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
            "owner_id": record.owner_id, "owner_name": record.owner_name,
        }

    # --- the worker ---------------------------------------------------------------------------
    def _start_workers(self) -> None:
        """Called under the lock: make sure `max_running` workers are alive (started lazily)."""
        alive = {int(w.name.rsplit("-", 1)[1]) for w in self._workers if w.is_alive()}
        self._workers = [w for w in self._workers if w.is_alive()]
        for index in sorted(set(range(self.max_running)) - alive):  # a worker keeps its index: its GPU
            worker = threading.Thread(target=self._work, args=(index,), name=f"embedlab-worker-{index}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _on_device(self, cfg, index: int):
        """Worker `index`'s copy of `cfg`: an "auto" device becomes this worker's GPU when there are several."""
        if self._devices and getattr(cfg, "device", None) == "auto":
            return dataclasses.replace(cfg, device=self._devices[index % len(self._devices)])
        return cfg

    def _work(self, index: int = 0) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed and not self._queue:
                    return
                run_id = self._fair_order(limit=1)[0]
                self._queue.remove(run_id)
                job = self._jobs[run_id]
                self._last_start[job.owner_id] = next(self._starts)
                job.config = self._on_device(job.config, index)
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
            result = self._train_fn(job.config if job.prepared is None else job.prepared, store=self.store, run_id=job.run_id, root=self.store.root,
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
        if status == "cancelled" and job.cancelled_by:  # someone other than the owner stopped it: say who
            error = f"cancelled by {job.cancelled_by}"
            self._reconcile(job.run_id, status, error, overwrite=("cancelled",))
        self._reconcile(job.run_id, status, error)
        with self._lock:
            job.status, job.error, job.finished = status, error, time.time()
            job.summary.update(summary)
            job.phase = status
            job.prepared = None  # the loaded split is the run's: not kept with the finished job

    def _reconcile(self, run_id: str, status: str, error: str | None, overwrite: tuple[str, ...] = ()) -> None:
        """Make sure the store does not keep a finished job as queued / running (nor in `overwrite`)."""
        try:
            if self.store.exists(run_id) and self.store.get(run_id).status in ACTIVE + overwrite:
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

