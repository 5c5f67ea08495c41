"""Many users at once: simultaneous Start presses, simultaneous submits against a freshly imported dataset,
20 real queued runs, and deleting a run while it trains."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import pages._ui as ui
from core.dataset_import import import_dataset
from core.jobs import JobManager
from core.store import RunStore
from core.train import TrainConfig

from .kit import TINY_RUN, InstantTrain, classes, make_zip

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def no_magic():
    """Each AppTest compiles the page again, and two compiling in parallel threads can hit CPython's
    ast.parse race (gh-106905: "AST constructor recursion depth mismatch"; the server itself compiles
    under one lock). Streamlit's magic is what calls ast.parse; the pages do not use it."""
    from streamlit import config as st_config

    before = st_config.get_option("runner.magicEnabled")
    st_config.set_option("runner.magicEnabled", False)
    yield
    st_config.set_option("runner.magicEnabled", before)


def test_two_browser_sessions_press_start_at_the_same_moment(home, monkeypatch, no_magic):
    store = RunStore(home)
    fake = InstantTrain()
    m = JobManager(store, train_fn=fake)
    monkeypatch.setattr(ui, "get_manager", lambda: m)
    monkeypatch.setattr(ui, "get_store", lambda: store)
    try:
        sessions = []
        for seed in (1, 2):
            at = AppTest.from_file(APP, default_timeout=90).run()
            at.selectbox(key="dataset").select("digits")
            at.selectbox(key="backbone").select("test_vit")
            at.multiselect(key="objectives").set_value(["ce", "lacvit"])
            at.number_input(key="seed").set_value(seed)
            sessions.append(at.run())
        barrier, errors = threading.Barrier(2), []

        def press(at):
            barrier.wait()
            try:
                at.button(key="start").click().run()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=press, args=(at,)) for at in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == [] and all(not at.exception and not at.error for at in sessions)
        batches = [at.session_state["train_batches"][0] for at in sessions]
        ids = [r for b in batches for r in b]
        assert len(ids) == len(set(ids)) == 4
        assert all(m.wait(r, 30) for r in ids)
        assert {r.id: (r.status, r.config["seed"]) for r in store.list()} == \
            {r: ("finished", seed) for seed, batch in zip((1, 2), batches) for r in batch}
    finally:
        m.shutdown(timeout=10)


def test_simultaneous_submits_on_a_fresh_import_lose_nothing(home, tmp_path):
    """Four sessions validate (and so first load) a just-imported dataset at the same moment."""
    import_dataset(make_zip(tmp_path / "pets.zip", classes({"cats": 12, "dogs": 12})), "pets", root=home)
    store = RunStore(home)
    m = JobManager(store, train_fn=InstantTrain())
    barrier, ids, errors, lock = threading.Barrier(4), [], [], threading.Lock()
    cfg = dict(TINY_RUN, dataset="pets", n_per_class=4, eval_per_class=2, batch_size=4)

    def session(k):
        barrier.wait()
        try:
            got = m.submit_many([TrainConfig(objective=o, steps=3, seed=k, **cfg) for o in ("ce", "lacvit")])
            with lock:
                ids.extend(got)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=session, args=(k,)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert len(ids) == len(set(ids)) == 8
        assert all(m.wait(r, 30) for r in ids)
        assert sorted(r.id for r in store.list(status=["finished"])) == sorted(ids)
        leftovers = [p.name for p in (home / "cache" / "datasets").iterdir() if ".tmp" in p.name]
        assert leftovers == []
    finally:
        m.shutdown(timeout=10)


def test_twenty_real_queued_runs_all_finish(real):
    store, _ = real
    m = JobManager(store, max_running=2)
    try:
        ids = m.submit_many([TrainConfig(objective="ce" if i % 2 else "lacvit", steps=3, seed=i, snapshots=2, **TINY_RUN)
                             for i in range(20)])
        assert all(m.wait(r, 300) for r in ids)
        records = [store.get(r) for r in ids]
        assert [(r.status, r.error, r.summary["steps"]) for r in records] == [("finished", None, 3)] * 20
        assert all(store.metrics(r)["val_acc"] for r in ids)  # each run logged its own evaluations
    finally:
        m.shutdown(timeout=30)


def test_deleting_a_running_run_cancels_it_first(real):
    store, _ = real
    m = JobManager(store)
    try:
        running = m.submit(TrainConfig(objective="ce", steps=5000, eval_every=10, **TINY_RUN))
        after = m.submit(TrainConfig(objective="ce", steps=3, seed=7, **TINY_RUN))
        deadline = time.monotonic() + 120
        while m.progress(running)["step"] < 3:
            assert time.monotonic() < deadline and m.status(running) in ("queued", "running")
            time.sleep(0.02)
        run_dir = store.run_dir(running)
        m.delete(running)  # returns once the run has stopped and its files are gone
        assert not store.exists(running) and not run_dir.exists()
        assert store.metrics(running) == {}
        assert m.wait(after, 120) and store.get(after).status == "finished"
        assert not run_dir.exists()  # nothing recreated it after the delete
    finally:
        m.shutdown(timeout=30)
