"""JobManager: the FIFO queue, the worker thread, cancel / resume / delete, and one real tiny run."""
import json
import threading
import time

import pytest

from core import workshop
from core.errors import EmbedLabError, InvalidConfig, NoCheckpoint, NotAllowed, QueueFull
from core.jobs import JobManager, default_workers, fair_order, queue_cap
from core.store import RunStore
from core.train import CHECKPOINT, TrainConfig

TINY = dict(backbone="test_vit", dataset="mnist5k", n_per_class=10, eval_per_class=5, batch_size=16)  # seconds on a CPU


class FakeTrain:
    """Stands in for core.train.train: a few 'steps', records what ran when, and can block or crash."""

    def __init__(self, steps=None, delay=0.0, crash=(), gate: threading.Event | None = None):
        self.steps, self.delay, self.crash, self.gate = steps, delay, set(crash), gate  # steps None: cfg.steps
        self.started: list[str] = []  # run ids, in start order
        self.resumed: dict[str, bool] = {}
        self.devices: dict[str, str] = {}  # run id -> the device its config asked for
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()
        self.first_step = threading.Event()

    def __call__(self, cfg, *, store, run_id, root, on_event, should_stop, resume):
        with self.lock:
            self.started.append(run_id)
            self.resumed[run_id] = resume
            self.devices[run_id] = cfg.device
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            store.set_status(run_id, "running")
            if cfg.objective in self.crash or cfg.seed in self.crash:
                raise RuntimeError("boom")
            total = self.steps or cfg.steps
            for step in range(1, total + 1):
                if should_stop():
                    store.set_status(run_id, "cancelled", error="cancelled by the user")
                    return {"run_id": run_id, "status": "cancelled", "error": "cancelled by the user"}
                on_event({"type": "step", "step": step, "total": total, "stage": "ce", "loss": 1.0 / step})
                self.first_step.set()
                if self.gate is not None:
                    self.gate.wait(10)
                time.sleep(self.delay)
            on_event({"type": "eval", "step": total, "val_acc": 0.5})
            store.set_status(run_id, "finished")
            return {"run_id": run_id, "status": "finished", "error": None, "val_acc": 0.5}
        finally:
            with self.lock:
                self.running -= 1


def _accept(cfg, root):
    return cfg


@pytest.fixture
def store(home):
    return RunStore(home)


@pytest.fixture
def make_manager(store):
    managers = []

    def make(train_fn, **kw):
        kw.setdefault("validate_fn", _accept)
        m = JobManager(store, train_fn=train_fn, **kw)
        managers.append(m)
        return m

    yield make
    for m in managers:
        m.shutdown(timeout=10)


