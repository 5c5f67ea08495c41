"""Train a JobManager's runs in a child process, so the server's Python threads never share a GIL with them.

    manager = JobManager(store, train_fn=process_worker.train)   # what the app does (EMBEDLAB_TRAIN_IN)

Why: a run training in a thread of the Streamlit server competes for the GIL with every browser
session's reruns; with four browsers on the Train page a run all but stopped (BENCHMARKS.md, "Viewers
on the Train page"). In a child process the run has its own interpreter: the server's sessions only
read the progress the parent thread folds in, exactly as before.

`train` has the signature JobManager expects of a train function (that of `core.train.train`). It
starts `sys.executable -m core.process_worker` with the resolved config as JSON on stdin's first line,
then a small line protocol (one JSON object per line):

    child -> parent (stdout)   {"event": {...}}      every train() event, in order: on_event in the parent
                               {"result": {...}}     the summary train() returned: the last line
                               {"error": "message"}  an EmbedLabError: re-raised in the parent, same text
                               {"crash": "Type: message"}  anything else (traceback in the child's stderr)
    parent -> child (stdin)    "stop"                should_stop() became true: the child stops within a step
                               end of file           the parent (the server) is gone: the child stops too and
                                                     marks the run `interrupted`, so no orphan trains on

The child's stderr is the server's (inherited, never a pipe: it cannot fill up and block), and the child
points its own file descriptor 1 at stderr so a stray print in a library cannot garble the protocol.

The child does not validate again: the parent's JobManager.submit already did (that is where a bad
setting is refused, before a run exists). It loads and splits the dataset itself, as train() would for
a Prepared config (`Prepared(cfg, *core.train.load_split(cfg, root))`), so the parent keeps no data for
the run. A stop the child does not obey within STOP_GRACE_S (a hung native call) ends it with SIGTERM,
then SIGKILL; the run is then recorded `cancelled` by JobManager as for any stopped run.

EMBEDLAB_TRAIN_IN=process (the app's default) or thread picks this or the in-thread `core.train.train`
(`train_fn_from_env`; pages/_ui.py). A child pays the Python + torch import (about 3-5 s on the 2-core
box) once per run; the dataset cache (core.datasets, on disk) is shared. The child trains with one
torch thread less than the cores (EMBEDLAB_TRAIN_THREADS overrides), so the server keeps a core.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import EmbedLabError, InvalidConfig

_logger = logging.getLogger(__name__)

TRAIN_IN_ENV = "EMBEDLAB_TRAIN_IN"  # process (default) | thread
TRAIN_IN = ("process", "thread")
THREADS_ENV = "EMBEDLAB_TRAIN_THREADS"  # torch threads of a training process (default: cores - 1, at least 1)
STOP_POLL_S = 0.1  # how often the parent reads should_stop() while the child trains
STOP_GRACE_S = 60.0  # how long a stopped child may take to end before it is terminated
_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds the `core` package


def train_in() -> str:
    """EMBEDLAB_TRAIN_IN: "process" (default) or "thread"; InvalidConfig for anything else."""
    raw = os.environ.get(TRAIN_IN_ENV, "").strip().lower() or "process"
    if raw not in TRAIN_IN:
        raise InvalidConfig(f"{TRAIN_IN_ENV}={raw!r}: give process (train each run in a child process) or thread")
    return raw


def train_fn_from_env() -> Callable[..., dict] | None:
    """The train function EMBEDLAB_TRAIN_IN asks for: this module's `train`, or None (JobManager's default,
    the in-thread core.train.train with its prepared split)."""
    return train if train_in() == "process" else None


# ------------------------------------------------------------------------------------- the parent
def train(cfg, *, store=None, run_id: str | None = None, root: Path | None = None,
          on_event: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] = lambda: False,
          resume: bool = False) -> dict:
    """core.train.train's contract, run in a child process; returns its summary dict.

    `cfg`: a resolved and validated TrainConfig, or a core.train.Prepared (its `.cfg` is used; its data
    is not sent). `run_id` must exist in the store at `root` (JobManager creates it in submit).
    Raises EmbedLabError with the child's message when the child raised one.
    """
    cfg = getattr(cfg, "cfg", cfg)
    root = Path(root or (store.root if store is not None else _home())).resolve()
    if run_id is None:
        from .store import RunStore

        run_id = (store or RunStore(root)).create_run(cfg.to_dict(), status="queued")
    job = {"config": cfg.to_dict(), "run_id": run_id, "root": str(root), "resume": bool(resume)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(_ROOT), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.Popen([sys.executable, "-m", "core.process_worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=None, env=env, text=True, bufsize=1)
    stopper = threading.Thread(target=_watch_stop, args=(proc, should_stop), daemon=True,
                               name=f"stop-{run_id}")
    last: dict | None = None
    try:
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.flush()
        stopper.start()
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                _logger.warning("run %s: unreadable line from the training process: %.200s", run_id, line)
                continue
            if "event" in msg:
                if on_event is not None:
                    on_event(msg["event"])
            else:
                last = msg
    finally:
        _close(proc.stdin)  # end of file: a child still training (this thread failed) stops too
        rc = _wait(proc)
        _close(proc.stdout)
    if last is not None and "result" in last:
        return last["result"]
    if last is not None and "error" in last:
        raise EmbedLabError(last["error"])
    if last is not None and "crash" in last:
        raise RuntimeError(last["crash"])
    raise EmbedLabError(f"the training process ended with exit code {rc} before reporting a result (see the server log)")


def _watch_stop(proc: subprocess.Popen, should_stop: Callable[[], bool]) -> None:
    """In the parent: tell the child to stop once should_stop() is true; terminate it if it does not obey."""
    while proc.poll() is None:
        if should_stop():
            try:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            except (OSError, ValueError):  # the child has just ended (or its pipe is closed)
                return
            deadline = time.monotonic() + STOP_GRACE_S
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(STOP_POLL_S)
            if proc.poll() is None:
                _logger.warning("training process %s did not stop within %.0f s; terminating it", proc.pid, STOP_GRACE_S)
                proc.terminate()
            return
        time.sleep(STOP_POLL_S)


def _wait(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:  # stdout closed but the process lingers: do not leave it behind
        proc.kill()
        return proc.wait()


def _close(f) -> None:
    try:
        f.close()
    except (OSError, ValueError):
        pass


def _home() -> Path:
    from .paths import home

    return home()


# -------------------------------------------------------------------------------------- the child
class _Channel:
    """The child's end: protocol lines to the parent's pipe; a stop flag set by "stop" or end of file."""

    def __init__(self, out):
        self.out = out
        self.stop = threading.Event()
        self.parent_gone = threading.Event()
        self._lock = threading.Lock()

    def send(self, msg: dict) -> None:
        if self.parent_gone.is_set():
            return
        line = json.dumps(msg, default=_plain) + "\n"
        try:
            with self._lock:
                self.out.write(line)
                self.out.flush()
        except (OSError, ValueError):  # the parent's end is closed: it is gone, stop training for it
            self.parent_gone.set()
            self.stop.set()

    def read_commands(self, stdin) -> None:
        for line in stdin:
            if line.strip() == "stop":
                self.stop.set()
        self.parent_gone.set()  # end of file: the parent closed its end or died
        self.stop.set()


def _plain(value: Any):
    """JSON for what events carry besides plain types: numpy scalars and arrays, paths."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _set_threads() -> None:
    """The child's torch intra-op threads: EMBEDLAB_TRAIN_THREADS=N, default one less than the cores (at least
    1), so the server keeps a core for its sessions. On the 2-core box (test_vit, BENCHMARKS.md) one thread
    trained as fast as two with no viewer (325 vs 322 steps/s) and 99 against 4 steps/s with 4 viewers: two
    threads wait on each other whenever the server takes one core. configure_threads is cached per process:
    called here first, train()'s own call then keeps this number."""
    import torch

    from .device import configure_threads

    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw and (not raw.isdigit() or int(raw) < 1):
        raise InvalidConfig(f"{THREADS_ENV}={raw!r}: give the training process's torch threads, a whole number of at least 1")
    cores = configure_threads(1)
    torch.set_num_threads(int(raw) if raw else max(1, cores - 1))


