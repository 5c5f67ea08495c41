"""Shifted test splits: the out-of-distribution (OOD) half of every run's evaluation.

    shifted_split(parts["test"], "default")   -> Split "ood": the test images, corrupted
    resolve("gaussian_blur:4", "fashion-mnist") -> ShiftSpec, checked (a bad name is one clear line)

FLYP and WiSE-FT judge fine-tuning on two axes: accuracy in distribution (val) and under a
distribution shift. Most datasets here have no shifted test set of their own, so EmbedLab makes
one the way ImageNet-C / CIFAR-10-C do (Hendrycks & Dietterich, 2019): the test images under a
common corruption at a severity 1-5. The severities follow CIFAR-10-C's constants (the images
here are 8-32 px like CIFAR's; the blur radius grows with the image side beyond 32 px).

    gaussian_noise  additive N(0, sigma), sigma = .04 .06 .08 .09 .10 of the range
    gaussian_blur   Gaussian blur, sigma = .4 .6 .7 .8 1.0 px (x side / 32 above 32 px)
    contrast        pixels pulled to the image mean, factor .75 .5 .4 .3 .15
    jpeg            JPEG round trip at quality 80 65 58 50 40
    inversion       blend towards the negative, weight .6 .7 .8 .9 1.0 (not in -C: a shift of the
                    colour axis itself, which clean training never sees)

Shift names: `default` (the dataset's natural shift if it has one, else `mix:3`), `mix[:S]` (each
test image gets one corruption of the five, drawn from its sample id, at severity S), `NAME[:S]`
(one corruption for every image, severity 3 unless given) and `natural` (the dataset's own shift:
`mnist-stripes` trains on white stripes and tests on yellow ones, so its OOD split is its test split
as it is). Every random choice is seeded by the sample id, never by a global RNG: the same image is
corrupted the same way in every run, process and subset (same bytes twice), and a run's OOD split
caches like any other split.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .datasets import ImageData, Split
from .errors import InvalidConfig, UnknownName

SEED = 20_190_328  # mixed with each sample id (ImageNet-C's arXiv date): fixed, so shifts are shared across runs
DEFAULT_SEVERITY = 3
_VERSION = 2  # bump when a corruption changes its pixels: cached OOD features are keyed by it


def _gaussian_noise(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1] * 255
    return img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32)


def _gaussian_blur(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import ImageFilter

    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1] * max(1.0, img.shape[0] / 32)
    return _from_pil(_to_pil(img).filter(ImageFilter.GaussianBlur(radius=sigma)), img)


def _contrast(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    x = img.astype(np.float32)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return (x - mean) * c + mean


def _jpeg(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    _to_pil(img).save(buf, format="JPEG", quality=(80, 65, 58, 50, 40)[severity - 1])
    buf.seek(0)
    with Image.open(buf) as im:
        return _from_pil(im.convert("L" if img.shape[2] == 1 else "RGB"), img)


def _inversion(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    w = (0.6, 0.7, 0.8, 0.9, 1.0)[severity - 1]
    x = img.astype(np.float32)
    return (1 - w) * x + w * (255.0 - x)


Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]  # [H, W, C] uint8 -> float or uint8
CORRUPTIONS: dict[str, tuple[Corruption, str]] = {
    "gaussian_noise": (_gaussian_noise, "additive Gaussian noise (ImageNet-C / CIFAR-10-C)"),
    "gaussian_blur": (_gaussian_blur, "Gaussian blur (ImageNet-C / CIFAR-10-C)"),
    "contrast": (_contrast, "lower contrast (ImageNet-C / CIFAR-10-C)"),
    "jpeg": (_jpeg, "JPEG compression artefacts (ImageNet-C / CIFAR-10-C)"),
    "inversion": (_inversion, "blend towards the negative image"),
}
NATURAL: dict[str, str] = {  # dataset -> its own shift (the test split is already shifted)
    "mnist-stripes": "yellow stripes in test (white in train / val)",
}


@dataclass(frozen=True)
class ShiftSpec:
    """A resolved shift: `kind` natural | mix | a corruption name; severity 1..5 (None for natural)."""

    kind: str
    severity: int | None = None

    @property
    def name(self) -> str:
        """Canonical name, as runs record it (`ood_shift`)."""
        return self.kind if self.severity is None else f"{self.kind}:{self.severity}"


def list_shifts() -> dict[str, str]:
    """Shift name -> one line, for `python -m core shifts` and the Train page."""
    out = {"default": "the dataset's natural shift if it has one, else mix:3",
           "mix": "each test image gets one of the corruptions below, chosen by its sample id"}
    out.update({name: desc for name, (_, desc) in CORRUPTIONS.items()})
    out["natural"] = "the dataset's own shift: " + "; ".join(f"{d}: {s}" for d, s in NATURAL.items())
    return out


def resolve(shift: str, dataset: str) -> ShiftSpec:
    """Parse 'NAME' or 'NAME:S' for `dataset`; UnknownName / InvalidConfig with one clear line."""
    text = str(shift).strip().lower() or "default"
    name, _, sev = text.partition(":")
    if name == "default":
        if sev:
            raise InvalidConfig("shift 'default' takes no severity; use mix:S or NAME:S")
        return ShiftSpec("natural") if dataset in NATURAL else ShiftSpec("mix", DEFAULT_SEVERITY)
    if name == "natural":
        if dataset not in NATURAL:
            raise InvalidConfig(f"dataset {dataset!r} has no natural shift (only {', '.join(NATURAL)} has); "
                                f"use a corruption: {', '.join(['mix', *CORRUPTIONS])}")
        if sev:
            raise InvalidConfig("the natural shift takes no severity")
        return ShiftSpec("natural")
    if name != "mix" and name not in CORRUPTIONS:
        raise UnknownName(f"unknown shift {shift!r}; choose from: {', '.join(list_shifts())} (corruptions take :1..:5)")
    try:
        severity = int(sev) if sev else DEFAULT_SEVERITY
    except ValueError:
        raise InvalidConfig(f"shift severity must be a whole number 1..5, not {sev!r}") from None
    if not 1 <= severity <= 5:
        raise InvalidConfig(f"shift severity must be in 1..5, not {severity}")
    return ShiftSpec(name, severity)


def shift_images(images: np.ndarray, ids: np.ndarray, spec: ShiftSpec) -> np.ndarray:
    """`images` [N, H, W, C] uint8 of samples `ids`, shifted by `spec` (a new array; natural: a copy)."""
    images = np.asarray(images)
    if spec.kind == "natural":
        return images.copy()
    out = np.empty_like(images)
    names = list(CORRUPTIONS)
    for k, (img, sample_id) in enumerate(zip(images, np.asarray(ids, dtype=np.int64))):
        # this image's own streams (any subset, same bytes): which corruption, then its noise; so a mix image
        # is exactly what that corruption alone makes of it
        which = spec.kind
        if spec.kind == "mix":
            which = names[int(np.random.default_rng([SEED, int(sample_id), 0]).integers(len(names)))]
        shifted = CORRUPTIONS[which][0](img, spec.severity, np.random.default_rng([SEED, int(sample_id), 1]))
        out[k] = np.clip(np.rint(shifted), 0, 255).astype(np.uint8)
    return out


@dataclass
class ShiftedSplit(Split):
    """A split whose pixels are the shifted copies of its samples' images (ids stay the dataset's ids,
    so an OOD point lines up with its clean test twin in Explore and Compare)."""

    pixels: np.ndarray | None = None

    @property
    def images(self) -> np.ndarray:
        return self.pixels


def shifted_split(test: Split, shift: str) -> Split:
    """The OOD split of a run: `test` under `shift` (see resolve), named 'ood'."""
    spec = resolve(shift, test.data.name)
    if spec.kind == "natural":
        return Split(test.data, "ood", test.ids)  # the test split is the shifted one: same pixels, same cache
    # same arrays, own fingerprint: the feature cache keys on it, so OOD features never collide with test's
    tag = hashlib.sha1(f"{test.data.fingerprint}|shift-v{_VERSION}|{spec.name}|{SEED}".encode()).hexdigest()[:16]
    data = dataclasses.replace(test.data, _fingerprint=tag)
    return ShiftedSplit(data, "ood", test.ids, pixels=shift_images(test.images, test.ids, spec))


class ShiftedImages:
    """`data.images` as the OOD split shows it: indexing with sample ids returns their shifted pixels
    (for thumbnails and image grids; per-id seeding makes any subset match the run's own OOD split)."""

    def __init__(self, data: ImageData, shift: str):
        self.data, self.spec = data, resolve(shift, data.name)
        self.shape, self.dtype, self.ndim = data.images.shape, data.images.dtype, data.images.ndim

    def __len__(self) -> int:
        return len(self.data.images)

    def __getitem__(self, ids) -> np.ndarray:
        picked = np.arange(len(self))[ids]
        rows = np.atleast_1d(picked)
        out = shift_images(self.data.images[rows], rows, self.spec)
        return out[0] if np.ndim(picked) == 0 else out

    def __array__(self, dtype=None, copy=None):  # a whole-array read (sprite sheets of every id)
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def shifted_view(data: ImageData, shift: str) -> ImageData:
    """`data` with its images seen through `shift` (lazy; fingerprint of its own for thumbnail caches)."""
    spec = resolve(shift, data.name)
    if spec.kind == "natural":
        return data
    tag = hashlib.sha1(f"{data.fingerprint}|shift-v{_VERSION}|{spec.name}|{SEED}".encode()).hexdigest()[:16]
    view = dataclasses.replace(data, _fingerprint=tag)
    view.images = ShiftedImages(data, shift)
    return view


def _to_pil(img: np.ndarray):
    from PIL import Image

    return Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)


def _from_pil(im, like: np.ndarray) -> np.ndarray:
    return np.asarray(im, dtype=np.uint8).reshape(like.shape)
