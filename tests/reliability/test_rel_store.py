"""The run store under load: WAL, short write transactions and a busy timeout mean no "database is locked"
and no lost row, across threads and across processes."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

from pathlib import Path

import pytest

from core.store import RunStore

from helpers import REPO

# the suite's small form; EMBEDLAB_LOAD_TEST_S=60 (or more) for a longer soak
LOAD_SECONDS = float(os.environ.get("EMBEDLAB_LOAD_TEST_S", "8"))


def test_wal_and_busy_timeout_are_set(tmp_path):
    store = RunStore(tmp_path)
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000


def test_a_writer_holding_the_lock_makes_others_wait_not_fail(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run({"objective": "ce"})
    held = threading.Event()

    def hog():  # another connection (a CLI, another process) inside a 1.5 s write transaction
        db = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO metrics (run_id, step, key, value, t) VALUES (?, 0, 'hog', 1, 0)", (run_id,))
        held.set()
        time.sleep(1.5)
        db.execute("COMMIT")
        db.close()

    t = threading.Thread(target=hog)
    t.start()
    assert held.wait(5)
    t0 = time.monotonic()
    store.log_metrics(run_id, 1, {"loss": 0.5})  # waits for the lock instead of raising "database is locked"
    waited = time.monotonic() - t0
    t.join()
    assert waited > 1.0
    assert store.metrics(run_id) == {"hog": [(0, 1.0)], "loss": [(1, 0.5)]}


@pytest.mark.slow  # LOAD_SECONDS (8 s by default); CI runs it (it is in the default selection)
def test_eight_writers_and_eight_readers_under_load(tmp_path):
    store = RunStore(tmp_path)
    runs = [store.create_run({"objective": "ce", "n": i}) for i in range(8)]
    written = [0] * 8
    errors: list[str] = []
    reads = [0] * 8
    stop = threading.Event()

    def writer(i):
        step = 0
        try:
            while not stop.is_set():
                step += 1
                store.log_metrics(runs[i], step, {"loss": 1.0 / step, "lr": 1e-3})  # one transaction, two rows
                written[i] += 2
                if step % 10 == 0:
                    store.set_progress(runs[i], {"step": step})
                    store.update_summary(runs[i], {"last": step})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"writer {i}: {type(exc).__name__}: {exc}")

    def reader(i):
        seen = 0
        try:
            while not stop.is_set():
                run_id = runs[i]
                n = sum(len(v) for v in store.metrics(run_id).values())
                assert n >= seen, f"rows went from {seen} to {n}"  # never lose a committed row
                seen = n
                store.get(run_id)
                store.list(status=["queued"])
                reads[i] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(f"reader {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(LOAD_SECONDS)
    stop.set()
    for t in threads:
        t.join(60)
    assert errors == []  # in particular no sqlite3.OperationalError: database is locked
    fresh = RunStore(tmp_path)  # read back through a new connection
    for i, run_id in enumerate(runs):
        m = fresh.metrics(run_id)
        assert len(m["loss"]) + len(m["lr"]) == written[i]
        assert [s for s, _ in m["loss"]] == list(range(1, written[i] // 2 + 1))  # every step, once, in order
        assert fresh.get(run_id).summary["last"] == (written[i] // 2) // 10 * 10
    assert sum(written) > 1000 and min(reads) > 10  # it really was under load


WRITER = """
import sys
sys.path.insert(0, {repo!r})
from core.store import RunStore
store = RunStore({root!r})
for step in range({n}):
    store.log_metrics({run!r}, step, {{"loss": float(step), "who": {who}}})
    if step % 25 == 0:
        store.set_progress({run!r}, {{"step": step, "who": {who}}})
