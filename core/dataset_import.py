"""Importing a user's images (a folder or a zip with one sub-folder per class) into EMBEDLAB_HOME.

Used by both `python -m core import-dataset` and the upload widgets (a zip, or a folder the browser
sends as files with their relative paths: `import_files`). The import is all-or-nothing:
files are checked and copied into a temporary folder next to the destination and moved into place
with one rename, so a failed import leaves nothing behind and an existing dataset is never touched.

Refused (DatasetError, nothing written): not a zip or folder, zip entries with `..` or absolute
paths, symlinks, archives past the size or compression-ratio caps, empty archives, fewer than two
classes, a class with fewer than two usable images, a name that already exists.
Skipped with a summary: corrupt/truncated images, non-images, 0-byte files, `__MACOSX/` and dot
files, images over PIL's decompression-bomb pixel limit.

The import also writes the dataset's decoded store (`datasets.build_store`: streamed, at most
STORAGE_SIZE px a side, refused past STORE_MAX_BYTES or when the disk lacks the room), so loading
it later is a memory map. One import (or delete) of a name at a time: `name_lock`; a second one
waits LOCK_WAIT_S and is then refused, and without `overwrite` it is refused once the first has
made the name exist. A killed import's staging folder is removed at the next import or listing.
Zip entry names with a NUL byte, or marked UTF-8 but not, are refused naming the entry.
"""
from __future__ import annotations

import os
import shutil
import stat
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from .captions import CAPTION_FILES
from .datasets import IMAGE_SUFFIXES, build_store, drop_stale_stores
from .errors import DatasetError
from .import_staging import LOCK_WAIT_S, clean_stale_staging, name_lock, staging as _staging  # noqa: F401 (re-exported)
from .paths import home as default_home, safe_name, subdir

MAX_TOTAL_BYTES = 2 * 1024**3  # uncompressed size cap of one import
MAX_FILES = 100_000  # entries in one archive
MAX_RATIO = 200  # uncompressed / compressed, per entry and overall: past this it is a zip bomb
MIN_PER_CLASS = 2  # a class needs at least this many usable images


@dataclass
class ImportReport:
    name: str
    path: Path
    counts: dict[str, int]  # class -> usable images
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        text = f"imported {self.n_images} images in {len(self.counts)} classes as {self.name!r}"
        if self.skipped:
            reasons = Counter(reason for _, reason in self.skipped)
            parts = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
            n = len(self.skipped)
            text += f"; {n} file{'s' if n != 1 else ''} skipped: {parts} — first: {self.skipped[0][0]}"
        return text


def import_dataset(source: str | os.PathLike, name: str, *, root: Path | None = None, overwrite: bool = False) -> ImportReport:
    """Import a folder or zip of class sub-folders as dataset `name`; see the module docstring."""
    dest = _destination(name, root, overwrite)
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source} does not exist")
    if source.is_dir():
        fill = partial(_copy_folder, source)
    elif zipfile.is_zipfile(source):
        fill = partial(_extract_zip, source)
    else:
        raise DatasetError(f"{source.name} is not a zip archive or a folder of class sub-folders")
    return _import(fill, source.name, dest, overwrite)


def import_files(files: Iterable[tuple[str, bytes]], name: str, *, root: Path | None = None,
                 overwrite: bool = False) -> ImportReport:
    """Import a browser folder upload: (path inside the chosen folder, content) pairs such as
    ("pets/cats/1.jpg", b"..."). The paths come from the browser, so they get the zip entries' checks."""
    dest = _destination(name, root, overwrite)
    return _import(partial(_write_files, list(files)), "the uploaded folder", dest, overwrite)


def _destination(name: str, root: Path | None, overwrite: bool) -> Path:
    """EMBEDLAB_HOME/datasets/<name>, after checking the name is safe and free."""
    from .datasets import DATASETS

    root = Path(root) if root else default_home()
    name = safe_name(name, "dataset name")
    if name in DATASETS:
        raise DatasetError(f"dataset name {name!r} is taken by a built-in dataset; choose another name")
    dest = subdir(root, "datasets") / name
    _refuse_existing(dest, overwrite)
    return dest


