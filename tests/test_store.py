"""core/store.py: the run database and artifact folders, including crash recovery."""
import json
import os
import socket
import sqlite3
import threading

import pytest

from core.errors import UnknownName, UnsafePath
from core.paths import safe_name
from core.store import RunStore, _OWNER

from helpers import dead_pid

CFG = {"objective": "ce", "backbone": "test_vit", "dataset": "digits", "lr": 0.001}


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path)
    yield s
    s.close()


def _set_owner(store, run_id, owner):
    """What a crashed process leaves behind: a row owned by a process that no longer exists."""
    with sqlite3.connect(store.db_path) as db:
        db.execute("UPDATE runs SET owner=? WHERE id=?", (owner, run_id))


def test_create_get_and_config_file(store):
    run_id = store.create_run(CFG)
    r = store.get(run_id)
    assert (r.id, r.status, r.config, r.summary, r.owner) == (run_id, "queued", CFG, {}, _OWNER)
    assert (r.objective, r.backbone, r.dataset) == ("ce", "test_vit", "digits")
    assert r.started is None and r.duration is None
    assert json.loads((store.run_dir(run_id) / "config.json").read_text()) == CFG
    assert store.exists(run_id) and not store.exists("nope")
    with pytest.raises(UnknownName, match="no run 'nope'"):
        store.get("nope")


def test_status_transitions_set_times_and_error(store):
    run_id = store.create_run(CFG)
    store.set_status(run_id, "running")
    r = store.get(run_id)
    assert r.status == "running" and r.started is not None and r.finished is None
    store.set_status(run_id, "failed", error="diverged at step 3")
    r = store.get(run_id)
    assert (r.status, r.error) == ("failed", "diverged at step 3") and r.finished >= r.started
    store.set_status(run_id, "running")  # resume: error cleared, started kept
    r2 = store.get(run_id)
    assert (r2.status, r2.error, r2.finished, r2.started) == ("running", None, None, r.started)


def test_metrics_round_trip_in_step_order(store):
    run_id = store.create_run(CFG)
    store.log_metrics(run_id, 2, {"loss": 1.5, "lr": 0.01})
    store.log_metrics(run_id, 1, {"loss": 2.5, "lr": 0.005})
    store.log_metrics(run_id, 2, {"val_acc": 0.25})
    store.log_metrics(run_id, 3, {"val_acc": None})
    other = store.create_run(CFG)
    store.log_metrics(other, 1, {"loss": 99.0})
    assert store.metrics(run_id) == {"loss": [(1, 2.5), (2, 1.5)], "lr": [(1, 0.005), (2, 0.01)],
                                     "val_acc": [(2, 0.25), (3, None)]}
    assert store.metrics(run_id, keys=["loss"]) == {"loss": [(1, 2.5), (2, 1.5)]}
    assert store.metrics(other) == {"loss": [(1, 99.0)]}
    # a second store on the same folder (another process, say) sees the same rows
    assert RunStore(store.root).metrics(run_id, ["lr"]) == {"lr": [(1, 0.005), (2, 0.01)]}


def test_list_filters_and_order(store):
    a = store.create_run({**CFG, "objective": "ce"})
    b = store.create_run({**CFG, "objective": "lacvit"})
    c = store.create_run({**CFG, "objective": "flyp"})
    store.set_status(a, "finished")
    store.set_status(b, "failed", error="x")
    assert [r.id for r in store.list()] == [c, b, a]  # newest first
    assert [r.id for r in store.list(status=["finished"])] == [a]
    assert {r.id for r in store.list(status=("finished", "failed"))} == {a, b}
    assert [r.id for r in store.list(objective="lacvit")] == [b]
    assert store.list(objective="lacvit", status=["finished"]) == []
    assert [r.id for r in store.list(limit=2)] == [c, b]


def test_summary_updates_merge(store):
    run_id = store.create_run(CFG)
    store.update_summary(run_id, {"zeroshot_acc": 0.1})
    store.update_summary(run_id, {"val_acc": 0.5, "wise_ft": [{"alpha": 0.0, "val_acc": 0.1}]})
    store.update_summary(run_id, {"val_acc": 0.75})
    assert store.get(run_id).summary == {"zeroshot_acc": 0.1, "val_acc": 0.75, "wise_ft": [{"alpha": 0.0, "val_acc": 0.1}]}
    store.set_progress(run_id, {"step": 3, "total": 10})
    assert store.get(run_id).progress == {"step": 3, "total": 10}


def test_delete_removes_row_metrics_and_folder(store):
    keep = store.create_run(CFG)
    gone = store.create_run(CFG)
    store.log_metrics(gone, 1, {"loss": 1.0})
    (store.run_dir(gone) / "checkpoint.safetensors").write_bytes(b"x")
    folder = store.run_dir(gone)
    store.delete(gone)
    assert not store.exists(gone) and not folder.exists()
    assert store.metrics(gone) == {}
    assert store.exists(keep) and store.run_dir(keep).is_dir()
    with pytest.raises(UnsafePath):
        store.delete("../" + keep)
    assert store.exists(keep)


