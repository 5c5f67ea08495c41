"""Training faults with real tiny runs (test_vit on digits): divergence, out of memory, crashes, cancel
mid-step, a SIGKILLed training process, unsafe checkpoint files, and the per-run disk budget."""
from __future__ import annotations

import errno
import os
import pickle
import signal
import sqlite3
import threading
import time

import pytest
import torch
from safetensors import safe_open

import core.artifacts as artifacts
import core.train as train_mod
from core.jobs import JobManager
from core.store import RunStore
from core.train import CHECKPOINT, TRAINER_STATE, TrainConfig, train

from helpers import finish, start_cli

from .kit import OOM_ADVICE, TINY_RUN, InstantTrain


# torch warns about the pickle protocol of the hostile files before refusing them
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")

def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"objective": "ce", "steps": 6, **TINY_RUN, **kw})


def _ckpt_step(run_dir) -> int:
    with safe_open(str(run_dir / CHECKPOINT), framework="pt") as f:
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys())
        return int(f.metadata()["step"])


class _Env:
    """Sets EMBEDLAB_FAULT per job (by seed) around a real train() call in the worker thread."""

    def __init__(self, faults: dict[int, str]):
        self.faults = faults

    def __call__(self, cfg, **kw):
        spec = self.faults.get(cfg.seed)
        if spec:
            os.environ["EMBEDLAB_FAULT"] = spec
        try:
            return train(cfg, **kw)
        finally:
            os.environ.pop("EMBEDLAB_FAULT", None)


# -------------------------------------------------------------------------------- divergence
def test_inf_loss_fails_with_the_step_and_keeps_the_last_good_checkpoint(real, monkeypatch):
    store, root = real
    monkeypatch.setenv("EMBEDLAB_FAULT", "inf:5")
    r = train(_cfg(steps=20, eval_every=2), store=store, root=root)
    assert r["status"] == "failed"
    assert r["error"] == "diverged at step 5: the loss became inf; lower the learning rate (the last good checkpoint is kept)"
    rec = store.get(r["run_id"])
    assert (rec.status, rec.error) == ("failed", r["error"])
    assert _ckpt_step(store.run_dir(r["run_id"])) == 4  # the step-4 checkpoint, finite, untouched by step 5
    assert max(s for s, _ in store.metrics(r["run_id"], ["loss"])["loss"]) == 4


# ------------------------------------------------------------------------- OOM, crashes, worker
def test_out_of_memory_fails_with_advice_and_the_worker_goes_on(real):
    store, _ = real
    m = JobManager(store, train_fn=_Env({1: "oom:2", 2: "cuda_oom:3", 3: "raise:2"}))
    try:
        ids = m.submit_many([_cfg(seed=s) for s in (1, 2, 3, 4)])
        assert all(m.wait(r, 120) for r in ids)
        got = [(store.get(r).status, store.get(r).error) for r in ids]
        assert got == [("failed", OOM_ADVICE), ("failed", OOM_ADVICE), ("failed", "RuntimeError: simulated crash (raise)"),
                       ("finished", None)]
        assert store.get(ids[3]).summary["steps"] == 6 and "warnings" not in store.get(ids[3]).summary
        assert all(w.is_alive() for w in m._workers)  # the same worker thread ran all four
        late = m.submit(_cfg(seed=5))  # and still takes new work
        assert m.wait(late, 60) and store.get(late).status == "finished"
    finally:
        m.shutdown(timeout=30)


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_job_raising_a_base_exception_never_stops_the_server(home, exc):
    store = RunStore(home)
    fine = InstantTrain()

    def train_fn(cfg, **kw):
        if cfg.seed == 0:
            kw["store"].set_status(kw["run_id"], "running")
            raise exc
        return fine(cfg, **kw)

    m = JobManager(store, train_fn=train_fn, validate_fn=lambda cfg, root: cfg)
    try:
        bad, good = m.submit(_cfg(seed=0)), m.submit(_cfg(seed=1))
        assert m.wait(bad, 30) and m.wait(good, 30)
        assert store.get(bad).status == "failed" and store.get(bad).error.startswith(type(exc).__name__)
        assert store.get(good).status == "finished"
        assert threading.main_thread().is_alive() and all(w.is_alive() for w in m._workers)
    finally:
        m.shutdown(timeout=10)


