"""core.process_worker: JobManager runs trained in a child process (the app's default, EMBEDLAB_TRAIN_IN)."""
import json
import os
import subprocess
import sys
import time

import pytest

from core import process_worker
from core.datasets import load_dataset
from core.errors import EmbedLabError, InvalidConfig
from core.jobs import JobManager
from core.store import RunStore
from core.train import TrainConfig

TINY = dict(backbone="test_vit", dataset="mnist5k", n_per_class=10, eval_per_class=5, batch_size=16)


@pytest.fixture
def store(home):
    return RunStore(home)


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_a_real_run_in_a_child_matches_the_thread_run_and_its_events_arrive(store):
    events = []
    m = JobManager(store, train_fn=process_worker.train)
    m._on_event, on_event = (lambda job, e: (events.append(e), on_event(job, e))), m._on_event
    thread = JobManager(store)
    try:
        run_id = m.submit(TrainConfig(objective="ce", steps=10, **TINY))
        assert m._jobs[run_id].prepared is None  # the parent keeps no data split for a child's run
        local_id = thread.submit(TrainConfig(objective="ce", steps=10, **TINY))
        assert m.wait(run_id, 120) and thread.wait(local_id, 120)
        p, q = m.progress(run_id), thread.progress(local_id)
        assert p["status"] == "finished", p["error"]
        assert set(p["summary"]) == set(q["summary"]) and p["summary"]["steps"] == 10
        assert p["step"] == 10 and p["loss"] and p["loss"][-1][0] == 10 and p["val_acc"]
        steps = [e for e in events if e["type"] == "step"]
        assert steps and all(isinstance(e["loss"], float) for e in steps)
        assert {"stage", "eval", "done"} <= {e["type"] for e in events}
        assert store.get(run_id).status == "finished" and store.get(run_id).summary["val_acc"] is not None
        assert store.get(run_id).owner != store.get(local_id).owner  # it ran in another process
    finally:
        m.shutdown(timeout=30)
        thread.shutdown(timeout=30)


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_cancel_stops_the_child_within_seconds(store):
    m = JobManager(store, train_fn=process_worker.train)
    try:
        run_id = m.submit(TrainConfig(objective="ce", steps=20_000, eval_every=10_000, snapshots=0, **TINY))
        deadline = time.time() + 90
        while m.progress(run_id)["step"] < 3 and time.time() < deadline:
            time.sleep(0.05)
        assert m.progress(run_id)["step"] >= 3
        t0 = time.time()
        assert m.cancel(run_id) and m.wait(run_id, 10)
        assert time.time() - t0 < 10
        p = m.progress(run_id)
        assert p["status"] == "cancelled" and store.get(run_id).status == "cancelled"
        assert p["step"] < 20_000
    finally:
        m.shutdown(timeout=30)


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_an_error_in_the_child_comes_back_with_its_message(store):
    cfg = TrainConfig(objective="ce", steps=5, **{**TINY, "dataset": "no-such-dataset"})
    with pytest.raises(EmbedLabError) as in_process:
        load_dataset(cfg.dataset, store.root)
    run_id = store.create_run(cfg.to_dict(), status="queued")
    with pytest.raises(EmbedLabError) as from_child:
        process_worker.train(cfg.resolved(), store=store, run_id=run_id, root=store.root)
    assert str(from_child.value) == str(in_process.value)


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_the_child_stops_when_the_parents_pipe_closes(store):
    """The server dies: its end of the pipe closes, the child stops within a step and marks the run interrupted."""
    cfg = TrainConfig(objective="ce", steps=20_000, eval_every=10_000, snapshots=0, **TINY).resolved()
    run_id = store.create_run(cfg.to_dict(), status="queued")
    env = {**os.environ, "PYTHONPATH": str(process_worker._ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "core.process_worker"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env, text=True)
    try:
        child.stdin.write(json.dumps({"config": cfg.to_dict(), "run_id": run_id, "root": str(store.root), "resume": False}) + "\n")
        child.stdin.flush()
        for line in child.stdout:
            if json.loads(line).get("event", {}).get("type") == "step":
                break
        child.stdin.close()  # what the parent's death does to the pipe
        assert child.wait(timeout=15) == 0
        run = store.get(run_id)
        assert run.status == "interrupted" and "server stopped" in run.error
        assert run.progress["step"] < 20_000
    finally:
        if child.poll() is None:
            child.kill()


def test_train_in_env(monkeypatch):
    monkeypatch.setenv(process_worker.TRAIN_IN_ENV, "thread")
    assert process_worker.train_fn_from_env() is None
    monkeypatch.delenv(process_worker.TRAIN_IN_ENV)
    assert process_worker.train_fn_from_env() is process_worker.train  # the default
    monkeypatch.setenv(process_worker.TRAIN_IN_ENV, "fork")
    with pytest.raises(InvalidConfig, match="EMBEDLAB_TRAIN_IN"):
        process_worker.train_in()
