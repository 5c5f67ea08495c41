"""The run store: SQLite (WAL) in EMBEDLAB_HOME plus one artifact folder per run.

Tables: `runs` (config, status, summary, error, owner process, and the person who owns it in workshop
mode: `owner_id` / `owner_name`, NULL for runs recorded before owners existed = "local") and `metrics`
(time series of (step, key, value)). Each thread gets its own connection; writes are short transactions with a
busy timeout so the training worker, the UI's polling and a CLI in another process never see
"database is locked". A run still `running` (or `queued`) whose owner process is gone is marked
`interrupted` when a store is opened with `recover=True` (app start, CLI start).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EmbedLabError, UnknownName, UnsafePath
from .paths import CHECKPOINT, confined, home as default_home, safe_name, subdir

STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
TERMINAL = ("finished", "failed", "cancelled", "interrupted")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    status TEXT NOT NULL,
    objective TEXT,
    backbone TEXT,
    dataset TEXT,
    config TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    owner TEXT,
    progress TEXT NOT NULL DEFAULT '{}',
    owner_id TEXT,
    owner_name TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    key TEXT NOT NULL,
    value REAL,
    t REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run_key ON metrics (run_id, key, step);
CREATE TABLE IF NOT EXISTS cancel_requests (
    run_id TEXT PRIMARY KEY,
    t REAL NOT NULL
);
"""
_CORRUPT = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)  # the only errors that move runs.db aside
_logger = logging.getLogger(__name__)
_ID_ATTEMPTS = 8  # fresh ids drawn when a generated one is taken
LOCAL_OWNER = "local"  # owner_id of runs made outside workshop mode (and of old runs, whose column is NULL)
OWNER_FILE = "owner.json"  # in a run folder: who owns it, so a rebuilt index keeps the owner
_ADDED_COLUMNS = {"owner_id": "TEXT", "owner_name": "TEXT"}  # columns newer than the first schema: migrated in place


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux /proc), or None where that is unknown.
    Recorded next to the pid so that a new process which happens to get a dead run's pid does not
    keep that run `running` for ever."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22; the name before ")" may hold spaces


_OWNER = ":".join(filter(None, (socket.gethostname(), str(os.getpid()), _started(os.getpid()))))  # host:pid[:start]


@dataclass
class RunRecord:
    id: str
    status: str
    created: float
    config: dict
    summary: dict = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    owner: str | None = None  # the process (host:pid[:start]) that runs or ran it
    progress: dict = field(default_factory=dict)
    owner_id: str = LOCAL_OWNER  # the person (workshop mode), see core.workshop.Identity
    owner_name: str | None = None  # their display name, plain text as typed (escape it where it is shown)

    @property
    def objective(self) -> str:
        return self.config.get("objective", "")

    @property
    def backbone(self) -> str:
        return self.config.get("backbone", "")

    @property
    def dataset(self) -> str:
        return self.config.get("dataset", "")

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started