def _refuse_existing(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        raise DatasetError(f"a dataset called {dest.name!r} already exists; choose another name or delete it first")


def _import(fill: Callable[[Path], None], label: str, dest: Path, overwrite: bool) -> ImportReport:
    """Fill a staging folder next to `dest`, keep the usable images, write their decoded store, and
    move them into place in one rename; all of it holding the name's lock."""
    datasets = dest.parent
    root = datasets.parent
    clean_stale_staging(datasets)
    with name_lock(datasets, dest.name):
        _refuse_existing(dest, overwrite)  # again, under the lock: an import of this name may have just finished
        with _staging(datasets) as tmp:
            staging = tmp / "raw"
            fill(staging)
            class_root = _class_root(staging, label)
            clean = tmp / "clean"
            counts, skipped = _collect_images(class_root, clean)
            _check_classes(counts, label, skipped)
            store = build_store(clean, root, dest.name)  # its files' stamp survives the rename
            if dest.exists():  # overwrite: keep the old one until the new one is in place
                os.replace(dest, tmp / "old")
            os.replace(clean, dest)
        drop_stale_stores(root, dest.name, keep=store)
    return ImportReport(dest.name, dest, counts, skipped)


def _member(filename: str, label: str) -> PurePosixPath:
    """A zip entry's or uploaded file's relative path, refused when it is absolute or climbs out ('..')."""
    if "\0" in filename:
        raise DatasetError(f"{label} refused: entry {filename!r} has a NUL byte in its name")
    member = PurePosixPath(filename.replace("\\", "/"))
    if member.is_absolute() or filename.startswith(("/", "\\")) or (len(filename) > 1 and filename[1] == ":"):
        raise DatasetError(f"{label} refused: entry {filename!r} has an absolute path")
    if ".." in member.parts:
        raise DatasetError(f"{label} refused: entry {filename!r} points outside the archive ('..')")
    return member


def _write_files(files: list[tuple[str, bytes]], out: Path) -> None:
    label = "the uploaded folder"
    if not files:
        raise DatasetError(f"{label} is empty: it holds no files")
    if len(files) > MAX_FILES:
        raise DatasetError(f"{label} holds {len(files)} files, more than the limit of {MAX_FILES}")
    total = sum(len(data) for _, data in files)
    if total > MAX_TOTAL_BYTES:
        raise DatasetError(f"{label} refused: it holds {_size(total)}, over the {_size(MAX_TOTAL_BYTES)} limit")
    members = [_member(filename, label) for filename, _ in files]  # all checked before anything is written
    out.mkdir(parents=True)
    for (filename, data), member in zip(files, members):
        _write_member(out, member, filename, label, lambda dst, data=data: dst.write(data))


def _write_member(out: Path, member: PurePosixPath, filename: str, label: str, write: Callable) -> None:
    """Create out/<member> and let `write(file)` fill it; a clash or an OS refusal is the user's to fix."""
    target = out.joinpath(*member.parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as dst:  # "x": two entries with one name must not silently overwrite
            write(dst)
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
        what = ("appears twice" if target.is_file() else
                "clashes with another entry (a file and a folder with the same name)")
        raise DatasetError(f"{label} refused: entry {filename!r} {what}") from exc
    except OSError as exc:  # a name too long for the disk, disk full
        raise DatasetError(f"{label} refused: entry {filename!r} cannot be extracted ({exc.strerror or exc})") from exc


def _extract_zip(path: Path, out: Path) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except UnicodeDecodeError as exc:  # the entry says its name is UTF-8, and it is not
        raise DatasetError(f"{path.name} refused: entry {exc.object!r} has a name that is not valid UTF-8 "
                           "(though the zip marks it as UTF-8); re-create the zip") from None
    except (zipfile.BadZipFile, OSError, ValueError, IndexError, EOFError) as exc:
        raise DatasetError(f"{path.name} is not a readable zip archive: {exc}") from exc
    with zf:
        for info in zf.infolist():  # zipfile cuts a name at its first NUL ('\0x.png' becomes ''): check the original
            if "\0" in info.orig_filename or not info.filename:
                raise DatasetError(f"{path.name} refused: entry {info.orig_filename!r} has "
                                   f"{'a NUL byte in its name' if chr(0) in info.orig_filename else 'an empty name'}")
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if not infos:
            raise DatasetError(f"{path.name} is empty: it holds no files")
        if len(infos) > MAX_FILES:
            raise DatasetError(f"{path.name} holds {len(infos)} files, more than the limit of {MAX_FILES}")
        total = 0
        for info in infos:
            _member(info.filename, path.name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DatasetError(f"{path.name} refused: entry {info.filename!r} is a symbolic link")
            if info.flag_bits & 0x1:
                raise DatasetError(f"{path.name} refused: entry {info.filename!r} is encrypted; "
                                   "re-create the zip without a password")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1 << 20:
                raise DatasetError(f"{path.name} refused: entry {info.filename!r} expands {info.file_size // info.compress_size}x "
                                   f"(over {MAX_RATIO}x looks like a zip bomb)")
            total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise DatasetError(f"{path.name} refused: it expands to {_size(total)}, over the {_size(MAX_TOTAL_BYTES)} limit")
        compressed = sum(i.compress_size for i in infos) or 1
        if total / compressed > MAX_RATIO and total > 16 << 20:
            raise DatasetError(f"{path.name} refused: it expands {total // compressed}x overall (over {MAX_RATIO}x looks like a zip bomb)")
        out.mkdir(parents=True)
        written = [0]

        def copy(info, dst):
            with zf.open(info) as src:
                # count what is really written: the header's sizes can lie
                while chunk := src.read(1 << 20):
                    written[0] += len(chunk)
                    if written[0] > MAX_TOTAL_BYTES:
                        raise DatasetError(f"{path.name} refused: it expands past the {_size(MAX_TOTAL_BYTES)} limit")
                    dst.write(chunk)

        for info in infos:
            try:
                _write_member(out, _member(info.filename, path.name), info.filename, path.name, partial(copy, info))
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # CRC mismatch (a lying size header), broken data
                raise DatasetError(f"{path.name} refused: entry {info.filename!r} is damaged ({exc})") from exc
            except (RuntimeError, NotImplementedError) as exc:  # a compression method Python lacks (deflate64, AES)
                raise DatasetError(f"{path.name} refused: entry {info.filename!r} cannot be unpacked ({exc}); "
                                   "re-create the zip with standard (deflate) compression") from exc


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _copy_folder(src: Path, out: Path) -> None:
    out.mkdir(parents=True)
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if path.is_symlink():
            continue  # never follow links out of the user's folder
        if path.is_dir():
            (out / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / rel)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def _class_root(staging: Path, label: str) -> Path:
    """The folder whose sub-folders are the classes (descends through one wrapping folder)."""
    root = staging
    for _ in range(3):
        entries = [p for p in root.iterdir() if not _hidden(p.relative_to(root))]
        dirs = [p for p in entries if p.is_dir()]
        files = [p for p in entries if p.is_file()]
        # one folder and nothing else: a wrapper (photos/cats/..., photos/dogs/...) if it holds folders itself,
        # else it is the only class (refused below as "a single class", which is what the user has to fix)
        if len(dirs) == 1 and not files and any(p.is_dir() and not _hidden(p.relative_to(dirs[0])) for p in dirs[0].iterdir()):
            root = dirs[0]
            continue
        break
    if not any(p.is_dir() for p in root.iterdir() if not _hidden(p.relative_to(root))):
        raise DatasetError(f"{label} has no class folders: put the images of each class in a folder named after the class")
    return root


def _collect_images(class_root: Path, clean: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Check every file, copy the usable images to `clean/<class>/`; return counts and skips."""
    from PIL import Image

    counts: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    clean.mkdir(parents=True)
    for path in sorted(class_root.rglob("*")):
        rel = path.relative_to(class_root)
        if not path.is_file():
            continue
        if not _utf8(str(rel)):  # a folder's file named in another encoding: no class name or message can hold it
            skipped.append((str(rel).encode("utf-8", "backslashreplace").decode(), "name not valid UTF-8"))
            continue
        if _hidden(rel):
            skipped.append((str(rel), "hidden or __MACOSX"))
            continue
        if len(rel.parts) == 1 and rel.name.lower() in CAPTION_FILES:  # per-image captions (core/captions.py)
            shutil.copy2(path, clean / rel.name.lower())
            continue
        if len(rel.parts) != 2:
            skipped.append((str(rel), "not inside a class folder"))
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(rel), "not images"))
            continue
        if path.stat().st_size == 0:
            skipped.append((str(rel), "empty (0 bytes)"))
            continue
        reason = _image_problem(path, Image)
        if reason:
            skipped.append((str(rel), reason))
            continue
        cls = rel.parts[0]
        (clean / cls).mkdir(exist_ok=True)
        os.replace(path, clean / cls / rel.parts[1])  # staging is ours: a move, not a second copy
        counts[cls] = counts.get(cls, 0) + 1
    return counts, skipped


def _image_problem(path: Path, Image) -> str | None:
    """None if PIL can fully decode the file within the pixel limit, else the reason to skip it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                im.verify()  # structure and checksums
            with Image.open(path) as im:
                im.load()  # the pixels themselves: catches truncation
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return "too many pixels (decompression bomb)"
        except Image.UnidentifiedImageError:
            return "not images"
        except MemoryError:  # the machine's problem, not the file's: never counted as a corrupt image
            raise
        except Exception:  # truncated, bad checksum, unsupported codec
            return "corrupt"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # surrogates: bytes of a name in another encoding
        return False


def _check_classes(counts: dict[str, int], label: str, skipped: list[tuple[str, str]]) -> None:
    if not counts:
        n = len(skipped)
        detail = f" ({n} file{'s' if n != 1 else ''} skipped, first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DatasetError(f"{label} holds no usable images{detail}")
    if len(counts) < 2:
        raise DatasetError(f"{label} has a single class ({next(iter(counts))!r}); a classifier needs at least two class folders")
    small = [c for c, n in counts.items() if n < MIN_PER_CLASS]
    if small:
        raise DatasetError(f"{label}: class {small[0]!r} has {counts[small[0]]} usable image(s); every class needs at least {MIN_PER_CLASS}")


def delete_dataset(name: str, root: Path | None = None) -> None:
    root = Path(root) if root else default_home()
    name = safe_name(name, "dataset name")
    datasets = subdir(root, "datasets")
    with name_lock(datasets, name):  # not from under an import of the same name
        folder = datasets / name
        if not folder.is_dir():
            raise DatasetError(f"no imported dataset called {name!r}")
        shutil.rmtree(folder)
        drop_stale_stores(root, name)