def test_run_ids_are_safe_names(store):
    generated = {store.create_run({**CFG, "objective": o}) for o in ("ce", "lacvit", "flyp", "ce")}
    assert len(generated) == 4
    for run_id in generated:
        assert safe_name(run_id) == run_id and "/" not in run_id
        assert store.run_dir(run_id).parent == store.root / "runs"
    assert store.create_run(CFG, run_id="my run-1") == "my run-1"
    for bad in ("../evil", "a/b", "..", "/abs", ""):
        with pytest.raises(UnsafePath):
            store.create_run(CFG, run_id=bad or "/")
        with pytest.raises(UnsafePath):
            store.run_dir(bad)
    assert not (store.root / "evil").exists()


def test_reopen_after_crash_marks_dead_owners_runs_interrupted(store):
    dead = f"{socket.gethostname()}:{dead_pid()}"
    crashed = store.create_run(CFG, status="running")
    waiting = store.create_run(CFG, status="queued")
    mine = store.create_run(CFG, status="running")  # owned by this (live) process
    elsewhere = store.create_run(CFG, status="running")
    done = store.create_run(CFG, status="finished")
    for run_id in (crashed, waiting, done):
        _set_owner(store, run_id, dead)
    _set_owner(store, elsewhere, "some-other-host:1")  # another machine's process: cannot check, leave it
    header = json.dumps({"__metadata__": {"step": "30", "stage": "0"}}).encode()
    (store.run_dir(crashed) / "checkpoint.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    store.close()

    reopened = RunStore(store.root, recover=True)
    assert {r.id: r.status for r in reopened.list()} == {
        crashed: "interrupted", waiting: "interrupted", mine: "running", elsewhere: "running", done: "finished"}
    r = reopened.get(crashed)
    assert r.error.endswith("(server restart or crash); resume continues from step 30") and r.finished is not None
    assert reopened.get(waiting).error.endswith("it has no checkpoint: resume starts over from step 0")
    # idempotent, and a store opened without recover changes nothing
    assert reopened.recover_interrupted() == []
    assert RunStore(store.root).get(mine).status == "running"


def test_a_reused_pid_does_not_keep_a_crashed_run_running(store):
    """Owners are host:pid:start-time: a live process that got a dead run's pid is not its owner."""
    host = socket.gethostname()
    assert _OWNER.split(":")[:2] == [host, str(os.getpid())] and len(_OWNER.split(":")) == 3  # Linux: start time known
    reused = store.create_run(CFG, status="running")
    _set_owner(store, reused, f"{host}:{os.getpid()}:1")  # this pid, but a process that started at tick 1
    older = store.create_run(CFG, status="running")
    _set_owner(store, older, f"{host}:{os.getpid()}")  # written before start times were recorded: the pid decides
    assert RunStore(store.root).recover_interrupted() == [reused]
    assert store.get(older).status == "running"


def test_store_without_recover_leaves_dead_runs_alone(store):
    crashed = store.create_run(CFG, status="running")
    _set_owner(store, crashed, f"{socket.gethostname()}:{dead_pid()}")
    assert RunStore(store.root).get(crashed).status == "running"
    assert RunStore(store.root).recover_interrupted() == [crashed]


def test_concurrent_writers_from_threads(store):
    run_id = store.create_run(CFG)

    def write(k):
        for step in range(25):
            store.log_metrics(run_id, step, {f"m{k}": float(step)})

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = store.metrics(run_id)
    assert sorted(m) == ["m0", "m1", "m2", "m3"]
    assert all([v for _, v in series] == [float(s) for s in range(25)] for series in m.values())


def test_cancel_requests_reach_another_connection_and_end_with_the_run(store, tmp_path):
    running, finished = store.create_run(CFG), store.create_run(CFG)
    store.set_status(running, "running")
    store.set_status(finished, "finished")
    other = RunStore(tmp_path)  # the process that trains `running`
    assert not other.cancel_requested(running)
    assert store.request_cancel(running) and other.cancel_requested(running)
    assert store.request_cancel(running)  # asking twice is harmless
    assert not store.request_cancel(finished) and not other.cancel_requested(finished)
    with pytest.raises(UnknownName):
        store.get("20990101-000000-ce-none")
    assert not store.request_cancel("20990101-000000-ce-none")
    other.set_status(running, "cancelled", error="cancelled by the user")
    assert not store.cancel_requested(running)  # served: a resume is not stopped by the old request
    queued = store.create_run(CFG)
    assert store.request_cancel(queued)
    store.delete(queued)
    assert not store.cancel_requested(queued)
    other.close()


def test_a_generated_id_that_is_taken_draws_a_new_one(store, monkeypatch):
    import core.store as store_mod

    first = store.create_run(CFG)
    drawn = iter([first, first, "20990101-000000-ce-beef"])  # the clock and 16 random bits repeat twice
    monkeypatch.setattr(store_mod, "_new_id", lambda objective: next(drawn))
    assert store.create_run(CFG) == "20990101-000000-ce-beef"
    assert {r.id for r in store.list()} == {first, "20990101-000000-ce-beef"}
    with pytest.raises(sqlite3.IntegrityError):  # an id the caller chose is never silently replaced
        store.create_run(CFG, run_id=first)


_OLD_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, created REAL NOT NULL, started REAL, finished REAL, status TEXT NOT NULL,
    objective TEXT, backbone TEXT, dataset TEXT, config TEXT NOT NULL, summary TEXT NOT NULL DEFAULT '{}', error TEXT,
    owner TEXT, progress TEXT NOT NULL DEFAULT '{}');