def main() -> int:
    """The child: read the job line, train, report; exit code 0 whenever a last line was written."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s [train %(process)d] %(message)s")
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's own copy of stdout
    os.dup2(2, 1)  # fd 1 -> stderr: stray prints land in the server's log, not in the protocol
    sys.stdout = sys.stderr
    channel = _Channel(out)
    line = sys.stdin.readline()
    try:
        job = json.loads(line)
    except ValueError:
        channel.send({"crash": f"the training process got no job (read {line[:80]!r})"})
        return 2
    threading.Thread(target=channel.read_commands, args=(sys.stdin,), daemon=True, name="commands").start()
    run_id = job["run_id"]
    try:
        from . import train as _train
        from .store import RunStore

        root = Path(job["root"])
        store = RunStore(root)
        _set_threads()
        cfg = _train.TrainConfig.from_dict(job["config"])
        # validated in the parent's submit: only the split is loaded here (what prepare() would keep)
        prepared = _train.Prepared(cfg, *_train.load_split(cfg, root))
        result = _train.train(prepared, store=store, run_id=run_id, root=root,
                              on_event=lambda e: channel.send({"event": e}), should_stop=channel.stop.is_set,
                              resume=bool(job.get("resume")))
        if channel.parent_gone.is_set() and result.get("status") == "cancelled":
            # not a user's cancel: the server stopped; on its restart the run offers a resume, as a thread's would
            store.set_status(run_id, "interrupted", error="the server stopped while it trained (the training process stopped with it)")
            result = {**result, "status": "interrupted"}
        channel.send({"result": result})
    except EmbedLabError as exc:
        channel.send({"error": str(exc)})
    except BaseException as exc:  # noqa: BLE001 - the parent must hear of every end
        _logger.exception("run %s: the training process crashed", run_id)
        channel.send({"crash": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
