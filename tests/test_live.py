"""core/live.py: one snapshot per run per server, read from the source at most once a second, whatever
the number of viewers; versions that change only with what a viewer sees; readers that never hold up the
training worker. pages/_live.py: curve figures built once per (run, version) set."""
import threading
import time

import pytest

from core import live
from core.errors import UnknownName
from core.jobs import JobManager
from core.store import RunStore
from core.train import TrainConfig


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Source:
    """A JobManager.progress stand-in that counts its reads (the work each poll used to do per session)."""

    def __init__(self):
        self.reads = 0
        self.step = 0
        self.eta = 10.0
        self.deleted = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, run_id):
        self.reads += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.deleted:
            raise UnknownName(f"no run {run_id!r}")
        return {"run_id": run_id, "status": "running", "step": self.step, "total": 100, "eta": self.eta,
                "elapsed": time.time(), "loss": [(s, 1.0 / s) for s in range(1, self.step + 1)], "val_acc": [],
                "config": {"objective": "ce", "backbone": "test_vit"}}


def _readers(n, fn):
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_one_read_per_second_whatever_the_number_of_readers():
    src, clock = Source(), Clock()
    board = live.LiveBoard(src, clock=clock)
    _readers(40, lambda: [board.snapshot("r1") for _ in range(25)])  # 40 sessions, 1,000 polls in all
    assert src.reads == 1
    clock.t += 0.6
    _readers(8, lambda: board.snapshot("r1"))
    assert src.reads == 1  # under a second old: every session gets the one snapshot
    clock.t += 0.5
    _readers(8, lambda: board.snapshot("r1"))
    assert src.reads == 2  # a second passed: the first reader refreshed it, the others shared that
    board.snapshot("r2")
    assert src.reads == 3  # each run has its own snapshot


def test_version_changes_with_what_a_viewer_sees_only():
    src, clock = Source(), Clock()
    board = live.LiveBoard(src, clock=clock)
    first = board.snapshot("r1")
    clock.t += 1
    src.eta = 9.0  # the clock-driven fields alone: nothing new to draw
    again = board.snapshot("r1")
    assert again is not first and again.version == first.version and again.eta == 9.0
    clock.t += 1
    src.step = 5
    moved = board.snapshot("r1")
    assert moved.version > first.version and moved.step == 5 and moved.loss[-1] == (5, 0.2)
    assert moved.progress["version"] == moved.version
    other = board.snapshot("r2")
    assert other.version not in (first.version, moved.version)  # (run, version) never repeats


def test_a_status_change_shows_at_once_through_peek():
    src, clock = Source(), Clock()
    status = {"r1": ("running", False, 0)}
    board = live.LiveBoard(src, peek=status.get, clock=clock)
    board.snapshot("r1")
    board.snapshot("r1")
    assert src.reads == 1
    status["r1"] = ("running", True, 0)  # a Cancel click: the card says "Stopping…" now, not a second later
    board.snapshot("r1")
    assert src.reads == 2


def test_a_deleted_run_is_missing_and_left_out():
    src, clock = Source(), Clock()
    board = live.LiveBoard(src, clock=clock)
    src.deleted = True
    assert board.snapshot("gone").missing
    src.deleted = False
    assert [s.run_id for s in board.snapshots(["gone", "here"])] == ["here"]  # "gone" stays missing until refreshed


def test_a_slow_read_holds_up_no_other_reader():
    """While one reader fetches (here: blocked in the source), every other reader gets the held snapshot
    at once, and the board's lock is free (another run's snapshot, an invalidate go through)."""
    src, clock = Source(), Clock()
    board = live.LiveBoard(src, clock=clock)
    held = board.snapshot("r1")
    clock.t += 2
    src.gate, src.entered = threading.Event(), threading.Event()
    slow = threading.Thread(target=board.snapshot, args=("r1",))
    slow.start()
    assert src.entered.wait(5)
    t0 = time.perf_counter()
    others = [board.snapshot("r1") for _ in range(100)]
    board.invalidate("r9")
    waited = time.perf_counter() - t0
    src.gate.set()
    slow.join(5)
    assert all(s is held for s in others) and waited < 1.0
    assert src.reads == 2