def test_cancel_mid_step_ends_the_run_within_that_step(real, monkeypatch):
    store, _ = real
    m = JobManager(store)
    calls, box = [], {}
    real_batch = train_mod._batch

    def batch(*a, **kw):  # runs inside each training step: cancel while step 7 is in flight
        calls.append(1)
        if len(calls) == 7:
            assert m.cancel(box["id"])
        return real_batch(*a, **kw)

    monkeypatch.setattr(train_mod, "_batch", batch)
    try:
        box["id"] = run_id = m.submit(_cfg(steps=100, eval_every=3, snapshots=2))  # evals at 0, 3, 6 only
        assert m.wait(run_id, 120)
    finally:
        m.shutdown(timeout=30)
    rec = store.get(run_id)
    assert (rec.status, rec.error) == ("cancelled", "cancelled by the user")
    metrics = store.metrics(run_id)
    assert [s for s, _ in metrics["loss"]] == list(range(1, 8))  # step 7 finished and was logged, no step 8
    assert [s for s, _ in metrics["val_acc"]] == [0, 3, 6]
    assert _ckpt_step(store.run_dir(run_id)) == 7 and len(calls) == 7  # checkpointed at the cancel: resume loses nothing


# ---------------------------------------------------------------------------- SIGKILL mid-run
def _start_cli_run(root, steps: int):
    """A real training process (`python -m core train`, tiny CE run, evaluated and checkpointed every 5 steps)."""
    return start_cli("train", "--backbone", "test_vit", "--dataset", "digits", "--objective", "ce", "--steps", str(steps),
                     "--eval-every", "5", "--n-per-class", "10", "--eval-per-class", "4", "--batch-size", "8",
                     "--trainable", "all", "--quiet", runs_dir=root)