CREATE TABLE metrics (run_id TEXT NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, value REAL, t REAL NOT NULL);
"""  # runs.db as EmbedLab wrote it before runs had a person as owner


def test_an_old_database_gains_owner_columns_and_its_runs_still_load(tmp_path):
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.executescript(_OLD_SCHEMA)
        db.execute("INSERT INTO runs (id, created, status, objective, config, summary) VALUES (?,?,?,?,?,?)",
                   ("20240101-000000-ce-abcd", 1.0, "finished", "ce", json.dumps(CFG), json.dumps({"val_acc": 0.5})))
    store = RunStore(tmp_path)
    old = store.get("20240101-000000-ce-abcd")
    assert old.owner_id == "local" and old.owner_name is None and old.summary == {"val_acc": 0.5}
    cols = {r[1] for r in sqlite3.connect(tmp_path / "runs.db").execute("PRAGMA table_info(runs)")}
    assert {"owner_id", "owner_name"} <= cols
    new = store.create_run(CFG, owner_id="f" * 32, owner_name="<b>Ada</b>")
    assert store.get(new).owner_name == "<b>Ada</b>"  # plain text, as typed: escaped where shown
    assert [r.id for r in store.list(owner_id="f" * 32)] == [new]
    assert [r.id for r in store.list(owner_id="local")] == [old.id]  # NULL counts as the local user
    assert len(store.list()) == 2
    store.close()
    assert RunStore(tmp_path).get(new).owner_id == "f" * 32  # a second open migrates nothing twice


def test_owner_survives_a_lost_database(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run(CFG, owner_id="a" * 32, owner_name="Ada")
    local = store.create_run(CFG)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"runs.db{suffix}").unlink(missing_ok=True)
    again = RunStore(tmp_path)
    assert (again.get(run_id).owner_id, again.get(run_id).owner_name) == ("a" * 32, "Ada")  # from runs/<id>/owner.json
    assert again.get(local).owner_id == "local" and not (tmp_path / "runs" / local / "owner.json").exists()


def test_checkpoint_step_is_read_from_the_safetensors_header(store):
    run_id = store.create_run(CFG)
    assert store.checkpoint_step(run_id) is None  # none yet
    path = store.run_dir(run_id) / "checkpoint.safetensors"
    header = json.dumps({"__metadata__": {"step": "42", "stage": "1"}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    assert store.checkpoint_step(run_id) == 42
    for garbage in (b"", b"x", (10**12).to_bytes(8, "little"), (5).to_bytes(8, "little") + b"{nope"):
        path.write_bytes(garbage)
        assert store.checkpoint_step(run_id) is None  # unreadable: no usable checkpoint
    with pytest.raises(UnsafePath):
        store.checkpoint_step("../x")


def test_an_old_database_on_a_read_only_home_lists_its_runs_as_local(tmp_path, monkeypatch):
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.executescript(_OLD_SCHEMA)
        db.execute("INSERT INTO runs (id, created, status, objective, config) VALUES (?,?,?,?,?)",
                   ("20240101-000000-ce-abcd", 1.0, "finished", "ce", json.dumps(CFG)))
    monkeypatch.setattr("core.store.os.access", lambda path, mode: not mode & os.W_OK)  # as on a read-only mount
    store = RunStore(tmp_path)
    assert store.read_only
    assert [(r.id, r.owner_id, r.owner_name) for r in store.list()] == [("20240101-000000-ce-abcd", "local", None)]
    assert len(store.list(owner_id="local")) == 1 and store.list(owner_id="f" * 32) == []
    cols = {r[1] for r in sqlite3.connect(tmp_path / "runs.db").execute("PRAGMA table_info(runs)")}
    assert "owner_id" not in cols  # nothing was written
