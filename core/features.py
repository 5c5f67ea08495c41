"""Inputs for training and extraction: raw images, or cached features of a frozen prefix.

A frozen backbone (or the frozen first blocks of one) computes the same thing every epoch, every
stage and every run on the same data. `cached_prefix_features` computes it once per (prefix
weights, transform, dataset, sample ids, views) and memory-maps it from EMBEDLAB_HOME as float16,
so head-only training, LaCViT stage 2 and repeated comparisons cost almost nothing.

View 0 is the deterministic eval transform (evaluation and class means only). The training split
also caches a bank of K augmented views (views 1..K, `TrainConfig.feature_views`), and every step
draws its views from that bank at random (`pick_views`) with the run's generator: each epoch sees
other pairs, and view 0 is never drawn for training. The bank itself is drawn with a seed derived
from the run's seed, which is part of the cache key: runs with the same seed and inputs (the CE,
LaCViT and FLYP runs of one comparison) share one bank, runs with other seeds get banks of their own.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .datasets import Split
from .diskio import NpyWriter, clean_stale_temps
from .paths import subdir
from .transforms import Preprocess

_logger = logging.getLogger(__name__)
_AUG_SEED = 10_007  # mixed with the run's seed: the seed of a cached bank of augmented views
_CACHE_VERSION = 3  # bump when cached features change meaning (v2: frozen backbones cached in eval mode;
#                     v3: views 1.. are a per-seed bank of SupCon-strength augmentations)


def bank_seed(seed: int) -> int:
    """The generator seed of the augmented-view bank of a run with seed `seed`."""
    return _AUG_SEED + 1_000_003 * int(seed)


def pick_views(k: int, n_views: int | None, generator: torch.Generator) -> list[int]:
    """Views for one training step.

    Images (n_views None): 1..k, each a fresh augmentation. Cached features (n_views = 1 + K:
    view 0 clean, views 1..K the augmented bank): k distinct bank views at random; with K < k,
    bank views drawn with repetition; with no bank (K = 0), the clean view k times.
    """
    if n_views is None:
        return list(range(1, k + 1))
    bank = n_views - 1
    if bank < 1:
        return [0] * k
    if bank < k:
        return (1 + torch.randint(bank, (k,), generator=generator)).tolist()
    return (1 + torch.randperm(bank, generator=generator)[:k]).tolist()


class ImageSource:
    """Model inputs straight from uint8 images: preprocessing (and augmentation) per batch."""

    def __init__(self, split: Split, preprocess: Preprocess, device: torch.device):
        self.split, self.preprocess, self.device = split, preprocess, device
        self.images = torch.from_numpy(np.ascontiguousarray(split.images))  # [N, H, W, C] uint8, stays on CPU
        self.n_views = None  # unlimited fresh augmentations

    def get(self, rows: torch.Tensor, view: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """rows: [B] positions in the split; view 0 = eval transform, >0 = a fresh augmentation."""
        batch = self.images[rows]
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        if view == 0:
            return self.preprocess.eval(batch)
        return self.preprocess.train(batch, generator)


class CachedSource:
    """Model inputs from cached prefix features `[V, N, ...]` (float16 memmap)."""

    def __init__(self, features: np.ndarray, device: torch.device):
        self.features, self.device = features, device
        self.n_views = features.shape[0]

    def get(self, rows: torch.Tensor, view: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """rows: [B] positions in the split; view: which cached view (0 = eval transform)."""
        batch = torch.from_numpy(np.ascontiguousarray(self.features[view, rows.numpy()]))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        return batch.float()


def cached_prefix_features(prefix: torch.nn.Module, prefix_key: str, split: Split, preprocess: Preprocess,
                           views: int, device: torch.device, cache_root: Path, *, batch_size: int = 128,
                           seed: int = 0, on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Features of the frozen `prefix` for every image of `split` and `views` views, cached on disk.

    views: 1 (the clean eval view only) or 1 + K (a bank of K augmented views drawn from `seed`).
    """
    ids_hash = hashlib.sha1(np.ascontiguousarray(split.ids).data).hexdigest()[:12]
    aug = bank_seed(seed) if views > 1 else "-"  # the clean view alone does not depend on the seed
    key = hashlib.sha1(f"v{_CACHE_VERSION}|{prefix_key}|{preprocess.key()}|{split.data.fingerprint}|{ids_hash}|{views}|{aug}".encode()).hexdigest()[:20]
    path = subdir(cache_root, "features") / f"{key}.npy"
    if path.exists():
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError):  # a torn file from a killed process: rebuild it
            path.unlink(missing_ok=True)
    clean_stale_temps(path.parent)  # what a killed process was writing
    source = ImageSource(split, preprocess, device)
    n = len(split)
    out = None  # plain buffered writes, never a memory map: a full disk must raise, not SIGBUS the server
    generator = torch.Generator().manual_seed(bank_seed(seed))
    was = prefix.training
    prefix.eval()
    done, total = 0, n * views
    try:
        with torch.inference_mode():
            for v in range(views):
                for start in range(0, n, batch_size):
                    rows = torch.arange(start, min(n, start + batch_size))
                    feats = prefix(source.get(rows, v, generator)).to(torch.float16).cpu().numpy()
                    if out is None:  # checks the free space for the whole array first
                        out = NpyWriter(path, (views, n, *feats.shape[1:]), np.float16, what="cached features")
                    out.write(feats)  # views then rows: the array's own (C) order
                    done += len(rows)
                    if on_progress:  # may raise to cancel the run: the except below cleans up
                        on_progress(done, total)
        out.commit()  # atomic rename: readers never see a half-written cache
    except BaseException:
        if out is not None:
            out.abort()  # a cancel, a crash or a full disk mid-way leaves no half-written file in the cache
        raise
    finally:
        prefix.train(was)
    _logger.info("cached %s prefix features for %d images x %d views -> %s", prefix_key, n, views, path.name)
    return np.load(path, mmap_mode="r")
