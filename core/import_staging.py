"""Locks and staging folders of dataset imports: who may write a dataset name, and the private folder an
import fills before it is moved into place. `core.datasets` cleans what a killed import left when it lists
datasets; `core.dataset_import` holds the locks while it writes. Imports neither of them.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DatasetError

LOCK_WAIT_S = 10.0  # a second import of one name waits this long for the first, then is refused


@contextmanager
def name_lock(datasets: Path, name: str, wait: float | None = None) -> Iterator[None]:
    """Hold the lock of dataset `name` (EMBEDLAB_HOME/locks/dataset-<name>.lock, outside datasets/).
    Another holder is waited for up to `wait` seconds (default LOCK_WAIT_S), then refused with a clear
    message. flock is released by the kernel when its process dies, so a killed import never blocks
    the name."""
    what = f"another import of {name!r} is still running; try again when it has finished"
    with flocked(datasets.parent / "locks", f"dataset-{name}.lock", LOCK_WAIT_S if wait is None else wait, what):
        yield


@contextmanager
def flocked(folder: Path, filename: str, wait: float, busy: str) -> Iterator[None]:
    """flock folder/filename, and remove the file (and the folder, once empty) on release: a refused
    import leaves nothing behind. Whoever wins a lock checks that the file is still the one at that
    path; one removed meanwhile is retried, so two holders can never each own a different file."""
    path, deadline = folder / filename, time.monotonic() + wait
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            f = open(path, "a+b")
        except FileNotFoundError:  # the folder went with another holder's release: make it again
            continue
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            if time.monotonic() >= deadline:
                raise DatasetError(busy) from None
            time.sleep(0.05)
            continue
        try:
            current = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        f.close()  # the previous holder removed this file as it let go: take the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding it: a waiter on this file sees it gone and retries
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
        f.close()


STAGING = ".import-"  # datasets/.import-<token>/, owned by whoever holds locks/.import-<token>.lock


@contextmanager
def staging(datasets: Path) -> Iterator[Path]:
    """A private staging folder, removed on the way out. Its lock is taken before the folder exists,
    so `clean_stale_staging` never takes a live import's folder for a dead one's."""
    token = secrets.token_hex(8)
    with flocked(datasets.parent / "locks", f"{STAGING}{token}.lock", 0.0, "staging lock taken"):
        folder = datasets / f"{STAGING}{token}"
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def clean_stale_staging(datasets: Path) -> list[str]:
    """Remove staging folders whose import is gone (a SIGKILL, a power cut): their lock is free.
    Runs at every import and dataset listing (app and CLI start); returns the folders removed."""
    removed = []
    try:
        stale = [p for p in Path(datasets).iterdir() if p.name.startswith(STAGING) and p.is_dir()]
    except OSError:  # no datasets folder yet, or unreadable
        return removed
    for folder in stale:
        try:
            with flocked(folder.parent.parent / "locks", f"{folder.name}.lock", 0.0, "busy"):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        except DatasetError:
            continue  # its import is running
        except OSError:  # a read-only home: nothing can be cleaned, and nothing needs to be
            continue
    return removed