def _write_checkpoint(path, step):
    """A safetensors file with no tensors and the step train() records in its metadata."""
    header = json.dumps({"__metadata__": {"step": str(step), "stage": "0"}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)


ALICE = workshop.Identity(workshop.new_owner_id(), "Alice")
BOB = workshop.Identity(workshop.new_owner_id(), "Bob")
INES = workshop.Identity(workshop.new_owner_id(), "Ines", instructor=True)


@pytest.fixture
def room(monkeypatch):
    """Workshop mode on, the cap at its default."""
    monkeypatch.setenv(workshop.WORKSHOP_ENV, "1")
    monkeypatch.delenv("EMBEDLAB_QUEUE_CAP", raising=False)


def _cfg(i=0, **kw):
    return TrainConfig(**{**TINY, "seed": i, **kw})


def _wait_all(m, ids, timeout=30):
    for run_id in ids:
        assert m.wait(run_id, timeout), f"{run_id} did not finish"


def test_fifo_one_at_a_time(make_manager, store):
    fake = FakeTrain(steps=3, delay=0.01)
    m = make_manager(fake)
    ids = [m.submit(_cfg(i)) for i in range(5)]
    _wait_all(m, ids)
    assert fake.started == ids
    assert fake.max_running == 1
    assert [store.get(r).status for r in ids] == ["finished"] * 5


def test_submit_creates_queued_run_immediately(make_manager, store):
    gate = threading.Event()
    fake = FakeTrain(steps=3, gate=gate)
    m = make_manager(fake)
    first = m.submit(_cfg(0))
    assert fake.first_step.wait(5)
    second = m.submit(_cfg(1))
    assert store.get(second).status == "queued"  # every session sees it right away
    assert m.queue_position(second) == 1 and m.queue_position(first) is None
    p = m.progress(second)
    assert p["status"] == "queued" and p["queue_position"] == 1
    running = m.progress(first)
    assert running["status"] == "running" and running["step"] == 1 and running["loss"] == [(1, 1.0)]
    gate.set()
    _wait_all(m, [first, second])


def test_max_running_is_configurable(make_manager):
    fake = FakeTrain(delay=0.05, steps=4)
    m = make_manager(fake, max_running=2)
    ids = [m.submit(_cfg(i)) for i in range(4)]
    _wait_all(m, ids)
    assert fake.max_running == 2


def test_cancel_queued_never_starts(make_manager, store):
    gate = threading.Event()
    fake = FakeTrain(steps=3, gate=gate)
    m = make_manager(fake)
    first, second, third = (m.submit(_cfg(i)) for i in range(3))
    assert fake.first_step.wait(5)
    assert m.cancel(second)
    assert store.get(second).status == "cancelled"
    assert m.queue_position(third) == 1
    gate.set()
    _wait_all(m, [first, third])
    assert second not in fake.started
    assert fake.started == [first, third]
    assert not m.cancel(second)  # already over


def test_cancel_running_stops_within_a_step(make_manager, store):
    fake = FakeTrain(delay=0.01)
    m = make_manager(fake)
    run_id = m.submit(_cfg(steps=1000))
    follow = m.submit(_cfg(1, steps=3))
    assert fake.first_step.wait(5)
    t0 = time.time()
    assert m.cancel(run_id)
    assert m.wait(run_id, 5)
    assert time.time() - t0 < 1.0
    assert store.get(run_id).status == "cancelled"
    assert m.wait(follow, 30) and store.get(follow).status == "finished"


def test_crashing_job_fails_and_the_queue_goes_on(make_manager, store):
    fake = FakeTrain(steps=3, crash={0})  # seed 0 raises
    m = make_manager(fake)
    bad, good = m.submit(_cfg(0)), m.submit(_cfg(1))
    _wait_all(m, [bad, good])
    assert store.get(bad).status == "failed"
    assert "boom" in store.get(bad).error
    assert m.progress(bad)["error"] == "RuntimeError: boom"
    assert store.get(good).status == "finished"


def test_twenty_queued_jobs_all_finish(make_manager, store):
    fake = FakeTrain(steps=2)
    m = make_manager(fake)
    ids = [m.submit(_cfg(i)) for i in range(20)]
    _wait_all(m, ids, timeout=60)
    assert fake.started == ids
    assert all(store.get(r).status == "finished" for r in ids)


def test_concurrent_submits_from_eight_threads(make_manager, store):
    gate = threading.Event()
    fake = FakeTrain(gate=gate, steps=1)
    m = make_manager(fake)
    ids, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def submit(t):
        barrier.wait()
        try:
            for i in range(3):
                run_id = m.submit(_cfg(100 * t + i))
                with lock:
                    ids.append(run_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(ids) == len(set(ids)) == 24
    assert {r.id for r in store.list()} == set(ids)  # every submit reached the store
    waiting = m.queued()
    assert len(waiting) + len(m.running()) == 24
    assert sorted(m.queue_position(r) for r in waiting) == list(range(1, len(waiting) + 1))
    gate.set()
    _wait_all(m, ids, timeout=60)
    assert sorted(fake.started) == sorted(ids) and fake.max_running == 1


def test_invalid_config_queues_nothing(store):
    m = JobManager(store, train_fn=FakeTrain())  # the real validate
    with pytest.raises(InvalidConfig, match="learning rate"):
        m.submit(_cfg(lr=-1.0))
    with pytest.raises(EmbedLabError, match="CLIP-style"):
        m.submit_many([_cfg(objective="ce"), _cfg(objective="flyp")])  # test_vit has no text tower
    assert store.list() == [] and m.queued() == []


def test_resume_requeues_with_or_without_checkpoint(make_manager, store):
    fake = FakeTrain(steps=3)
    m = make_manager(fake)
    with_ckpt = store.create_run(_cfg(0).to_dict(), status="queued")
    store.set_status(with_ckpt, "interrupted", error="server stopped")
    _write_checkpoint(store.run_dir(with_ckpt) / CHECKPOINT, step=7)
    without = store.create_run(_cfg(1).to_dict(), status="queued")
    store.set_status(without, "failed", error="boom")
    done = store.create_run(_cfg(2).to_dict(), status="queued")
    store.set_status(done, "finished")
    assert m.resume_point(with_ckpt) == 7 and m.resume_point(without) is None
    assert m.resume(with_ckpt) == with_ckpt
    with pytest.raises(NoCheckpoint, match="no checkpoint: resume starts over from step 0"):
        m.resume(without)  # never a silent restart
    assert store.get(without).status == "failed" and without not in m.queued()
    m.resume(without, restart_ok=True)
    with pytest.raises(InvalidConfig, match="only interrupted"):
        m.resume(done)
    _wait_all(m, [with_ckpt, without])
    assert fake.resumed == {with_ckpt: True, without: False}  # no checkpoint: start again from step 0
    assert store.get(with_ckpt).status == "finished"


def test_delete_cancels_running_then_deletes(make_manager, store):
    fake = FakeTrain(delay=0.01)
    m = make_manager(fake)
    run_id = m.submit(_cfg(steps=1000))
    queued, last = m.submit(_cfg(1, steps=2)), m.submit(_cfg(2, steps=2))
    assert fake.first_step.wait(5)
    m.delete(queued)  # a queued run is cancelled (it never starts) and deleted
    assert not store.exists(queued)
    run_dir = store.run_dir(run_id)
    m.delete(run_id)  # the running one is stopped first, then deleted
    assert not store.exists(run_id) and not run_dir.exists()
    assert m.wait(last, 30) and store.get(last).status == "finished"
    assert fake.started == [run_id, last]


def test_delete_refuses_a_run_of_another_live_process(make_manager, store):
    m = make_manager(FakeTrain())
    run_id = store.create_run(_cfg().to_dict(), status="queued")  # owned by this (live) process, not by m
    with pytest.raises(EmbedLabError, match="another process"):
        m.delete(run_id)
    assert store.exists(run_id)


def test_request_cancel_reaches_runs_of_other_processes_through_the_store(make_manager, store):
    gate = threading.Event()
    fake = FakeTrain(steps=50, gate=gate)
    m = make_manager(fake)
    own = m.submit(_cfg())
    assert fake.first_step.wait(5)
    assert m.request_cancel(own) and not store.cancel_requested(own)  # its own run: the in-process flag
    gate.set()
    assert m.wait(own, 10) and store.get(own).status == "cancelled"
    other = store.create_run(_cfg().to_dict(), status="running")  # a live process that is not m (a CLI, say)
    assert m.progress(other)["stopping"] is False
    assert m.request_cancel(other) and store.cancel_requested(other)
    assert m.progress(other)["stopping"] is True and store.get(other).status == "running"  # until it polls
    assert not m.request_cancel(own)  # already ended


@pytest.mark.slow  # 4.0 s
def test_real_tiny_run_then_cancel_and_resume(store):
    """core.train.train for real: test_vit on mnist5k, ~10 steps, then a cancelled run resumed from its checkpoint."""
    m = JobManager(store)
    try:
        run_id = m.submit(TrainConfig(objective="ce", steps=10, **TINY))
        assert m.wait(run_id, 120)
        p = m.progress(run_id)
        assert p["status"] == "finished", p["error"]
        assert p["step"] == 10 and p["loss"][-1][0] == 10 and p["val_acc"]  # step logs are throttled to 4/s
        assert p["summary"]["val_acc"] is not None and store.get(run_id).summary["steps"] == 10

        # long enough that the cancel below lands mid-run even though tiny steps take milliseconds
        long_id = m.submit(TrainConfig(objective="ce", steps=300, eval_every=2, **TINY))
        deadline = time.time() + 60
        while m.progress(long_id)["step"] < 4 and time.time() < deadline:
            time.sleep(0.05)
        assert m.cancel(long_id) and m.wait(long_id, 30)
        assert store.get(long_id).status == "cancelled"
        stopped_at = m.progress(long_id)["step"]
        assert stopped_at < 300 and (store.run_dir(long_id) / CHECKPOINT).exists()
        assert stopped_at <= m.resume_point(long_id) < 300  # read from the real checkpoint's header

        m.resume(long_id)  # the same run id continues
        assert m.wait(long_id, 120)
        resumed = m.progress(long_id)
        assert resumed["status"] == "finished", resumed["error"]
        assert resumed["loss"][0][0] > 2  # continued from the checkpoint, not from step 1
        assert store.get(long_id).summary["steps"] == 300
    finally:
        m.shutdown(timeout=30)


# --- workshop mode: the fair queue, the cap, wait estimates, who may manage a run ----------------------
def test_fair_order_is_round_robin_by_owner():
    waiting = [("a1", "alice"), ("a2", "alice"), ("a3", "alice"), ("b1", "bob"), ("b2", "bob"), ("c1", "carol")]
    # alice started a run just now (mark 5); bob and carol never have: they go first, in submission order
    assert fair_order(waiting, {"alice": 5}) == ["b1", "c1", "a1", "b2", "a2", "a3"]
    # carol's last start is older than alice's: she waited longest since her last start, so she goes first
    assert fair_order(waiting, {"alice": 5, "bob": 6, "carol": 2}) == ["c1", "a1", "b1", "a2", "b2", "a3"]
    assert fair_order([("x", "local"), ("y", "local"), ("z", "local")], {"local": 9}) == ["x", "y", "z"]  # one owner: FIFO
    assert fair_order(waiting, {}, limit=2) == ["a1", "b1"]
    assert fair_order([], {}) == []


def test_fair_queue_interleaves_people(make_manager, store, room, monkeypatch):
    """alice queues five, bob two after her: they start alice, bob, alice, bob, alice, alice, alice."""
    monkeypatch.setenv("EMBEDLAB_QUEUE_CAP", "0")  # no cap here: the order is the point
    gate = threading.Event()
    fake = FakeTrain(steps=1, gate=gate)
    m = make_manager(fake)
    a = m.submit_many([_cfg(i) for i in range(5)], owner=ALICE)
    assert fake.first_step.wait(5)  # a0 is training
    b = m.submit_many([_cfg(10 + i) for i in range(2)], owner=BOB)
    expected = [a[0], b[0], a[1], b[1], a[2], a[3], a[4]]
    assert m.queued() == expected[1:]  # the order they will start in, not the order they came in
    assert [m.queue_position(r) for r in expected[1:]] == [1, 2, 3, 4, 5, 6]
    assert m.progress(b[0])["queue_position"] == 1 and m.progress(a[4])["queue_position"] == 6
    assert {r: p for r, (p, _) in m.queue_positions().items()} == {r: i + 1 for i, r in enumerate(expected[1:])}
    assert m.active() == expected
    gate.set()
    _wait_all(m, expected)
    assert fake.started == expected
    assert store.get(b[0]).owner_id == BOB.owner_id and store.get(b[0]).owner_name == "Bob"
    assert m.progress(a[0])["owner_name"] == "Alice"
    assert {r.id for r in store.list(owner_id=ALICE.owner_id)} == set(a)


def test_outside_workshop_mode_the_queue_stays_fifo_and_uncapped(make_manager, store, monkeypatch):
    monkeypatch.delenv(workshop.WORKSHOP_ENV, raising=False)
    monkeypatch.delenv("EMBEDLAB_QUEUE_CAP", raising=False)
    assert queue_cap() is None
    gate = threading.Event()
    fake = FakeTrain(steps=1, gate=gate)
    m = make_manager(fake)
    ids = m.submit_many([_cfg(i) for i in range(7)])  # no owner: the local user, no cap
    gate.set()
    _wait_all(m, ids)
    assert fake.started == ids and {store.get(r).owner_id for r in ids} == {"local"}


def test_per_person_cap_refuses_with_a_clear_message(make_manager, store, room, monkeypatch):
    assert queue_cap() == 4
    gate = threading.Event()
    fake = FakeTrain(steps=1, gate=gate)
    m = make_manager(fake)
    running = m.submit(_cfg(0), owner=ALICE)
    assert fake.first_step.wait(5)  # the running run does not count against the cap
    waiting = m.submit_many([_cfg(i) for i in range(1, 5)], owner=ALICE)  # four waiting: at the cap
    with pytest.raises(QueueFull, match=r"at most 4 waiting runs per person \(EMBEDLAB_QUEUE_CAP\); you have 4 runs waiting"):
        m.submit(_cfg(5), owner=ALICE)
    assert len(store.list(owner_id=ALICE.owner_id)) == 5  # the refused run was not recorded
    bob = m.submit_many([_cfg(10 + i) for i in range(3)], owner=BOB)  # the cap is per person
    with pytest.raises(QueueFull, match="you have 3 runs waiting and asked for 2 more"):
        m.submit_many([_cfg(20), _cfg(21)], owner=BOB)  # all or nothing
    assert len(store.list(owner_id=BOB.owner_id)) == 3
    assert isinstance(QueueFull("x"), InvalidConfig)  # pages show it like any bad setting
    monkeypatch.setenv("EMBEDLAB_QUEUE_CAP", "6")
    m.submit(_cfg(5), owner=ALICE)
    monkeypatch.setenv("EMBEDLAB_QUEUE_CAP", "lots")
    with pytest.raises(InvalidConfig, match="EMBEDLAB_QUEUE_CAP='lots'"):
        m.submit(_cfg(6), owner=ALICE)
    gate.set()
    _wait_all(m, [running, *waiting, *bob])


def _finished_run(store, backbone, steps, seconds):
    """A finished run of `steps` steps that took `seconds`: what the wait estimate learns from."""
    run_id = store.create_run(_cfg(0, backbone=backbone, steps=steps).to_dict(), status="queued")
    store.set_status(run_id, "finished")
    t = time.time()
    store._conn().execute("UPDATE runs SET started=?, finished=? WHERE id=?", (t - seconds - 100, t - 100, run_id))
    return run_id


def test_queue_positions_estimate_the_wait_from_measured_step_times(make_manager, store, room):
    _finished_run(store, "test_vit", 10, 20.0)  # 2 s per step on this server
    _finished_run(store, "test_vit", 20, 40.0)
    _finished_run(store, "test_vit", 10, 200.0)  # a slow outlier: the median ignores it
    gate = threading.Event()
    fake = FakeTrain(steps=1, gate=gate)
    m = make_manager(fake)
    first = m.submit(_cfg(0, steps=10), owner=ALICE)  # 20 s typical; no step rate yet: 20 s less its time so far
    assert fake.first_step.wait(5)
    a2 = m.submit(_cfg(1, steps=5), owner=ALICE)  # 10 s
    b1 = m.submit(_cfg(2, steps=30), owner=BOB)  # 60 s
    odd = m.submit(_cfg(3, steps=5, backbone="test_clip"), owner=BOB)  # never run here: its duration is unknown
    last = m.submit(_cfg(4, steps=5), owner=ALICE)
    assert m.typical_duration(_cfg(0, steps=10)) == pytest.approx(20.0)
    assert m.typical_duration(_cfg(0, steps=None, epochs=1.0)) is None
    pos = m.queue_positions()
    assert [r for r, _ in sorted(pos.items(), key=lambda kv: kv[1][0])] == [b1, a2, odd, last]
    assert pos[b1][1] == pytest.approx(20.0, abs=3)  # when `first` ends
    assert pos[a2][1] == pytest.approx(80.0, abs=3)  # + b1's 60 s
    assert pos[odd][1] == pytest.approx(90.0, abs=3)  # + a2's 10 s
    assert pos[last] == (4, None)  # after a run of unknown length: "unknown", not a guess
    gate.set()
    _wait_all(m, [first, a2, b1, odd, last])
    assert m.queue_positions() == {}


def test_a_second_person_cannot_cancel_delete_or_resume_the_first_ones_run(make_manager, store, room):
    gate = threading.Event()
    fake = FakeTrain(steps=3, gate=gate)
    m = make_manager(fake)
    run_id = m.submit(_cfg(0), owner=ALICE)
    assert fake.first_step.wait(5)
    queued = m.submit(_cfg(1), owner=ALICE)
    for act in (lambda r: m.cancel(r, by=BOB), lambda r: m.request_cancel(r, by=BOB), lambda r: m.delete(r, by=BOB)):
        for r in (run_id, queued):
            with pytest.raises(NotAllowed, match=f"run {r} is Alice's run: only its owner or the instructor"):
                act(r)
    assert m.status(run_id) == "running" and m.status(queued) == "queued" and store.exists(queued)
    assert m.cancel(queued, by=ALICE)  # the owner may
    assert m.cancel(run_id, by=INES)  # so may the instructor; the owner sees who did it
    gate.set()
    assert m.wait(run_id, 10)
    assert store.get(run_id).status == "cancelled" and store.get(run_id).error == "cancelled by Ines (instructor)"
    with pytest.raises(NotAllowed, match="can resume it"):
        m.resume(run_id, by=BOB, restart_ok=True)
    assert store.get(run_id).status == "cancelled"
    m.resume(run_id, by=ALICE, restart_ok=True)
    assert m.wait(run_id, 10) and store.get(run_id).status == "finished"
    assert store.get(run_id).owner_id == ALICE.owner_id  # a resume keeps the owner
    with pytest.raises(NotAllowed, match="can delete it"):
        m.delete(run_id, by=BOB)
    m.delete(run_id, by=INES)
    assert not store.exists(run_id)


def test_outside_workshop_mode_anyone_may_cancel(make_manager, store, monkeypatch):
    monkeypatch.delenv(workshop.WORKSHOP_ENV, raising=False)
    gate = threading.Event()
    fake = FakeTrain(steps=3, gate=gate)
    m = make_manager(fake)
    run_id = m.submit(_cfg(0), owner=ALICE)
    assert fake.first_step.wait(5)
    assert m.cancel(run_id, by=BOB)
    gate.set()
    assert m.wait(run_id, 10) and store.get(run_id).error == "cancelled by the user"  # no names outside a workshop


def test_workers_from_env_and_one_gpu_each(make_manager, monkeypatch):
    monkeypatch.delenv("EMBEDLAB_MAX_RUNNING", raising=False)
    monkeypatch.delenv("EMBEDLAB_WORKERS", raising=False)
    assert default_workers() == 1  # the tests see no GPU
    monkeypatch.setenv("EMBEDLAB_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("EMBEDLAB_WORKERS", "0")
    with pytest.raises(InvalidConfig, match="EMBEDLAB_WORKERS='0'"):
        default_workers()
    monkeypatch.setenv("EMBEDLAB_WORKERS", "2")
    gate = threading.Event()
    fake = FakeTrain(steps=1, gate=gate)
    m = make_manager(fake, max_running=None, devices=["cuda:0", "cuda:1"])
    assert m.max_running == 2
    ids = [m.submit(_cfg(0)), m.submit(_cfg(1)), m.submit(_cfg(2, device="cpu"))]
    deadline = time.time() + 5
    while len(fake.started) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert sorted(fake.devices[r] for r in ids[:2]) == ["cuda:0", "cuda:1"]  # two runs at once, one per GPU
    gate.set()
    _wait_all(m, ids)
    assert fake.devices[ids[2]] == "cpu"  # an explicit device is kept
    assert store_config_device(m, ids[0]) == "auto"  # the stored config is the user's, not the worker's copy


def store_config_device(m, run_id):
    return m.store.get(run_id).config["device"]
