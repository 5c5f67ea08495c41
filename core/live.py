"""Live progress shared by every viewer: one snapshot per run per server, refreshed at most once a second.

    board = live.board_for(manager)           # one per JobManager, i.e. one per server process
    snap = board.snapshot(run_id)             # RunSnapshot: status, step/total, ETA, thinned curves, version
    ids = board.cached("active", fetch)       # any other per-poll read, shared the same way

Why: every browser on the Train page polls once a second. Before this module each poll of each
session copied the job's whole curves under the JobManager's lock (the lock the training worker takes
at every step), read the run store and rebuilt the plotly figures, so N viewers did the work N times
a second on the CPU the training needed. Now the first reader after a second has passed refreshes the
snapshot; every other reader, in any session, gets the one already taken. `version` changes only when
what a viewer would see changes, so a figure built from a snapshot can be cached per (run_id, version)
and a finished run is drawn once per server, not once per poll.

Locks: the board's own lock guards its dicts only and is never held while the source is read; the
source (`JobManager.progress`) takes the manager's lock for a plain copy. A reader therefore never
holds a lock the worker needs for longer than that copy, and readers never wait on each other except
for a run's very first snapshot. No Streamlit import here.
"""
from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UnknownName

REFRESH_S = 1.0  # the most often a run's snapshot is read from its source, whatever the number of viewers
CURVE_POINTS = 400  # points per curve kept in a snapshot: a 300-px chart shows no more, and JSON grows with it
_VOLATILE = ("eta", "elapsed")  # progress fields that tick with the clock alone; they do not bump the version
_FIRST_WAIT_S = 30.0  # how long a reader waits for another reader's first fetch of the same key

_versions = itertools.count(1)  # one counter for all boards: (run_id, version) never repeats in a process


@dataclass(frozen=True)
class RunSnapshot:
    """What a viewer sees of one run at `taken` (monotonic seconds); shared by all sessions: read only."""

    run_id: str
    status: str  # the JobManager / store status; "missing" once the run was deleted
    step: int
    total: int | None
    eta: float | None  # seconds to the last step (None until known)
    loss: tuple[tuple[int, float], ...]  # (step, loss), thinned to CURVE_POINTS
    val_acc: tuple[tuple[int, float], ...]  # (step, val accuracy), thinned likewise
    version: int  # changes exactly when the visible content changes
    progress: dict  # the source's full progress dict (curves thinned); callers must not mutate it
    taken: float

    @property
    def missing(self) -> bool:
        return self.status == "missing"