print("done")
"""


def test_two_processes_write_concurrently_without_loss(tmp_path):
    store = RunStore(tmp_path)
    runs = [store.create_run({"objective": "ce"}, run_id=f"proc-{k}") for k in range(2)]
    n = 1500
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(repo=str(REPO), root=str(tmp_path), n=n, run=run, who=k)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, run in enumerate(runs)]
    mine = store.create_run({"objective": "ce"}, run_id="this-process")
    for step in range(n):  # and this process writes at the same time
        store.log_metrics(mine, step, {"loss": float(step)})
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert all(out.strip() == "done" and "locked" not in err for out, err in outs)
    fresh = RunStore(tmp_path)
    for k, run in enumerate(runs):
        m = fresh.metrics(run)
        assert [s for s, _ in m["loss"]] == list(range(n)) and {v for _, v in m["who"]} == {float(k)}
    assert len(fresh.metrics(mine)["loss"]) == n


# ------------------------------------------------ issue 15: a corrupt or read-only run database
def _home_with_runs(root):
    """Two runs: one finished (summary.json), one stopped after a checkpoint; then the store is closed."""
    import json

    store = RunStore(root)
    done = store.create_run({"objective": "ce", "backbone": "test_vit", "dataset": "digits", "steps": 4})
    store.log_metric_rows(done, [(i, {"loss": 1.0 / (i + 1)}) for i in range(1, 2000)])
    (store.run_dir(done) / "summary.json").write_text(json.dumps({"val_acc": 0.75, "steps": 4}))
    store.update_summary(done, {"val_acc": 0.75})
    store.set_status(done, "finished")
    stopped = store.create_run({"objective": "lacvit", "backbone": "test_vit", "dataset": "digits", "steps": 8})
    (store.run_dir(stopped) / "checkpoint.safetensors").write_bytes(b"x")
    store.set_status(stopped, "cancelled", error="cancelled by the user")
    store.close()
    return done, stopped


def _damage(db, how: str) -> bytes:
    data = db.read_bytes()
    bad = {"truncated": data[: len(data) // 2], "garbage": os.urandom(len(data)), "text": b"not a database at all\n"}[how]
    db.write_bytes(bad)
    return bad


@pytest.mark.parametrize("how", ["truncated", "garbage", "text"])
def test_a_corrupt_database_is_moved_aside_and_the_runs_rebuilt_from_their_folders(tmp_path, how):
    done, stopped = _home_with_runs(tmp_path)
    bad = _damage(tmp_path / "runs.db", how)
    store = RunStore(tmp_path, recover=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("runs.db.corrupt-") and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes() == bad  # kept, byte for byte, never deleted
    runs = {r.id: r for r in store.list()}
    assert set(runs) == {done, stopped}
    assert (runs[done].status, runs[done].summary, runs[done].config["steps"]) == ("finished", {"val_acc": 0.75, "steps": 4}, 4)
    assert runs[stopped].status == "interrupted" and "resume continues from the last checkpoint" in runs[stopped].error
    notice = store.recovery_notice
    assert notice.startswith(f"runs.db in {tmp_path} was not a readable database (") and aside[0].name in notice
    assert "(kept, not deleted) and the run list rebuilt from 2 run folder(s)" in notice
    store.create_run({"objective": "ce"})  # the new database takes writes
    assert len(RunStore(tmp_path).list()) == 3 and RunStore(tmp_path).recovery_notice is None  # once: the next open is clean


def test_two_corruptions_in_one_second_keep_both_old_files(tmp_path):
    _home_with_runs(tmp_path)
    first = _damage(tmp_path / "runs.db", "text")
    RunStore(tmp_path).close()
    (tmp_path / "runs.db").write_bytes(b"garbage again")
    RunStore(tmp_path).close()
    kept = sorted(p.read_bytes() for p in tmp_path.glob("runs.db.corrupt-*") if not p.name.endswith(("-wal", "-shm")))
    assert kept == sorted([first, b"garbage again"])


def test_a_locked_database_is_never_taken_for_a_corrupt_one(tmp_path):
    _home_with_runs(tmp_path)
    holder = sqlite3.connect(tmp_path / "runs.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process in a write: opening must wait, not move the file aside
    release = threading.Timer(1.0, lambda: holder.execute("ROLLBACK"))
    release.start()
    store = RunStore(tmp_path, recover=True)
    store.set_status(store.list()[0].id, "finished")  # a write: it waits for the holder (busy timeout), then goes through
    release.join()
    holder.close()
    assert list(tmp_path.glob("runs.db.corrupt-*")) == [] and store.recovery_notice is None and len(store.list()) == 2


def test_a_deleted_database_is_rebuilt_from_the_run_folders(tmp_path):
    done, stopped = _home_with_runs(tmp_path)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"runs.db{suffix}").unlink(missing_ok=True)
    store = RunStore(tmp_path)
    assert {r.id for r in store.list()} == {done, stopped}
    assert store.recovery_notice.startswith(f"{tmp_path / 'runs.db'} was missing or empty: the run list was rebuilt")


def _cli(*args, home, user=None):
    from helpers import cli_env

    return subprocess.run([sys.executable, "-m", "core", *args, "--runs-dir", str(home)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=240, user=user)


@pytest.mark.slow
def test_the_cli_lists_runs_of_a_corrupt_home_and_says_where_the_old_file_is(tmp_path):
    done, stopped = _home_with_runs(tmp_path)
    _damage(tmp_path / "runs.db", "garbage")
    proc = _cli("runs", "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "was not a readable database (file is not a database); it was moved to runs.db.corrupt-" in lines[0]
    assert "internal error" not in proc.stderr
    import json

    assert {r["run_id"]: r["status"] for r in json.loads(proc.stdout)} == {done: "finished", stopped: "interrupted"}


def test_a_read_only_home_still_lists_runs_and_refuses_to_train_with_one_line(tmp_path, capsys, monkeypatch):
    """The folder is made read-only; as root (CI containers) a chmod does not stop writes, so there the
    permission check is also made to say no for that folder."""
    import json

    from core.cli import main

    home = tmp_path / "ro-home"
    done, stopped = _home_with_runs(home)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **kw: False if m & os.W_OK and home in (Path(p), *Path(p).parents)
                            else real_access(p, m, **kw))
    paths = [home, *home.rglob("*")]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        before = sorted(p.name for p in home.iterdir())
        assert main(["runs", "--json", "--runs-dir", str(home)]) == 0
        listed = capsys.readouterr()
        assert listed.err == "" and {r["run_id"] for r in json.loads(listed.out)} == {done, stopped}
        assert main(["show", done, "--runs-dir", str(home)]) == 0 and json.loads(capsys.readouterr().out)["status"] == "finished"
        rc = main(["train", "--backbone", "test_vit", "--objective", "ce", "--dataset", "digits", "--steps", "2",
                   "--runs-dir", str(home)])
        refused = capsys.readouterr()
        assert rc == 2 and refused.err.strip().splitlines() == [
            f"error: EmbedLab home {home} is read-only: runs cannot be saved there (listing them still works); "
            "use a writable --runs-dir or EMBEDLAB_HOME"], refused.err
        if os.geteuid() != 0:
            assert sorted(p.name for p in home.iterdir()) == before  # no -wal, -shm or run folder appeared
        assert {p.name for p in (home / "runs").iterdir()} == {done, stopped}
    finally:
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_a_read_only_store_says_why_it_cannot_write(tmp_path, monkeypatch):
    from core.errors import EmbedLabError

    _home_with_runs(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False if m & os.W_OK else real_access(p, m, **kw))
    store = RunStore(tmp_path, recover=True)
    assert store.read_only and len(store.list()) == 2
    with pytest.raises(EmbedLabError, match=r"is read-only: runs cannot be saved or changed there"):
        store.create_run({"objective": "ce"})


def test_the_app_shows_where_the_corrupt_database_went_and_lists_the_runs(home):
    from streamlit.testing.v1 import AppTest

    done, stopped = _home_with_runs(home)
    _damage(home / "runs.db", "garbage")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    notices = [w.value for w in at.warning if "was not a readable database" in w.value]
    assert len(notices) == 1 and "runs.db.corrupt-" in notices[0] and "(kept, not deleted)" in notices[0]
    at.switch_page("pages/runs.py").run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning if "was not a readable database" in w.value] == notices
    assert sum(len(d.value) for d in at.dataframe) == 2  # both runs, from their folders