class RunStore:
    """Thread-safe access to the run database and artifact folders of one EMBEDLAB_HOME."""

    def __init__(self, root: Path | str | None = None, *, recover: bool = False):
        self.root = Path(root) if root else default_home()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "runs.db"
        self._local = threading.local()
        # a home the process cannot write (a read-only mount, another user's folder) is opened read-only:
        # listing and showing runs work, writing says why it cannot
        self.read_only = not os.access(self.root, os.W_OK) or (self.db_path.exists() and not os.access(self.db_path, os.W_OK))
        self.recovery_notice: str | None = None  # set when a corrupt runs.db was moved aside and the index rebuilt
        try:
            if self._open():  # runs.db deleted or emptied by hand, run folders still there
                self.recovery_notice = (f"{self.db_path} was missing or empty: the run list was rebuilt from the run "
                                        "folders (their loss curves were only in the old database)")
                _logger.warning(self.recovery_notice)
        except sqlite3.DatabaseError as exc:
            if self.read_only or getattr(exc, "sqlite_errorcode", None) not in _CORRUPT:
                raise  # locked, or unopenable for another reason: never move a healthy database aside
            self._recover_corrupt(exc)
        if recover and not self.read_only:
            try:
                self.recover_interrupted()
            except sqlite3.OperationalError as exc:  # a full disk: the runs are still listed, marked next time
                _logger.warning("could not mark interrupted runs in %s: %s", self.db_path, exc)

    def _open(self) -> int:
        """Connect, create the tables, check the file; returns how many runs were re-indexed from their
        folders (only when the database had no runs table: a new home, or one whose runs.db went missing)."""
        conn = self._conn()
        if self.read_only:
            return 0
        had_runs = conn.execute("SELECT 1 FROM sqlite_master WHERE name='runs'").fetchone() is not None
        conn.executescript(_SCHEMA)  # executescript manages its own transaction
        self._migrate(conn)
        # a truncated file opens and fails later on some page ("database disk image is malformed"): find out now
        check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            err = sqlite3.DatabaseError(f"database disk image is malformed ({check})")
            err.sqlite_errorcode = sqlite3.SQLITE_CORRUPT
            raise err
        return 0 if had_runs else self._rebuild_from_folders()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Add the columns a database made by an older EmbedLab lacks (its runs keep loading: NULL = "local")."""
        have = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name in have:
                continue
            try:
                conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as exc:  # another process added it a moment ago
                if "duplicate column" not in str(exc):
                    raise
        conn.execute("CREATE INDEX IF NOT EXISTS runs_owner ON runs (owner_id)")

    def _recover_corrupt(self, exc: sqlite3.DatabaseError) -> None:
        """Move a corrupt runs.db (with its -wal / -shm) aside, never deleting it, and re-index the run folders."""
        self.close()
        try:  # another process may have moved it and rebuilt the index meanwhile: then there is nothing to move
            self._open()
            return
        except sqlite3.DatabaseError as again:
            if getattr(again, "sqlite_errorcode", None) not in _CORRUPT:
                raise
            self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = next(p for i in range(1, 10**6) if not (p := self.db_path.with_name(  # never over an older copy
            f"{self.db_path.name}.corrupt-{stamp}" + (f"-{i}" if i > 1 else ""))).exists())
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self.db_path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:  # no such companion file, or another process moved it first
                pass
        n = self._open()
        self.recovery_notice = (f"{self.db_path.name} in {self.root} was not a readable database ({exc}); it was moved to "
                                f"{aside.name} (kept, not deleted) and the run list rebuilt from {n} run folder(s); "
                                "their loss curves stay in the old file")
        _logger.warning(self.recovery_notice)

    def _rebuild_from_folders(self) -> int:
        """Index every runs/<id>/ holding a config.json: `finished` with its summary.json, else `interrupted`
        (resume goes on from its checkpoint, if it has one). Returns how many runs were indexed."""
        n = 0
        for folder in sorted((self.root / "runs").glob("*/config.json")):
            run_dir, run_id = folder.parent, folder.parent.name
            try:
                safe_name(run_id, "run id")
                config = json.loads(folder.read_text())
                summary_path = run_dir / "summary.json"
                summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            except (UnsafePath, OSError, ValueError):
                continue  # not a run folder EmbedLab wrote
            if not isinstance(config, dict) or not isinstance(summary, dict):
                continue
            created = folder.stat().st_mtime
            finished = summary_path.exists()
            owner_id, owner_name = _read_owner(run_dir)
            error = None if finished else (
                "recovered from its folder after the run database was lost; resume continues from the last checkpoint"
                if (run_dir / CHECKPOINT).exists() else "recovered from its folder after the run database was lost; it has no checkpoint")
            with self._tx() as db:
                db.execute("INSERT OR IGNORE INTO runs (id, created, started, finished, status, objective, backbone, dataset, "
                           "config, summary, error, owner_id, owner_name) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           (run_id, created, created, summary_path.stat().st_mtime if finished else created,
                            "finished" if finished else "interrupted", config.get("objective"), config.get("backbone"),
                            config.get("dataset"), json.dumps(config), json.dumps(summary, default=float), error,
                            owner_id, owner_name))
            n += 1
        return n

    # --- connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None and self.read_only:
            conn = self._local.conn = self._read_only_conn()
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def _read_only_conn(self) -> sqlite3.Connection:
        """Read the database as it is: with its WAL where SQLite can, else the main file alone
        (`immutable`: no -shm is needed), else an empty in-memory store (no runs.db yet)."""
        uri = self.db_path.as_uri()
        for target in (f"{uri}?mode=ro", f"{uri}?mode=ro&immutable=1"):
            try:
                conn = sqlite3.connect(target, uri=True, isolation_level=None, check_same_thread=True)
                conn.execute("SELECT 1 FROM runs LIMIT 1")
                conn.row_factory = sqlite3.Row
                return conn
            except sqlite3.Error:
                continue
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=True)
        conn.executescript(_SCHEMA)
        conn.row_factory = sqlite3.Row
        return conn

    class _Tx:
        def __init__(self, conn):
            self.conn = conn

        def __enter__(self):
            self.conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks
            return self.conn

        def __exit__(self, exc_type, *_):
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self):
        if self.read_only:
            raise EmbedLabError(f"EmbedLab home {self.root} is read-only: runs cannot be saved or changed there "
                                "(listing them still works); use a writable --runs-dir or EMBEDLAB_HOME")
        return self._Tx(self._conn())

    # --- runs --------------------------------------------------------------------------------
    def create_run(self, config: dict, status: str = "queued", run_id: str | None = None, *,
                   owner_id: str | None = None, owner_name: str | None = None) -> str:
        """A new run row (and its folder with config.json, and owner.json when it has an owner); returns its id.

        `owner_id` / `owner_name`: the person it belongs to in workshop mode (None: "local").

        Generated ids are `<time>-<objective>-<4 hex>`: two runs created in the same second collide with
        odds 1 in 65,536 per pair (a queue of 20 submitted at once: about 1 in 350), so a clash draws
        a new id instead of failing. A `run_id` given by the caller is used as it is.
        """
        given = safe_name(run_id, "run id") if run_id else None
        for attempt in range(_ID_ATTEMPTS):
            run_id = given or _new_id(config.get("objective", "run"))
            try:
                with self._tx() as db:
                    db.execute("INSERT INTO runs (id, created, status, objective, backbone, dataset, config, owner, "
                               "owner_id, owner_name) VALUES (?,?,?,?,?,?,?,?,?,?)",
                               (run_id, time.time(), status, config.get("objective"), config.get("backbone"),
                                config.get("dataset"), json.dumps(config), _OWNER, owner_id, owner_name))
                break
            except sqlite3.IntegrityError:
                if given or attempt == _ID_ATTEMPTS - 1:
                    raise
        self.run_dir(run_id)
        (self.run_dir(run_id) / "config.json").write_text(json.dumps(config, indent=2))
        if owner_id and owner_id != LOCAL_OWNER:
            (self.run_dir(run_id) / OWNER_FILE).write_text(json.dumps({"owner_id": owner_id, "owner_name": owner_name}))
        return run_id

    def get(self, run_id: str) -> RunRecord:
        row = self._conn().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownName(f"no run {run_id!r} in {self.root}")
        return _record(row)

    def exists(self, run_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    def list(self, *, status: Iterable[str] | None = None, objective: str | None = None, limit: int | None = None,
             owner_id: str | None = None) -> list[RunRecord]:
        """Runs newest first; `owner_id` keeps one person's ("local" includes runs recorded before owners)."""
        sql, args = "SELECT * FROM runs", []
        where = []
        if owner_id and not self._has_owner_columns():  # an old read-only database: every run is "local"
            if owner_id != LOCAL_OWNER:
                return []
            owner_id = None
        if owner_id:
            where.append("COALESCE(owner_id, ?) = ?")
            args += [LOCAL_OWNER, owner_id]
        if status:
            status = list(status)
            where.append(f"status IN ({','.join('?' * len(status))})")
            args += status
        if objective:
            where.append("objective = ?")
            args.append(objective)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_record(r) for r in self._conn().execute(sql, args).fetchall()]

    def _has_owner_columns(self) -> bool:
        return "owner_id" in {r[1] for r in self._conn().execute("PRAGMA table_info(runs)")}

    def checkpoint_step(self, run_id: str) -> int | None:
        """The step a resume of `run_id` continues from: its checkpoint's, read from the safetensors header
        (no torch needed). None when it has no checkpoint, or one whose header cannot be read."""
        return _checkpoint_step(confined(self.root, "runs", safe_name(run_id, "run id"), CHECKPOINT))

    def set_status(self, run_id: str, status: str, *, error: str | None = None) -> None:
        assert status in STATUSES, status
        now = time.time()
        with self._tx() as db:
            if status == "running":
                db.execute("UPDATE runs SET status=?, started=COALESCE(started, ?), finished=NULL, error=NULL, owner=? WHERE id=?",
                           (status, now, _OWNER, run_id))
            elif status in TERMINAL:
                db.execute("UPDATE runs SET status=?, finished=?, error=? WHERE id=?", (status, now, error, run_id))
                db.execute("DELETE FROM cancel_requests WHERE run_id=?", (run_id,))  # served: a resume starts clean
            else:
                db.execute("UPDATE runs SET status=?, error=?, owner=? WHERE id=?", (status, error, _OWNER, run_id))

    def update_summary(self, run_id: str, values: dict[str, Any]) -> None:
        with self._tx() as db:
            row = db.execute("SELECT summary FROM runs WHERE id=?", (run_id,)).fetchone()
            summary = json.loads(row["summary"]) if row else {}
            summary.update(values)
            db.execute("UPDATE runs SET summary=? WHERE id=?", (json.dumps(summary, default=float), run_id))

    def set_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET progress=? WHERE id=?", (json.dumps(progress, default=float), run_id))

    def delete(self, run_id: str) -> None:
        safe_name(run_id, "run id")
        with self._tx() as db:
            db.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            db.execute("DELETE FROM cancel_requests WHERE run_id=?", (run_id,))
            db.execute("DELETE FROM runs WHERE id=?", (run_id,))
        shutil.rmtree(confined(self.root, "runs", run_id), ignore_errors=True)

    def recover_interrupted(self) -> list[str]:
        """Mark runs whose owner process is gone as `interrupted`; return their ids."""
        stale = [r for r in self.list(status=("running", "queued")) if not _owner_alive(r.owner)]
        for r in stale:
            step = self.checkpoint_step(r.id)
            then = (f"resume continues from step {step}" if step is not None
                    else "it has no checkpoint: resume starts over from step 0")  # said before anyone presses Resume
            self.set_status(r.id, "interrupted", error=f"the process running it stopped (server restart or crash); {then}")
        return [r.id for r in stale]

    # --- cancelling a run another process owns -------------------------------------------------
    def request_cancel(self, run_id: str) -> bool:
        """Ask whichever process trains `run_id` (a CLI, another server) to stop it: train() polls
        `cancel_requested` about once a second. False when the run is not queued or running."""
        with self._tx() as db:
            cur = db.execute("INSERT OR REPLACE INTO cancel_requests (run_id, t) "
                             "SELECT id, ? FROM runs WHERE id=? AND status IN ('queued', 'running')", (time.time(), run_id))
            return cur.rowcount > 0

    def cancel_requested(self, run_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM cancel_requests WHERE run_id=?", (run_id,)).fetchone() is not None

    # --- metrics -----------------------------------------------------------------------------
    def log_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        self.log_metric_rows(run_id, [(step, values)])

    def log_metric_rows(self, run_id: str, points: list[tuple[int, dict[str, float]]]) -> None:
        """Several (step, {key: value}) points in one transaction."""
        now = time.time()
        rows = [(run_id, int(step), k, None if v is None else float(v), now) for step, values in points for k, v in values.items()]
        with self._tx() as db:
            db.executemany("INSERT INTO metrics (run_id, step, key, value, t) VALUES (?,?,?,?,?)", rows)

    def metrics(self, run_id: str, keys: Iterable[str] | None = None) -> dict[str, list[tuple[int, float]]]:
        """{key: [(step, value), ...]} in step order."""
        sql, args = "SELECT step, key, value FROM metrics WHERE run_id=?", [run_id]
        if keys:
            keys = list(keys)
            sql += f" AND key IN ({','.join('?' * len(keys))})"
            args += keys
        out: dict[str, list[tuple[int, float]]] = {}
        for row in self._conn().execute(sql + " ORDER BY step, rowid", args):
            out.setdefault(row["key"], []).append((row["step"], row["value"]))
        return out

    # --- artifacts ---------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return subdir(confined(self.root, "runs", safe_name(run_id, "run id")))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _record(row: sqlite3.Row) -> RunRecord:
    keys = row.keys()  # an old database opened read-only has no owner columns
    return RunRecord(id=row["id"], status=row["status"], created=row["created"], config=json.loads(row["config"]),
                     summary=json.loads(row["summary"] or "{}"), started=row["started"], finished=row["finished"],
                     error=row["error"], owner=row["owner"], progress=json.loads(row["progress"] or "{}"),
                     owner_id=(row["owner_id"] if "owner_id" in keys else None) or LOCAL_OWNER,
                     owner_name=row["owner_name"] if "owner_name" in keys else None)


def _read_owner(run_dir: Path) -> tuple[str | None, str | None]:
    """(owner_id, owner_name) from a run folder's owner.json; (None, None) when it has none or it is garbled."""
    try:
        owner = json.loads((run_dir / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(owner, dict):
        return None, None
    owner_id, owner_name = owner.get("owner_id"), owner.get("owner_name")
    return (owner_id if isinstance(owner_id, str) else None), (owner_name if isinstance(owner_name, str) else None)


def _checkpoint_step(path: Path) -> int | None:
    """`step` from a safetensors file's metadata: 8 bytes little-endian header length, then a JSON header."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= 100_000_000:  # the format's own cap on the header; anything else is not safetensors
                return None
            header = json.loads(f.read(n))
        return int(header["__metadata__"]["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _new_id(objective: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{objective}-{secrets.token_hex(2)}"


def _owner_alive(owner: str | None) -> bool:
    """Is the process recorded as `host:pid[:start]` still running? Other hosts' runs are left alone."""
    if not owner or ":" not in owner:
        return False
    if owner == _OWNER:
        return True
    host, pid, *start = owner.split(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return not start or _started(int(pid)) in (start[0], None)  # the pid alive, but is it the same process?
