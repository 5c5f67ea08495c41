"""The run store under load: WAL, short write transactions and a busy timeout mean no "database is locked"
and no lost row, across threads and across processes."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from core.store import RunStore

from helpers import REPO

LOAD_SECONDS = float(os.environ.get("EMBEDLAB_LOAD_TEST_S", "20"))


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


@pytest.mark.slow  # ~20 s; CI runs it (it is in the default selection)
def test_eight_writers_and_eight_readers_for_twenty_seconds(tmp_path):
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
