"""What a run writes besides its checkpoint: embeddings before / after fine-tuning and val snapshots,
within the run folder's disk budget (EMBEDLAB_RUN_DISK_MB; past it they are skipped with a warning,
checkpoints never are: resume needs them).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .diskio import ensure_free
from .embeddings import compute_embeddings, embeddings_dir, save_embeddings
from .errors import InvalidConfig
from .objectives import objective_entry
from .spaces import apply_nearest_class_mean

_logger = logging.getLogger(__name__)

RUN_DISK_ENV = "EMBEDLAB_RUN_DISK_MB"  # per-run artifact budget; past it snapshots / embeddings are skipped
DEFAULT_RUN_DISK_MB = 500.0


def run_disk_budget() -> int | None:
    """Bytes a run's folder may hold (EMBEDLAB_RUN_DISK_MB, default 500; 0 = no limit)."""
    raw = os.environ.get(RUN_DISK_ENV, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_RUN_DISK_MB
    except ValueError:
        raise InvalidConfig(f"{RUN_DISK_ENV} must be a number of megabytes, not {raw!r}") from None
    if not math.isfinite(mb) or mb < 0:
        raise InvalidConfig(f"{RUN_DISK_ENV} must be a number of megabytes >= 0, not {raw!r}")
    return None if mb == 0 else int(mb * 2**20)


def store_embeddings(s, phase: str, emit, stage=None, tracker=None,
                     class_means: Callable[[], np.ndarray] | None = None) -> dict:
    """Embed val, test and the shifted test split (ood), before or after fine-tuning, in every space the method
    has (core/spaces.py). Before-predictions are the before model's own: zero-shot where it is a classifier,
    else the nearest class mean (`class_means()`: [C, D] encoder-space means of training images) in the
    encoder space, since an untrained head predicts noise."""
    out = {}
    means = None
    for split in ("val", "test", "ood"):
        target = embeddings_dir(s.run_dir, phase, split)
        emit({"type": "prepare", "what": f"embedding {split} ({phase})", "done": 0, "total": len(s.parts[split])})
        es = compute_embeddings(s.method, s.sources[split], s.parts[split], s.device, stage=stage if phase == "after" else None,
                                amp=s.cfg.amp)
        if phase == "before" and objective_entry(s.cfg.objective).has_zero_shot(s.cfg):
            es.pred_source = "zero-shot"
        elif phase == "before":
            if means is None and class_means is not None:
                means = class_means()
            if means is not None:
                apply_nearest_class_mean(es, means)
            else:
                es.preds = None  # no class means to predict from: an untrained head predicts nothing meaningful
        save_within_budget(s.run_dir, target, es, f"the {phase} {split} embeddings", tracker)
        out[split] = es
    return out


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (files removed meanwhile count 0)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def save_within_budget(run_dir: Path, folder: Path, es, what: str, tracker) -> bool:
    """save_embeddings unless it would take the run folder past its disk budget (or the disk is full):
    then skip it with a warning in the run's summary. Checkpoints are never skipped (resume needs them)."""
    budget = run_disk_budget()
    need = sum(a.nbytes for a in (es.ids, es.labels, es.preds, es.anchors, *es.vectors.values()) if a is not None)
    if budget is not None and folder_bytes(run_dir) + need > budget:
        message = (f"skipped {what}: the run folder would pass its disk budget of {budget / 2**20:g} MB "
                   f"({RUN_DISK_ENV})")
    else:
        try:
            ensure_free(run_dir, need + (1 << 16), what)  # DiskFull is an OSError: skipped with the message below
            save_embeddings(folder, es)
            return True
        except OSError as exc:  # disk full, quota
            shutil.rmtree(folder.with_name(folder.name + f".tmp{os.getpid()}"), ignore_errors=True)
            message = f"skipped {what}: {exc.strerror or exc}"
    if tracker is not None:
        tracker.warn(message)
    else:
        _logger.warning(message)
    return False
