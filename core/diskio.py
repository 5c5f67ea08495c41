"""Large writes that a full disk cannot turn into a crash.

Writing through a memory map onto a disk that fills kills the whole process with SIGBUS (the kernel
cannot allocate a page it already promised): one user's run would take the Streamlit server and
every other session with it. So large arrays are written here with plain buffered writes, after a
free-space check, to a temporary file in the destination folder that is renamed into place once
complete. A full disk, a quota or a file-size limit then raises `DiskFull` (one clear sentence
naming the folder and the space needed) and the temporary file is removed; reading the finished
file through a memory map (`np.load(mmap_mode="r")`) is fine.

`EMBEDLAB_TEST_FREE_BYTES` (tests only) makes the free-space probe report that many bytes free.
"""
from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from .errors import EmbedLabError

FREE_ENV = "EMBEDLAB_TEST_FREE_BYTES"
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DiskFull(EmbedLabError, OSError):
    """Not enough room for a write: the message names the folder and the space it needs."""


def human(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:.0f} {unit}"
    return f"{int(n)} bytes"


def free_bytes(folder: Path) -> int:
    """Free space for an unprivileged writer in `folder` (the nearest existing parent)."""
    fake = os.environ.get(FREE_ENV)
    if fake:
        return int(fake)
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def ensure_free(folder: Path, need: int, what: str = "") -> None:
    """Raise DiskFull unless `folder`'s disk has `need` bytes free."""
    free = free_bytes(folder)
    if free < need:
        raise DiskFull(f"not enough free space in {folder}{' for ' + what if what else ''}: "
                       f"need {human(need)}, {human(free)} free")


def disk_full_error(exc: OSError, folder: Path, need: int | None = None, what: str = "") -> DiskFull | None:
    """The DiskFull for an OSError that means 'no room' (ENOSPC, EDQUOT, EFBIG), else None."""
    if isinstance(exc, DiskFull):
        return exc
    if exc.errno not in _FULL:
        return None
    needed = f": need {human(need)}" if need else ""
    reason = "a file-size limit" if exc.errno == errno.EFBIG else "the disk (or quota) is full"
    return DiskFull(f"not enough free space in {folder}{' for ' + what if what else ''}{needed} ({reason})")


def no_room(exc: BaseException) -> bool:
    """Whether a failed write ran out of room. Libraries wrap the OSError: safetensors keeps its text,
    torch.save into a file object keeps it as the exception's context."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        if any(s in str(exc) for s in ("No space left", "Disk quota exceeded", "File too large", "os error 28", "os error 27")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def write_atomic(path: Path, write, *, need: int, what: str = "") -> None:
    """`write(tmp)` fills a temp file next to `path`, renamed into place when complete. The free space
    is checked first; on any failure the temp file is removed and the old `path` (if any) kept."""
    path = Path(path)
    ensure_free(path.parent, need, what)
    tmp = temp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if no_room(exc) and not isinstance(exc, DiskFull):
            raise DiskFull(f"not enough free space in {path.parent}{' for ' + what if what else ''}: "
                           f"need {human(need)}, {human(free_bytes(path.parent))} free") from exc
        raise


def temp_name(path: Path) -> Path:
    """A hidden temp name next to `path`, unique to this process and thread (two workers of one
    server may write the same file at once); `clean_stale_temps` knows it by its pid."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


class NpyWriter:
    """Write one `.npy` array of known shape chunk by chunk (C order), then rename it into place.

        with NpyWriter(path, (V, N, D), np.float16, what="cached features") as w:
            for chunk in ...: w.write(chunk)   # consecutive rows, in order
        # path now holds the whole array; on any exception nothing is left behind
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype, *, what: str = "", fewer_rows: bool = False):
        """`fewer_rows`: the first dimension is an upper bound; commit keeps the whole rows written
        (a decoder that leaves out unreadable files does not know their number up front)."""
        self.path, self.what, self.fewer_rows = Path(path), what, fewer_rows
        self.dtype, self.shape = np.dtype(dtype), tuple(int(s) for s in shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.need = self.nbytes + 4096  # and the header
        self.tmp = temp_name(self.path)
        self._written = 0
        ensure_free(self.path.parent, self.need, what)
        self._guard(self._open)

    def _open(self) -> None:
        self._file = open(self.tmp, "wb", buffering=1 << 20)
        self._header_size = None
        self._file.write(self._header(self.shape))

    def _header(self, shape: tuple[int, ...]) -> bytes:
        """A version 1.0 .npy header padded to a multiple of 128 bytes, always the first one's size, so
        a shorter first dimension can be written over it in place."""
        text = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": tuple(shape)})
        size = self._header_size = self._header_size or 128 * -(-(len(text) + 11) // 128)
        text = text.ljust(size - 10 - 1) + "\n"
        return np.lib.format.MAGIC_PREFIX + bytes([1, 0]) + len(text).to_bytes(2, "little") + text.encode("latin1")

    def _guard(self, fn, *args) -> None:
        """Run a write step; any failure removes the temp file, and 'no room' becomes DiskFull."""
        try:
            fn(*args)
        except BaseException as exc:
            self.abort()
            full = disk_full_error(exc, self.path.parent, self.need, self.what) if isinstance(exc, OSError) else None
            if full is not None and full is not exc:
                raise full from exc
            raise

    def write(self, chunk: np.ndarray) -> None:
        data = np.ascontiguousarray(chunk, dtype=self.dtype)
        if self._written + data.nbytes > self.nbytes:
            self.abort()
            raise ValueError(f"{self.path.name}: more data than its shape {self.shape}")
        self._guard(self._file.write, data.data)
        self._written += data.nbytes

    def commit(self) -> Path:
        row = self.nbytes // self.shape[0] if self.shape and self.shape[0] else self.nbytes
        short = self.fewer_rows and row and self._written % row == 0
        if self._written != self.nbytes and not short:
            self.abort()
            raise ValueError(f"{self.path.name}: {self._written} of {self.nbytes} bytes written")

        def finish():
            if self._written != self.nbytes:  # fewer rows: the same-size header, with the real count
                self._file.flush()
                self._file.seek(0)
                self._file.write(self._header((self._written // row, *self.shape[1:])))
            self._file.flush()
            os.fsync(self._file.fileno())  # a delayed-allocation ENOSPC surfaces here, not later
            self._file.close()
            os.replace(self.tmp, self.path)  # atomic: readers never see a half-written file

        self._guard(finish)
        return self.path

    def abort(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None:
            try:
                f.close()
            except OSError:  # the buffered tail cannot be flushed on a full disk; the file goes anyway
                pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def clean_stale_temps(folder: Path) -> int:
    """Remove temp files (`temp_name`) in `folder` whose writing process is gone (a SIGKILL, a power
    cut); a live writer's files stay. Returns how many were removed."""
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return 0
    for p in entries:
        if not (p.name.startswith(".") and p.name.endswith(".tmp")):
            continue
        try:
            pid = int(p.name.rsplit(".", 2)[-2].split("-")[0])
        except (ValueError, IndexError):
            continue
        if not _alive(pid):
            try:
                p.unlink() if not p.is_dir() else shutil.rmtree(p)
                removed += 1
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
