"""Builders for the reliability tests: tiny images, hostile zips, tiny real training configs."""
from __future__ import annotations

import hashlib
import io
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# a real training run in well under a second once torch is warm: test_vit (0.4M params) on 8x8 digits
TINY_RUN = dict(backbone="test_vit", dataset="digits", n_per_class=10, eval_per_class=4, batch_size=8, trainable="all")
OOM_ADVICE = "out of memory at batch size 8: lower the batch size (or the image size) and try again"


def png(colour=(200, 30, 30), size=(12, 12), seed: int | None = None) -> bytes:
    """A small PNG: a flat colour, or noise when `seed` is given (distinct files)."""
    if seed is None:
        im = Image.new("RGB", size, colour)
    else:
        im = Image.fromarray((np.random.default_rng(seed).random((*size[::-1], 3)) * 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def classes(spec: dict[str, int], start: int = 0) -> dict[str, bytes]:
    """{'cats/0.png': ..., ...}: `n` distinct PNGs per class."""
    out, k = {}, start
    for cls, n in spec.items():
        for i in range(n):
            out[f"{cls}/{i}.png"] = png(seed=k)
            k += 1
    return out


def make_zip(path: Path, entries: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)  # ZipInfo keeps the name as given ('../x', '/abs', 'C:/x')
            info.compress_type = compression
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            z.writestr(info, data)
    return path


def add_symlink(path: Path, name: str, target: str) -> None:
    with zipfile.ZipFile(path, "a") as z:
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, target)


def patch_central(path: Path, name: str, *, file_size: int | None = None, flag_bits: int | None = None) -> None:
    """Rewrite a central-directory field of entry `name`: the 'lying header' and 'encrypted' cases."""
    raw = bytearray(path.read_bytes())
    pos = 0
    while (j := raw.find(b"PK\x01\x02", pos)) >= 0:
        n = struct.unpack_from("<H", raw, j + 28)[0]
        if raw[j + 46:j + 46 + n] == name.encode():
            if file_size is not None:
                struct.pack_into("<I", raw, j + 24, file_size)
            if flag_bits is not None:
                struct.pack_into("<H", raw, j + 8, flag_bits)
        pos = j + 4
    path.write_bytes(bytes(raw))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height (a decompression bomb by its header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def png16(arr: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG (colour type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA) from a uint16 array."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha1} of every file under `folder` (dirs as 'dir'): to prove nothing changed."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): ("dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*"))}


class Upload:
    """What st.file_uploader hands the page: a name and the bytes."""

    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


class InstantTrain:
    """A stand-in for core.train.train that finishes at once (the UI tests check queueing, not training)."""

    def __init__(self):
        self.configs = []

    def __call__(self, cfg, *, store, run_id, root, on_event, should_stop, resume):
        self.configs.append(cfg)
        store.set_status(run_id, "running")
        store.update_summary(run_id, {"val_acc": 0.5, "steps": cfg.steps})
        store.set_status(run_id, "finished")
        return {"run_id": run_id, "status": "finished", "error": None, "val_acc": 0.5, "steps": cfg.steps}