def _await(proc, probe, what: str, timeout_s: float = 180, poll_s: float = 0.05):
    """Poll `probe()` until it returns something while `proc` trains; fail if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while (found := probe()) is None:
        assert proc.poll() is None, finish(proc).stderr
        assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s"
        time.sleep(poll_s)
    return found


@pytest.mark.slow
def test_sigkilled_training_process_is_interrupted_then_resumes_from_its_checkpoint(tmp_path, real):
    root = tmp_path / "server"
    proc = _start_cli_run(root, steps=400)
    ckpt = _await(proc, lambda: next(iter(root.glob("runs/*/" + CHECKPOINT)), None), "no checkpoint", poll_s=0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    finish(proc)  # close the pipes
    run_dir, run_id = ckpt.parent, ckpt.parent.name

    assert RunStore(root).get(run_id).status == "running"  # nobody has looked yet
    store = RunStore(root, recover=True)  # what the app / CLI does at start
    rec = store.get(run_id)
    assert rec.status == "interrupted"
    saved = _ckpt_step(run_dir)  # complete and finite, whatever the kill interrupted
    assert rec.error == f"the process running it stopped (server restart or crash); resume continues from step {saved}"
    assert saved % 5 == 0 and 5 <= saved < 400
    # checkpoint first, then trainer state: a kill between the two leaves the trainer state missing or one eval older
    trainer_step = torch.load(run_dir / TRAINER_STATE, weights_only=True)["step"] if (run_dir / TRAINER_STATE).exists() else None
    assert trainer_step in (saved, saved - 5, None)
    val_steps = [s for s, _ in store.metrics(run_id, ["val_acc"])["val_acc"]]
    assert val_steps == list(range(0, val_steps[-1] + 1, 5)) and saved <= val_steps[-1] <= saved + 5
    with sqlite3.connect(root / "runs.db") as db:
        last_rowid = db.execute("SELECT MAX(rowid) FROM metrics WHERE run_id=?", (run_id,)).fetchone()[0]

    events = []

    def recording(cfg, **kw):
        inner = kw["on_event"]
        kw["on_event"] = lambda e: (events.append(e), inner(e))
        return train(cfg, **kw)

    m = JobManager(store, train_fn=recording)
    try:
        assert m.resume(run_id) == run_id
        assert m.wait(run_id, 300)
    finally:
        m.shutdown(timeout=30)
    rec = store.get(run_id)
    assert (rec.status, rec.error) == ("finished", None) and rec.summary["steps"] == 400
    assert rec.summary.get("warnings", []) == ([] if trainer_step == saved else [FRESH_OPTIMIZER.format(saved)])
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert saved < steps[0] <= saved + 4 and steps[-1] == 400  # continued from the checkpoint, not from 0
    assert _ckpt_step(run_dir) == 400
    with sqlite3.connect(root / "runs.db") as db:
        new = db.execute("SELECT MIN(step) FROM metrics WHERE run_id=? AND rowid>?", (run_id, last_rowid)).fetchone()[0]
        old = db.execute("SELECT COUNT(*) FROM metrics WHERE run_id=? AND rowid<=?", (run_id, last_rowid)).fetchone()[0]
    assert new == saved and old >= len(val_steps)  # the metrics from before the kill are all still there


# ------------------------------------------------------------------ cancel from another process
@pytest.mark.slow  # 24 s
def test_a_cli_run_is_cancelled_from_another_process_and_resumes(tmp_path, real):
    """The Runs page of a server (or `python -m core cancel`) stops a run that a CLI process trains."""
    root = tmp_path / "home"
    proc = _start_cli_run(root, steps=2000)

    def past_step_10():
        runs = RunStore(root).list(status=["running"]) if (root / "runs.db").exists() else []
        return runs[0].id if runs and runs[0].progress.get("step", 0) >= 10 else None

    run_id = _await(proc, past_step_10, "the run never reached step 10")
    asked = finish(start_cli("cancel", run_id, runs_dir=root))  # another process: the store is all they share
    assert asked.rc == 0 and asked.last_json() == {"run_id": run_id, "cancel_requested": True}
    asked_at = time.monotonic()
    done = finish(proc, timeout=60)
    assert done.rc == 1 and time.monotonic() - asked_at < 15  # a poll a second, then one step; not finished: 1
    assert (done.last_json()["status"], done.last_json()["error"]) == ("cancelled", "cancelled by the user")
    store = RunStore(root)
    rec = store.get(run_id)
    assert (rec.status, rec.error) == ("cancelled", "cancelled by the user")
    assert not store.cancel_requested(run_id)  # served: it must not stop the resume below
    saved = _ckpt_step(store.run_dir(run_id))
    assert 10 <= saved < 2000
    again = finish(start_cli("cancel", run_id, runs_dir=root))
    assert (again.rc, again.stderr.strip()) == (2, f"error: run {run_id} is cancelled, not queued or running: nothing to cancel")
    events = []
    resumed = train(TrainConfig.from_dict(rec.config), store=store, root=root, run_id=run_id, resume=True,
                    on_event=events.append, should_stop=lambda: len(events) > 40)  # resumes, then stops again here
    assert resumed["status"] == "cancelled"
    first = next(e["step"] for e in events if e["type"] == "step")  # one step event per 10 steps (2000 // 200 points)
    assert saved < first <= saved + 10  # continued from its checkpoint, not from 0


FRESH_OPTIMIZER = ("resumed from step {} with a fresh optimizer state: the run stopped while writing its checkpoint "
                   "(trainer_state.pt missing or from another step)")


@pytest.mark.parametrize("damage", ["missing", "stale"])
def test_a_kill_between_the_two_checkpoint_files_still_resumes(real, damage):
    """The checkpoint (weights) is written first, the trainer state (optimizer) second."""
    store, root = real
    stop_after = []
    first = train(_cfg(steps=12, eval_every=4), store=store, root=root,
                  on_event=lambda e: stop_after.append(e) if e["type"] == "step" else None,
                  should_stop=lambda: len(stop_after) >= 7)
    run_id, run_dir = first["run_id"], store.run_dir(first["run_id"])
    assert first["status"] == "cancelled" and _ckpt_step(run_dir) == 7  # checkpoints at evals 4, 8 (snapshots write none); the cancel 7
    if damage == "missing":
        (run_dir / TRAINER_STATE).unlink()
    else:
        state = torch.load(run_dir / TRAINER_STATE, weights_only=True)
        torch.save({**state, "step": 6}, run_dir / TRAINER_STATE)  # the previous checkpoint's
    events = []
    r = train(_cfg(steps=12, eval_every=4), store=store, root=root, run_id=run_id, resume=True, on_event=events.append)
    assert (r["status"], r["steps"]) == ("finished", 12)
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(8, 13))
    assert r["warnings"] == [FRESH_OPTIMIZER.format(7)] == store.get(run_id).summary["warnings"]


# ---------------------------------------------------------------------- unsafe files on resume
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("victim", [TRAINER_STATE, CHECKPOINT])
def test_a_malicious_checkpoint_file_is_refused_on_resume_and_never_runs(real, tmp_path, victim):
    store, root = real
    first = train(_cfg(steps=4), store=store, root=root, should_stop=lambda: False)
    run_id = first["run_id"]
    store.set_status(run_id, "interrupted")
    marker = tmp_path / "pwned"
    (store.run_dir(run_id) / victim).write_bytes(pickle.dumps({"optimizer": _Payload(marker), "step": 4, "stage": 0}))
    r = train(_cfg(steps=4), store=store, root=root, run_id=run_id, resume=True)
    assert r["status"] == "failed" and not marker.exists()
    if victim == TRAINER_STATE:
        assert r["error"].startswith(f"cannot resume: {TRAINER_STATE} in {run_id} is unreadable or unsafe (")
    else:
        assert r["error"].startswith("SafetensorError: ")  # not a safetensors file: never unpickled
    assert store.get(run_id).status == "failed"


# ------------------------------------------------------------------------------ disk budget
def test_disk_budget_skips_snapshots_and_embeddings_with_warnings(real, monkeypatch):
    store, root = real
    monkeypatch.setenv("EMBEDLAB_RUN_DISK_MB", "1")  # the first checkpoint alone (~4 MB) passes it
    r = train(_cfg(steps=6, snapshots=5), store=store, root=root)  # snapshots at steps 0, 2, 3, 4, 6
    assert r["status"] == "finished" and r["error"] is None
    budget = "the run folder would pass its disk budget of 1 MB (EMBEDLAB_RUN_DISK_MB)"
    expected = [f"skipped the val snapshot at step {s}: {budget}" for s in (2, 3, 4, 6)] + \
               [f"skipped the after {split} embeddings: {budget}" for split in ("val", "test", "ood")]
    assert r["warnings"] == expected and store.get(r["run_id"]).summary["warnings"] == expected
    run_dir = store.run_dir(r["run_id"])
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["step-000000"]  # written before the checkpoint
    assert sorted(p.name for p in (run_dir / "embeddings").iterdir()) == ["before-ood", "before-test", "before-val"]
    assert _ckpt_step(run_dir) == 6  # checkpoints are never skipped: resume needs them


def test_a_full_disk_while_saving_a_snapshot_is_a_warning_not_a_crash(real, monkeypatch):
    store, root = real
    real_save = artifacts.save_embeddings

    def full_disk(folder, es):
        if folder.parent.name == "snapshots":  # a partial write, then ENOSPC
            tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
            tmp.mkdir(parents=True)
            (tmp / "ids.npy").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(folder, es)

    monkeypatch.setattr(artifacts, "save_embeddings", full_disk)
    r = train(_cfg(steps=6, snapshots=5), store=store, root=root)  # snapshots at steps 0, 2, 3, 4, 6
    assert r["status"] == "finished"
    assert r["warnings"] == [f"skipped the val snapshot at step {s}: No space left on device" for s in (0, 2, 3, 4, 6)]
    run_dir = store.run_dir(r["run_id"])
    assert list((run_dir / "snapshots").iterdir()) == []  # no half-written snapshot left behind
    assert sorted(p.name for p in (run_dir / "embeddings").iterdir()) == ["after-ood", "after-test", "after-val", "before-ood", "before-test", "before-val"]


def test_divergence_before_the_first_checkpoint_does_not_claim_one_is_kept(real, monkeypatch):
    store, root = real
    monkeypatch.setenv("EMBEDLAB_FAULT", "nan:1")
    r = train(_cfg(steps=20, eval_every=5), store=store, root=root)
    assert r["status"] == "failed"
    assert r["error"] == ("diverged at step 1: the loss became nan; lower the learning rate (it diverged before its first "
                          "checkpoint, so there is none to resume from)")
    assert not (store.run_dir(r["run_id"]) / CHECKPOINT).exists()
