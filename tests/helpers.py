"""Small helpers shared by the core engine tests (no fixtures here; see conftest.py for those)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# Tiny, fast and reliable training settings: digits is 8x8 and loads in ~1 s, test_vit is 0.4M params.
TINY = dict(backbone="test_vit", dataset="digits", n_per_class=20, eval_per_class=10, batch_size=32, trainable="all")


@dataclass
class Recorded:
    """What one `train()` call returned and emitted."""

    result: dict
    events: list[dict] = field(default_factory=list)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def steps(self) -> list[dict]:
        return self.of("step")

    def losses(self, stage: str | None = None) -> list[float]:
        return [e["loss"] for e in self.steps if stage is None or e["stage"] == stage]


@contextlib.contextmanager
def one_torch_thread():
    """Run torch single-threaded (and keep `train` from raising it back to the core count).

    The models here are tiny, so a second intra-op thread buys little; but on a busy 2-core box
    OpenMP workers spin-wait for each other and a 3 s run can take 30 s of CPU. One thread keeps
    the suite's time close to its CPU cost however loaded the machine is.
    """
    import torch

    import core.train as train_mod

    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "configure_threads", lambda processes=1: 1)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def run_train(cfg, store, root, **kwargs) -> Recorded:
    """`core.train.train` with every event recorded."""
    from core.train import train

    events: list[dict] = []
    result = train(cfg, store=store, root=root, on_event=events.append, **kwargs)
    return Recorded(result, events)


def first_last_mean(values: list[float], k: int = 5) -> tuple[float, float]:
    assert len(values) >= 2 * k, f"need at least {2 * k} logged losses, got {len(values)}"
    return float(np.mean(values[:k])), float(np.mean(values[-k:]))


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    # PASSIVE: idle OpenMP workers sleep instead of spinning, which matters when CLI runs share 2 cores
    env.update(EMBEDLAB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false", OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def start_cli(*args: str, runs_dir: Path) -> subprocess.Popen:
    """`python -m core ARGS --runs-dir RUNS_DIR`, started (not waited for)."""
    return subprocess.Popen([sys.executable, "-m", "core", *args, "--runs-dir", str(runs_dir)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@dataclass
class Done:
    rc: int
    stdout: str
    stderr: str

    def last_json(self):
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        assert lines, f"no stdout; stderr:\n{self.stderr}"
        return json.loads(lines[-1])


def finish(proc: subprocess.Popen, timeout: float = 240) -> Done:
    out, err = proc.communicate(timeout=timeout)
    return Done(proc.returncode, out, err)


@contextlib.contextmanager
def app_manager(home, monkeypatch, train_fn):
    """The app's process-wide store and JobManager swapped for ones on `home` with a fake `train_fn`."""
    import pages._ui as ui
    from core.jobs import JobManager
    from core.store import RunStore

    store = RunStore(home)
    manager = JobManager(store, train_fn=train_fn)
    monkeypatch.setattr(ui, "get_manager", lambda: manager)
    monkeypatch.setattr(ui, "get_store", lambda: store)
    try:
        yield manager
    finally:
        manager.shutdown(timeout=10)