class LiveBoard:
    """Once-a-second, single-flight memo of per-poll reads, shared by every session of a server.

    Args:
        progress: `run_id -> progress dict` (JobManager.progress); raises UnknownName for a deleted run.
        peek: `run_id -> fingerprint` read on every poll (JobManager.peek: lock-free, microseconds); a held
            snapshot whose fingerprint changed (a status change, a cancel, the queue moving) is taken anew
            at once instead of up to a second later.
        refresh_s: minimum seconds between two reads of the same key from its source.
        clock: monotonic clock (tests inject a fake one).
    """

    def __init__(self, progress: Callable[[str], dict], *, peek: Callable[[str], Any] | None = None,
                 refresh_s: float = REFRESH_S, clock: Callable[[], float] = time.monotonic):
        self._progress = progress
        self._peek = peek or (lambda run_id: None)
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()  # guards the dicts below only; never held while a source is read
        self._done = threading.Condition(self._lock)  # a first fetch finished
        self._values: dict[Any, tuple[float, Any, Any]] = {}  # key -> (taken, stamp at fetch, value)
        self._busy: set = set()  # keys being fetched right now (by one reader; the others use the old value)
        self.fetches = 0  # source reads so far (for the benchmark and tests)

    def cached(self, key, fetch: Callable[[], Any], stamp: Callable[[], Any] | None = None) -> Any:
        """`fetch()`'s value, read at most once per `refresh_s` for `key` across all threads.

        `stamp()` (cheap, called on every read) fingerprints the source: a changed stamp makes the held
        value stale at once. While one reader fetches, the others get the previous value at once (under a
        second old); only a key's very first fetch makes concurrent readers wait for it. An exception from
        `fetch` reaches the reader that fetched, and the others retry.
        """
        now = self._clock()
        mark = stamp() if stamp else None
        with self._lock:
            while True:
                held = self._values.get(key)
                if held is not None and (key in self._busy or (now - held[0] < self.refresh_s and held[1] == mark)):
                    return held[2]
                if key not in self._busy:
                    break
                if not self._done.wait(_FIRST_WAIT_S):  # the first fetch of this key is still under way
                    break
            self._busy.add(key)
        try:
            mark = stamp() if stamp else None  # before the fetch: a change during it triggers the next one
            value = fetch()
            with self._lock:
                self.fetches += 1
                self._values[key] = (self._clock(), mark, value)
            return value
        finally:
            with self._lock:
                self._busy.discard(key)
                self._done.notify_all()

    def snapshot(self, run_id: str) -> RunSnapshot:
        """The run's shared snapshot, at most `refresh_s` old (status "missing" if it was deleted)."""
        return self.cached(("run", run_id), lambda: self._take(run_id), lambda: self._peek(run_id))

    def snapshots(self, run_ids) -> list[RunSnapshot]:
        """Snapshots of the runs that still exist, in the given order."""
        return [s for s in (self.snapshot(r) for r in run_ids) if not s.missing]

    def invalidate(self, run_id: str | None = None) -> None:
        """Forget a run's snapshot (all when None): after a click changed it, the next read is fresh."""
        with self._lock:
            if run_id is None:
                self._values.clear()
            else:
                self._values.pop(("run", run_id), None)

    def _take(self, run_id: str) -> RunSnapshot:
        """Read the source once and version the result against the previous snapshot (called by one reader)."""
        try:
            p = dict(self._progress(run_id))
        except UnknownName:  # deleted meanwhile (Runs page, another session)
            p = {"run_id": run_id, "status": "missing"}
        p["loss"] = thin(p.get("loss") or (), CURVE_POINTS)
        p["val_acc"] = thin(p.get("val_acc") or (), CURVE_POINTS)
        with self._lock:
            held = self._values.get(("run", run_id))
        old = held[2] if held else None
        same = old is not None and _visible(old.progress) == _visible(p)
        version = old.version if same else next(_versions)
        p["version"] = version
        return RunSnapshot(run_id=run_id, status=p.get("status", "missing"), step=int(p.get("step") or 0),
                           total=p.get("total"), eta=p.get("eta"), loss=p["loss"], val_acc=p["val_acc"],
                           version=version, progress=p, taken=self._clock())


def thin(points, limit: int) -> tuple:
    """At most `limit` points, evenly spaced, always keeping the first and the last (the current step)."""
    points = tuple(tuple(pt) for pt in points)
    if len(points) <= limit or limit < 2:
        return points
    stride = (len(points) - 1) / (limit - 1)
    return tuple(points[round(i * stride)] for i in range(limit))


def _visible(p: dict) -> dict:
    return {k: v for k, v in p.items() if k not in _VOLATILE and k != "version"}


_boards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # JobManager -> its LiveBoard
_boards_lock = threading.Lock()


def board_for(manager) -> LiveBoard:
    """The process-wide board of `manager` (one JobManager per server, so one board per server)."""
    with _boards_lock:
        board = _boards.get(manager)
        if board is None:
            board = _boards[manager] = LiveBoard(manager.progress, peek=manager.peek)
        return board


def snapshot(manager, run_id: str) -> RunSnapshot:
    """`board_for(manager).snapshot(run_id)`: the shared, at most a second old, view of one run."""
    return board_for(manager).snapshot(run_id)
