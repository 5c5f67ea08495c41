"""Thumbnails of dataset images: sprite sheets for hover previews, small PNGs for grids and reports.

A sheet holds `PER_SHEET` consecutive sample ids (sheet k = ids k*256 ... k*256+255) as a 16 x 16
grid of square tiles, so a browser fetches one PNG per 256 samples, lazily, only for the sheets
the user hovers into, and caches it. Sheets are written once per dataset fingerprint and tile size
and never change afterwards.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SHEET_COLS = 16  # tiles per sheet row
PER_SHEET = SHEET_COLS * SHEET_COLS  # sample ids per sheet
MAX_TILE = 64  # largest tile side in pixels


def tile_size(images: np.ndarray) -> int:
    """Native size for small images (the browser upscales them, pixelated), MAX_TILE for large ones."""
    side = int(max(images.shape[1], images.shape[2]))
    return min(side, MAX_TILE)


def _to_pil(img: np.ndarray, size: int, mode: str = "RGB"):
    from PIL import Image

    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    im = Image.fromarray(arr.astype(np.uint8))
    resample = Image.Resampling.NEAREST if max(im.size) <= size else Image.Resampling.LANCZOS
    if im.size != (size, size):
        im = im.resize((size, size), resample)
    return im.convert(mode)


def display_images(images: np.ndarray, size: int = 84) -> list[np.ndarray]:
    """RGB uint8 arrays at `size` px (nearest-neighbour upscaling keeps digits crisp)."""
    return [np.asarray(_to_pil(img, size)) for img in images]


def write_sheets(images: np.ndarray, ids: np.ndarray, folder: Path, *, tile: int | None = None) -> dict:
    """Write the sprite sheets covering `ids` (skipping sheets already on disk) into `folder`.

    Args:
        images: the whole dataset's images [N, H, W, C] uint8 (indexed by sample id).
        ids: the sample ids that will be shown.
        folder: where `sheet-<k>.png` files go.
        tile: tile side in px (default: tile_size(images)).
    Returns:
        {"tile", "cols", "per_sheet", "sheets": number written now}
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tile = tile or tile_size(images)
    mode = "L" if images.ndim == 3 or images.shape[-1] == 1 else "RGB"  # greyscale sheets are 3x smaller
    written = 0
    for k in np.unique(np.asarray(ids, dtype=np.int64) // PER_SHEET):
        path = folder / f"sheet-{int(k)}.png"
        if path.exists():
            continue
        sheet = Image.new(mode, (SHEET_COLS * tile, SHEET_COLS * tile), 255 if mode == "L" else (255, 255, 255))
        start = int(k) * PER_SHEET
        for j, sid in enumerate(range(start, min(start + PER_SHEET, len(images)))):
            sheet.paste(_to_pil(images[sid], tile, mode), ((j % SHEET_COLS) * tile, (j // SHEET_COLS) * tile))
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        sheet.save(tmp, format="PNG")
        os.replace(tmp, path)
        written += 1
    return {"tile": tile, "cols": SHEET_COLS, "per_sheet": PER_SHEET, "sheets": written}