def test_thin_keeps_the_ends_and_the_shape():
    pts = [(i, float(i)) for i in range(1, 2001)]
    out = live.thin(pts, 400)
    assert len(out) == 400 and out[0] == (1, 1.0) and out[-1] == (2000, 2000.0)
    assert [p[0] for p in out] == sorted({p[0] for p in out})
    assert live.thin(pts[:10], 400) == tuple(pts[:10])


class StepTrain:
    """A fake train(): `steps` step events as fast as the worker can emit them, timing each hand-off."""

    def __init__(self, steps):
        self.steps, self.handoff = steps, []

    def __call__(self, cfg, *, store, run_id, root, on_event, should_stop, resume):
        store.set_status(run_id, "running")
        for step in range(1, self.steps + 1):
            t0 = time.perf_counter()
            on_event({"type": "step", "step": step, "total": self.steps, "loss": 1.0})
            self.handoff.append(time.perf_counter() - t0)
            if step % 200 == 0:
                time.sleep(0.01)  # the real loop spends its time in torch kernels, not in the hand-off
        store.set_status(run_id, "finished")
        return {"status": "finished"}


def test_many_viewers_cost_the_worker_one_copy_a_second(tmp_path):
    """16 sessions polling flat out while a run trains: the manager's progress (the copy under the lock the
    worker takes at every step) is read about once a second, not 16 x per poll, and every step is handed off."""
    fake = StepTrain(steps=4000)
    manager = JobManager(RunStore(tmp_path), train_fn=fake, validate_fn=lambda cfg, root: cfg)
    reads = []
    real = manager.progress
    board = live.LiveBoard(lambda r: reads.append(1) or real(r), peek=manager.peek)
    try:
        run_id = manager.submit(TrainConfig(objective="ce", backbone="test_vit", dataset="digits", steps=4000))
        stop = threading.Event()
        polls = []

        def viewer():
            while not stop.is_set():
                board.snapshot(run_id)
                polls.append(1)
                time.sleep(0.001)

        threads = [threading.Thread(target=viewer) for _ in range(16)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        assert manager.wait(run_id, 120)
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(5)
    finally:
        manager.shutdown(timeout=10)
    assert len(fake.handoff) == 4000
    # one read a second, plus one per status change the peek saw (queued -> running -> finished, the queue)
    assert len(reads) <= elapsed / live.REFRESH_S + 6, (len(reads), elapsed, len(polls))
    assert len(polls) > 10 * len(reads)
    assert board.snapshot(run_id).status == "finished"  # the end shows at once (peek), not a second late


def test_board_for_is_one_per_manager(tmp_path):
    manager = JobManager(RunStore(tmp_path), train_fn=lambda *a, **k: {}, validate_fn=lambda cfg, root: cfg)
    assert live.board_for(manager) is live.board_for(manager)
    other = JobManager(RunStore(tmp_path), train_fn=lambda *a, **k: {}, validate_fn=lambda cfg, root: cfg)
    assert live.board_for(other) is not live.board_for(manager)


def test_curve_figures_are_built_once_per_version():
    pytest.importorskip("streamlit")
    from pages import _live

    def snap(version, step):
        return {"run_id": "r1", "version": version, "loss": [(1, 2.0), (step, 1.0)], "val_acc": [(step, 0.5)],
                "config": {"objective": "ce", "backbone": "test_vit"}}

    _live._figures.clear()
    a = _live.curve_figures([snap(1, 5)])
    b = _live.curve_figures([snap(1, 5)])
    assert a[0] is b[0] and a[1] is b[1]  # a second session (or poll) gets the same figure objects
    c = _live.curve_figures([snap(2, 9)])
    assert c[0] is not a[0] and c[0].data[0].x[-1] == 9
    assert _live.curve_figures([])[0].layout.annotations[0].text.startswith("waiting")


def test_the_server_runs_no_full_gc_after_every_script_run():
    """Streamlit's post-run gc.collect(2) runs after every fragment run too: in a server holding torch and
    plotly it was most of the server's CPU per viewer (BENCHMARKS.md). The app's config turns it off, and
    Streamlit reads that option under this name."""
    import tomllib
    from pathlib import Path

    from streamlit import config as st_config

    settings = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    assert settings["runner"]["postScriptGC"] is False and settings["runner"]["magicEnabled"] is False
    assert isinstance(st_config.get_option("runner.postScriptGC"), bool)  # a real option of this Streamlit
