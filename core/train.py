"""One training loop for every objective.

    $ python -m core train --backbone test_vit --dataset mnist5k --objective lacvit --steps 20

`train(cfg, store=..., run_id=...)` reads top to bottom: set up (device, seed, data, backbone,
method, inputs), evaluate at step 0, then for each stage of the objective: get the learning rate,
draw a batch, forward + loss, check it is finite, backward, step, log, evaluate and checkpoint
every `eval_every` steps; finally store embeddings before/after, WiSE-FT for FLYP, and a summary.
It emits plain dict events (`stage`, `step`, `eval`, `done`) and checks a cancel flag every step.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import numbers
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import backbones as bb
from . import datasets as ds
from . import distributed
from . import paths
from . import shifts
from .device import autocast, autocast_dtype, configure_threads, pick_device
from .diskio import ensure_free, write_atomic
from .embeddings import compute_embeddings, embeddings_dir, save_embeddings
from .errors import EmbedLabError, InvalidConfig, UnknownName, WeightsUnavailable
from .features import CachedSource, ImageSource, cached_prefix_features, pick_views
from .objectives import OBJECTIVES, Batch, Method, create_method

_logger = logging.getLogger(__name__)

Event = dict[str, Any]
CHECKPOINT = paths.CHECKPOINT  # trainable weights (+ buffers) of the method, safetensors only
TRAINER_STATE = "trainer_state.pt"  # optimizer state + position, loaded with weights_only=True
DB_FLUSH_INTERVAL_S = 1.0  # step metrics reach SQLite at most once a second (the UI polls once a second)
STOP_POLL_S = 1.0  # how often a run checks the store for a cancel asked by another process
LOG_POINTS = 200  # about this many loss points per run (every step for short runs)
RUN_DISK_ENV = "EMBEDLAB_RUN_DISK_MB"  # per-run artifact budget; past it snapshots / embeddings are skipped
DEFAULT_RUN_DISK_MB = 500.0


@dataclass
class TrainConfig:
    """Everything that defines a run; serialises to JSON and back."""

    # what
    objective: str = "ce"  # ce | lacvit | flyp (| content-style)
    backbone: str = ""  # "" = the default for the objective (offline: efficientnet_lite0 / lite0-minilm)
    weights: str = "pretrained"  # pretrained | random | path to a safetensors / state-dict file
    dataset: str = "fashion-mnist"  # any name from `python -m core datasets`
    # data
    n_per_class: int | None = 80  # training images per class (None = all)
    eval_per_class: int | None = 100  # val and test images per class (None = all); 100, not 30: on 10 classes an 80 % accuracy is ±2.5 pts (95 %), not ±4.5
    labels: int | None = None  # semi-supervised: labelled training images (None = all labelled)
    selection: str | None = None  # a data-selection id (python -m core select) restricting the train set
    image_size: int | None = None  # input resolution (None = the backbone's default)
    # budget
    steps: int | None = 60  # optimizer steps over all stages; or
    epochs: float | None = None  # passes over the training set (steps wins if both are set)
    batch_size: int = 64
    # optimisation
    lr: float = 1e-3  # heads (linear / projection)
    backbone_lr: float | None = None  # trainable backbone layers (None = lr / 10)
    weight_decay: float = 0.05
    warmup: float = 0.1  # fraction of each stage's steps spent warming up linearly
    optimizer: str = "adamw"  # adamw | sgd
    grad_clip: float = 1.0  # max gradient norm
    # fine-tuning depth: all = full fine-tuning | frozen = heads only | k = last k blocks (+ the layers after
    # them) | auto = "all" on a GPU, "1" on a CPU (where the frozen rest is cached); resolved() stores which
    trainable: str = "auto"
    # objective knobs
    temperature: float = 0.1  # LaCViT tau
    stage1_fraction: float = 0.7  # LaCViT: share of steps in the contrastive stage
    stage2_train_encoder: bool | None = None  # LaCViT stage 2 fine-tunes the encoder too (the paper); None = auto: on a GPU yes, on a CPU frozen
    probe_lr: float = 1e-2  # heads of stages with a frozen encoder (LaCViT stage 2): a linear probe takes larger steps
    cs_style_dim: int = 8  # content-style: size of the style vector (see core/content_style.py)
    cs_ce_weight: float = 1.0  # content-style: weight of CE on the labelled samples
    cs_prior_weight: float = 1.0  # content-style: weight of the content -> class-prior term (all samples)
    cs_entropy_weight: float = 1.0  # content-style: share of mean per-sample entropy inside the prior term
    cs_style_weight: float = 1.0  # content-style: weight of the style -> N(0, I) term (all samples)
    cs_recon_weight: float = 1.0  # content-style: weight of reconstructing the embedding (the latent token)
    cs_regulariser: str = "adversarial"  # content-style priors: adversarial (the paper's discriminators) | moments
    cs_recon_detach: bool = False  # content-style: detach the reconstruction target (False: the paper's)
    # machinery
    seed: int = 0
    eval_every: int | None = None  # steps between evaluations (None = about 10 per run)
    snapshots: int = 30  # val-embedding snapshots along the way (trajectory view; ~2.7 MB each on the default comparison, BENCHMARKS.md)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA
    cache_features: bool = True  # cache the frozen prefix's features (see core/features.py)
    feature_views: int = 2  # augmented views per training image in the cached bank (+ the clean eval view); K measured in BENCHMARKS.md
    wise_alphas: int = 11  # FLYP WiSE-FT: alphas 0, 0.1, ..., 1
    ce_zero_shot_head: bool = False  # CE on a backbone with a text tower: start from the zero-shot head (+ a WiSE-FT sweep)
    shift: str = "default"  # the OOD split: a shift of the test split (core/shifts.py; default: natural, else mix:3)
    ddp: bool = False  # data-parallel over torchrun processes (see core/distributed.py)
    experiment: str | None = None  # tag shared by the runs of one label / budget curve (core/curves.py)
    eval_test: bool = False  # also log test accuracy at every evaluation (label curves: best-on-val error)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InvalidConfig(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def resolved(self) -> TrainConfig:
        """Fill in defaults that depend on the environment: the backbone, and the fine-tuning depth (full
        fine-tuning on a GPU; on a CPU the last block over cached features and a frozen LaCViT stage 2)."""
        changes = {}
        if not self.backbone:
            changes["backbone"] = bb.default_backbone(self.objective)
        if self.trainable == "auto" or self.stage2_train_encoder is None:
            gpu = _on_gpu(self.device)
            if self.trainable == "auto":
                changes["trainable"] = "all" if gpu else "1"
            if self.stage2_train_encoder is None:
                changes["stage2_train_encoder"] = gpu
        return dataclasses.replace(self, **changes) if changes else self


def _on_gpu(device: str) -> bool:
    try:
        return pick_device(device).type == "cuda"
    except (InvalidConfig, RuntimeError):  # a bad device string: validate() reports it
        return False


# ------------------------------------------------------------------------------ validation
@dataclass(frozen=True)
class Range:
    """Where a numeric setting may lie: [lo, hi], an end left open with `open_lo` / `open_hi`."""

    lo: float
    hi: float
    whole: bool = False  # a whole number (not a bool, not a float)
    open_lo: bool = False
    open_hi: bool = False

    def problem(self, label: str, value) -> str | None:
        kind = "a whole number" if self.whole else "a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if self.whole else numbers.Real):
            return f"{label} must be {kind}, not {value!r}"
        if not self.whole and not math.isfinite(value):
            return f"{label} must be a finite number, not {value}"
        if value < self.lo or value > self.hi or (self.open_lo and value == self.lo) or (self.open_hi and value == self.hi):
            lo, hi = ("(" if self.open_lo else "[") + _plain(self.lo), _plain(self.hi) + (")" if self.open_hi else "]")
            shown = value if abs(value) < 1e15 else f"{value:.3g}"  # 10**23 typed by mistake: not 24 digits back
            return f"{label} must be {kind} in {lo}, {hi}, not {shown}"
        return None


def _plain(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


MAX_STEPS = 10**7  # a week of fast steps; past it a typo, and numpy / SQLite would overflow int64 anyway
# Every numeric TrainConfig field with a range: checked by validate() (None = "use the default" is skipped).
# A new numeric setting adds its row here.
RANGES: dict[str, tuple[str, Range]] = {
    "steps": ("steps", Range(1, MAX_STEPS, whole=True)),
    "epochs": ("epochs", Range(0, 10_000, open_lo=True)),
    "batch_size": ("batch size", Range(2, 65_536, whole=True)),
    "n_per_class": ("n per class", Range(1, 10**7, whole=True)),
    "eval_per_class": ("eval per class", Range(1, 10**7, whole=True)),
    "labels": ("labels", Range(1, 10**8, whole=True)),
    "image_size": ("image size", Range(16, 1024, whole=True)),
    "lr": ("learning rate", Range(0, 100, open_lo=True)),
    "backbone_lr": ("backbone learning rate", Range(0, 100)),
    "probe_lr": ("probe learning rate", Range(0, 100, open_lo=True)),
    "weight_decay": ("weight decay", Range(0, 100)),
    "grad_clip": ("gradient clip", Range(0, 1e6)),
    "temperature": ("temperature", Range(1e-4, 100)),
    "stage1_fraction": ("stage 1 fraction", Range(0, 1, open_lo=True, open_hi=True)),
    "seed": ("seed", Range(0, 2**32 - 1, whole=True)),
    "eval_every": ("eval every", Range(1, MAX_STEPS, whole=True)),
    "snapshots": ("snapshots", Range(0, 1000, whole=True)),
    "feature_views": ("feature views (augmented views cached per image)", Range(0, 32, whole=True)),
    "wise_alphas": ("WiSE-FT alphas", Range(0, 1001, whole=True)),
}


def check_ranges(cfg) -> None:
    """InvalidConfig for the first setting outside its RANGES row."""
    for name, (label, rng) in RANGES.items():
        value = getattr(cfg, name, None)
        if value is not None and (problem := rng.problem(label, value)):
            raise InvalidConfig(problem)


def validate(cfg: TrainConfig, root: Path | None = None) -> TrainConfig:
    """Check every setting before anything is queued; raise InvalidConfig / UnknownName with one clear line."""
    from .paths import check_writable, home

    check_writable(Path(root) if root else home())  # a read-only home: refused before anything is queued
    cfg = cfg.resolved()
    if cfg.objective not in OBJECTIVES:
        raise UnknownName(f"unknown objective {cfg.objective!r}; choose from: {', '.join(OBJECTIVES)}")
    _check_number("learning rate", cfg.lr, positive=True)
    _check_number("probe learning rate", cfg.probe_lr, positive=True)
    if cfg.backbone_lr is not None:
        _check_number("backbone learning rate", cfg.backbone_lr, positive=True, allow_zero=True)
    _check_number("weight decay", cfg.weight_decay, positive=True, allow_zero=True)
    _check_number("temperature", cfg.temperature, positive=True)
    if not 0 <= cfg.warmup < 1:
        raise InvalidConfig(f"warmup must be a fraction in [0, 1), not {cfg.warmup}")
    if cfg.steps is None and cfg.epochs is None:
        raise InvalidConfig("set a budget: --steps S or --epochs E")
    if cfg.steps is not None and (not isinstance(cfg.steps, int) or cfg.steps <= 0):
        raise InvalidConfig(f"steps must be a positive whole number, not {cfg.steps}")
    if cfg.steps is None:
        _check_number("epochs", cfg.epochs, positive=True)
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 2:
        raise InvalidConfig(f"batch size must be at least 2, not {cfg.batch_size}")
    if cfg.optimizer not in ("adamw", "sgd"):
        raise InvalidConfig(f"optimizer must be adamw or sgd, not {cfg.optimizer!r}")
    for name in ("n_per_class", "eval_per_class", "labels"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise InvalidConfig(f"{name.replace('_', ' ')} must be a positive whole number, not {value}")
    check_ranges(cfg)
    pick_device(cfg.device)  # a typo or a missing GPU: refused now, not when the run starts
    bb.parse_trainable(cfg.trainable)
    problem = bb.check_name(cfg.backbone)
    if problem:
        raise UnknownName(problem)
    if cfg.weights not in ("pretrained", "random", ""):
        _check_weights_file(cfg.weights, cfg.backbone, cfg.image_size)  # before any run exists; safe loaders only
    run_disk_budget()  # a bad EMBEDLAB_RUN_DISK_MB is a setting error too
    if OBJECTIVES[cfg.objective].needs_clip and not bb.is_clip_name(cfg.backbone):
        raise InvalidConfig(f"{cfg.objective} needs a CLIP-style backbone with a text tower; {cfg.backbone!r} has none "
                            "(try lite0-minilm, test_clip or an open_clip MODEL/PRETRAINED name)")
    if cfg.ce_zero_shot_head and (cfg.objective != "ce" or not bb.is_clip_name(cfg.backbone)):
        raise InvalidConfig("a zero-shot CE head needs objective ce and a backbone with a text tower "
                            f"(lite0-minilm, test_clip or an open_clip name), not {cfg.objective} on {cfg.backbone!r}")
    if cfg.objective == "flyp" and bb.parse_trainable(cfg.trainable) == 0:
        raise InvalidConfig("FLYP fine-tunes the encoders: set trainable to 'all' or a number of last blocks, not 'frozen'")
    data = ds.load_dataset(cfg.dataset, root)
    shifts.resolve(cfg.shift, data.name)
    parts = ds.splits(data, n_per_class=cfg.n_per_class, eval_per_class=cfg.eval_per_class, labels=cfg.labels,
                      seed=cfg.seed, selection=_selection_ids(cfg, root))
    n_train = len(parts["train"]) if cfg.labels is None or cfg.objective == "content-style" else int(parts["train"].labelled.sum())
    if cfg.batch_size > n_train:
        raise InvalidConfig(f"batch size {cfg.batch_size} is larger than the {n_train} training images; lower it to at most {n_train}")
    if len(parts["val"]) == 0:
        raise InvalidConfig(f"dataset {cfg.dataset!r} has no validation images; add more images per class")
    if len(np.unique(parts["train"].labels)) < 2:
        raise InvalidConfig(f"dataset {cfg.dataset!r} needs at least 2 classes with training images")
    if cfg.objective == "content-style":
        from .content_style import check_config

        check_config(cfg)
    return cfg


def _check_number(name: str, value, *, positive: bool = False, allow_zero: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidConfig(f"{name} must be a finite number, not {value}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise InvalidConfig(f"{name} must be {'>= 0' if allow_zero else '> 0'}, not {value}")


def _check_weights_file(path: str, backbone: str, image_size: int | None) -> None:
    """WeightsUnavailable unless `path` reads as tensors with the safe loaders (see bb.read_state_dict)
    and their names and shapes fit `backbone`."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError:
        raise WeightsUnavailable(f"weights file {path} does not exist") from None
    if p.is_dir():
        bb.read_state_dict(p)  # its own message: a directory, not a weights file
    _weights_fit(str(p.resolve()), st.st_size, st.st_mtime_ns, backbone, image_size)


@functools.lru_cache(maxsize=8)
def _weights_fit(path: str, size: int, mtime_ns: int, backbone: str, image_size: int | None) -> bool:
    bb.check_weights_file(backbone, path, image_size)  # size / mtime in the key: a changed file is re-checked
    return True


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


def _selection_ids(cfg: TrainConfig, root: Path | None) -> np.ndarray | None:
    if not cfg.selection:
        return None
    from .selection import load_selection

    return load_selection(cfg.selection, root)


# ----------------------------------------------------------------------------- the run state
@dataclass
class Session:
    """Everything a run builds before its first step."""

    cfg: TrainConfig
    device: torch.device
    data: ds.ImageData
    parts: dict[str, ds.Split]
    backbone: bb.Backbone
    method: Method
    sources: dict[str, Any]  # split name -> ImageSource | CachedSource
    train_rows: np.ndarray  # positions in the train split that this objective trains on
    total_steps: int
    run_dir: Path | None = None
    extra: dict = field(default_factory=dict)


def build_session(cfg: TrainConfig, root: Path | None = None, run_dir: Path | None = None,
                  emit: Callable[[Event], None] = lambda e: None,
                  ctx: distributed.DistContext = distributed.DistContext()) -> Session:
    """Device, seed, data, backbone, method and input sources for `cfg` (already validated)."""
    from .paths import home

    root = root or home()
    cfg = cfg.resolved()  # a no-op for a validated config; callers that skip validate() get the same defaults
    configure_threads(ctx.world)
    device = pick_device(cfg.device)
    if device.type == "cuda" and ctx.world > 1:
        device = torch.device("cuda", ctx.local_rank)
    torch.manual_seed(cfg.seed)
    data = ds.load_dataset(cfg.dataset, root)
    parts = ds.splits(data, n_per_class=cfg.n_per_class, eval_per_class=cfg.eval_per_class, labels=cfg.labels,
                      seed=cfg.seed, selection=_selection_ids(cfg, root))
    parts["ood"] = shifts.shifted_split(parts["test"], cfg.shift)  # through the same input path as test
    backbone = bb.create_backbone(cfg.backbone, weights=cfg.weights, image_size=cfg.image_size, trainable=cfg.trainable)
    backbone.preprocess = dataclasses.replace(backbone.preprocess, hflip=data.hflip)
    backbone.to(device).use_channels_last()
    split = backbone.split_image() if cfg.cache_features else None
    if split is not None:
        prefix, encoder, prefix_key = split
        sources = {}
        for name, part in parts.items():
            views = 1 + cfg.feature_views if name == "train" else 1  # train: the clean view + the augmented bank
            emit({"type": "prepare", "what": f"caching {name} features", "done": 0, "total": len(part) * views})
            feats = cached_prefix_features(prefix, prefix_key, part, backbone.preprocess, views, device, root / "cache",
                                           seed=cfg.seed,
                                           on_progress=lambda d, t, n=name: emit({"type": "prepare", "what": f"caching {n} features", "done": d, "total": t}))
            sources[name] = CachedSource(feats, device)
    else:
        encoder = bb.ImageEncoder(backbone)
        sources = {name: ImageSource(part, backbone.preprocess, device) for name, part in parts.items()}
    method = create_method(cfg.objective, backbone, encoder, data.num_classes, temperature=cfg.temperature,
                           stage1_fraction=cfg.stage1_fraction, stage2_train_encoder=cfg.stage2_train_encoder,
                           class_names=data.prompt_names, zero_shot_head=cfg.ce_zero_shot_head,
                           **{k: v for k, v in asdict(cfg).items() if k.startswith("cs_")})  # content-style knobs
    method.to(device)
    train = parts["train"]
    rows = np.arange(len(train))
    if train.labelled is not None and cfg.objective != "content-style":
        rows = rows[train.labelled]  # supervised objectives see only the labelled images
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * len(rows) / cfg.batch_size))
    return Session(cfg, device, data, parts, backbone, method, sources, rows, steps, run_dir)


# ------------------------------------------------------------------------------- the loop
class Cancelled(Exception):
    pass


class Diverged(EmbedLabError):
    pass


def train(cfg: TrainConfig, *, store=None, run_id: str | None = None, root: Path | None = None,
          on_event: Callable[[Event], None] | None = None, should_stop: Callable[[], bool] = lambda: False,
          resume: bool = False) -> dict:
    """Run one fine-tune; returns the summary dict (also stored when `store` is given).

    Exceptions inside the run end it as `failed` with a message; `should_stop()` ends it as
    `cancelled` within one step, and so does `store.request_cancel(run_id)` from another process
    (read about once a second). With `resume=True` it continues from the run's last checkpoint.
    """
    from .paths import home
    from .store import RunStore

    root = Path(root) if root else (store.root if store else home())
    cfg = validate(cfg, root)
    ctx = distributed.setup(cfg.ddp, cfg.batch_size)
    store = (store or RunStore(root)) if ctx.main else distributed.NullStore(root)
    if run_id is None:
        run_id = store.create_run(cfg.to_dict(), status="queued")
    run_dir = store.run_dir(run_id)
    store.set_status(run_id, "running")
    t0 = time.time()
    tracker = _Tracker(store, run_id, on_event if ctx.main else None, t0)
    if ctx.world == 1:  # DDP ranks must stop together: torchrun's Ctrl-C does that, a store flag would not
        should_stop = tracker.stop = _StopSignal(should_stop, store, run_id)
    try:
        summary = _run(cfg, tracker, run_dir, root, should_stop, resume, ctx)
        summary["seconds"] = round(time.time() - t0, 2)
        store.update_summary(run_id, summary)
        store.set_status(run_id, "finished")
        status, error = "finished", None
    except Cancelled:
        status, error, summary = "cancelled", "cancelled by the user", {}
        store.set_status(run_id, status, error=error)
    except (Diverged, EmbedLabError) as exc:
        status, error, summary = "failed", str(exc), {}
        store.set_status(run_id, status, error=error)
    except Exception as exc:  # a bug or a broken input must end this run, never the server
        status, summary = "failed", {}
        if _looks_like_oom(exc):
            error = f"out of memory at batch size {cfg.batch_size}: lower the batch size (or the image size) and try again"
        else:
            _logger.exception("run %s crashed", run_id)
            error = f"{type(exc).__name__}: {exc}"
        store.set_status(run_id, status, error=error)
    finally:
        try:
            tracker.flush()  # the last loss points, whatever ended the run
        except Exception:  # a store that is itself failing must not mask the run's own error
            _logger.exception("run %s: could not write its last metrics", run_id)
        distributed.teardown(ctx)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result = {"run_id": run_id, "status": status, "error": error, **summary}
    tracker.emit({"type": "done", **result})
    return result


def _run(cfg: TrainConfig, tracker: _Tracker, run_dir: Path, root: Path, should_stop, resume: bool,
         ctx: distributed.DistContext = distributed.DistContext()) -> dict:
    emit = tracker.emit
    s = build_session(cfg, root, run_dir, emit, ctx)
    method, device = s.method, s.device
    model = method if ctx.world == 1 else torch.nn.parallel.DistributedDataParallel(
        method, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    stages = method.stages()
    budgets = _stage_budgets([st.fraction for st in stages], s.total_steps)
    eval_every = cfg.eval_every or max(1, s.total_steps // 10)
    snapshot_steps = set(np.linspace(0, s.total_steps, max(2, cfg.snapshots)).round().astype(int).tolist())
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype(device) == torch.float16 and cfg.amp else None
    gen = torch.Generator().manual_seed(cfg.seed)
    fault = _fault_from_env()

    tracker.log_every = max(1, s.total_steps // LOG_POINTS)
    zero_shot_state = _trainable_state(method) if _has_zero_shot(cfg) else None  # before any update
    start_step, start_stage, opt_state = 0, 0, None
    if resume:
        start_step, start_stage, opt_state = _load_checkpoint(method, run_dir)
        tracker.summary.update({k: v for k, v in tracker.store.get(tracker.run_id).summary.items()
                                if k in ("zeroshot_acc", "zeroshot_ood_acc", "warnings")})
        if opt_state is None:
            tracker.warn(f"resumed from step {start_step} with a fresh optimizer state: the run stopped while "
                         f"writing its checkpoint ({TRAINER_STATE} missing or from another step)")
    elif ctx.main:
        before = _store_embeddings(s, "before", emit, tracker=tracker)
        if _has_zero_shot(cfg):
            zero = {"zeroshot_acc": before["val"].accuracy, "zeroshot_ood_acc": before["ood"].accuracy}
            tracker.summary.update(zero)
            tracker.store.update_summary(tracker.run_id, zero)
    step = saved_step = start_step
    val_acc = _evaluate(s, stages[start_stage], step, tracker, snapshot_steps) if ctx.main else None

    stage_start = sum(budgets[:start_stage])
    for si in range(start_stage, len(stages)):
        stage = stages[si]
        n_steps = budgets[si]
        emit({"type": "stage", "stage": stage.name, "index": si, "steps": n_steps})
        if stage.init_head_from_class_means and step == stage_start:
            # start the new head as the nearest-class-mean classifier: no accuracy cliff at the stage switch
            method.init_head_from_class_means(*_class_means(s, per_class=50))
        optimizer = _make_optimizer(cfg, method, stage)
        if opt_state is not None and si == start_stage:
            optimizer.load_state_dict(opt_state)
        order = _BatchOrder(s.train_rows, cfg.batch_size, gen)
        method.train()
        window, extras = [], []  # this log interval's losses (and extra terms), kept on device: no per-step host sync on GPU
        for local in range(step - stage_start, n_steps):
            if should_stop():
                if ctx.main and step > saved_step:  # so that resume goes on from here: a cancel loses no step
                    _save_checkpoint(method, optimizer, run_dir, step, si)
                raise Cancelled()
            lr_scale = _lr_scale(local, n_steps, cfg.warmup)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_scale
            rows = ctx.shard(order.next())
            views = pick_views(stage.views, s.sources["train"].n_views, gen)
            batch = _batch(s, rows, views, gen)
            with autocast(device, cfg.amp):
                loss = model(stage, batch)
            if fault and fault[1] == step + 1:
                loss = _inject(fault[0], loss)
            window.append(loss.detach())
            extras.append(method.step_metrics())  # e.g. content-style's discriminator losses
            if device.type == "cpu":  # checking costs nothing here; on GPU it waits for the log interval
                _check_finite(window[-1:], step + 1, run_dir / CHECKPOINT)
            optimizer.zero_grad(set_to_none=True)
            scaled = loss * ctx.grad_scale(stage.global_loss)
            if scaler:
                scaler.scale(scaled).backward()
                scaler.unscale_(optimizer)
            else:
                scaled.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            step += 1
            if len(window) >= tracker.log_every or local == n_steps - 1:
                _check_finite(window, step - len(window) + 1, run_dir / CHECKPOINT)
                mean_loss = torch.stack(window).float().mean()
                mean_loss = mean_loss if stage.global_loss else ctx.mean(mean_loss)  # local-batch losses: average ranks
                extra = {k: torch.stack([e[k] for e in extras]).float().mean().item() for k in extras[-1]} if extras else {}
                tracker.log_step(step, s.total_steps, stage.name, mean_loss.item(),
                                 optimizer.param_groups[0]["lr"], (step * cfg.batch_size) / max(1, len(s.train_rows)), extra)
                window, extras = [], []
            if ctx.main and (step % eval_every == 0 or local == n_steps - 1 or step in snapshot_steps):
                val_acc = _evaluate(s, stage, step, tracker, snapshot_steps)
                if step % eval_every == 0 or local == n_steps - 1:  # a snapshot alone writes no checkpoint (FLYP's: ~60 MB)
                    _save_checkpoint(method, optimizer, run_dir, step, si)
                    saved_step = step
        stage_start += n_steps
        opt_state = None

    if not ctx.main:
        return dict(tracker.summary)
    after = _store_embeddings(s, "after", emit, stage=stages[-1], tracker=tracker)
    summary = dict(tracker.summary)  # zero-shot accuracy and any warnings, the embeddings' own included
    summary.update(val_acc=after["val"].accuracy, test_acc=after["test"].accuracy, ood_acc=after["ood"].accuracy,
                   ood_shift=shifts.resolve(cfg.shift, s.data.name).name, steps=step,
                   train_images=len(s.train_rows), backbone=cfg.backbone, dataset=cfg.dataset, objective=cfg.objective)
    if val_acc is not None and summary["val_acc"] is None:
        summary["val_acc"] = val_acc
    if _has_zero_shot(cfg) and cfg.wise_alphas > 1:
        summary["wise_ft"] = wise_ft_curve(s, zero_shot_state, cfg.wise_alphas, emit)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


# -------------------------------------------------------------------------------- helpers
def _has_zero_shot(cfg: TrainConfig) -> bool:
    """Whether the model before any update is a classifier (FLYP, CE from the zero-shot head): then it is
    scored (zeroshot_acc, zeroshot_ood_acc) and WiSE-FT interpolates from it."""
    return cfg.objective == "flyp" or (cfg.objective == "ce" and cfg.ce_zero_shot_head)


class _StopSignal:
    """should_stop() for the loop: the caller's own flag, or a cancel that another process asked for
    through the run store (the Runs page of another server, `python -m core cancel RUN`). The store is
    read at most once per `poll_s`, so a step pays one clock read."""

    def __init__(self, local: Callable[[], bool], store, run_id: str, poll_s: float = STOP_POLL_S):
        self.local, self.store, self.run_id, self.poll_s = local, store, run_id, poll_s
        self._next_poll = 0.0
        self._requested = False

    def __call__(self) -> bool:
        if self._requested or self.local():
            return True
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_s
            self._requested = self.store.cancel_requested(self.run_id)
        return self._requested


class _Tracker:
    """Routes events to the caller and the store; keeps the running summary."""

    def __init__(self, store, run_id, on_event, t0):
        self.store, self.run_id, self.on_event, self.t0 = store, run_id, on_event, t0
        self.stop: Callable[[], bool] | None = None  # set by train(): checked at every event
        self.summary: dict = {}
        self.log_every = 1  # steps between logged loss points (events, in memory)
        self._pending: list[tuple[int, dict]] = []  # logged points not yet in SQLite
        self._progress: dict | None = None
        self._last_flush = 0.0

    def emit(self, event: Event) -> None:
        event.setdefault("run_id", self.run_id)
        if self.on_event:
            self.on_event(event)
        # a cancel lands during the prepare phases too (feature caching, embedding: minutes on a big set); in
        # the step loop it is checked before each step, where the run can still checkpoint
        if self.stop is not None and event.get("type") == "prepare" and self.stop():
            raise Cancelled()

    def log_step(self, step, total, stage, loss, lr, epoch, extra: dict | None = None):
        progress = {"step": step, "total": total, "stage": stage, "epoch": round(epoch, 3), "loss": loss,
                    "elapsed": time.time() - self.t0}
        self._pending.append((step, {"loss": loss, "lr": lr, **(extra or {})}))
        self._progress = progress
        self.emit({"type": "step", **progress})
        if time.monotonic() - self._last_flush >= DB_FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Write the pending loss points and the latest progress in one go (fast steps never wait on SQLite)."""
        self._last_flush = time.monotonic()
        if self._pending:
            self.store.log_metric_rows(self.run_id, self._pending)
            self._pending = []
        if self._progress is not None:
            self.store.set_progress(self.run_id, self._progress)
            self._progress = None

    def log_eval(self, step, values: dict):
        values = {k: v for k, v in values.items() if v is not None}
        self.flush()
        self.store.log_metrics(self.run_id, step, values)
        self.emit({"type": "eval", "step": step, **values})

    def warn(self, message: str) -> None:
        """A problem that does not end the run: kept in the run's summary (at once) and emitted."""
        _logger.warning("run %s: %s", self.run_id, message)
        self.summary["warnings"] = [*self.summary.get("warnings", []), message]
        self.store.update_summary(self.run_id, {"warnings": self.summary["warnings"]})
        self.emit({"type": "warning", "message": message})


class _BatchOrder:
    """Batches of row positions, a fresh permutation per epoch (drop_last-free, wraps around)."""

    def __init__(self, rows: np.ndarray, batch_size: int, gen: torch.Generator):
        self.rows, self.batch_size, self.gen = torch.as_tensor(rows), min(batch_size, len(rows)), gen
        self.perm, self.pos = self._shuffle(), 0

    def _shuffle(self):
        return self.rows[torch.randperm(len(self.rows), generator=self.gen)]

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self.perm):
            self.perm, self.pos = self._shuffle(), 0
        out = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return out


def _batch(s: Session, rows: torch.Tensor, views: list[int], gen) -> Batch:
    source = s.sources["train"]
    train = s.parts["train"]
    labelled = None
    if train.labelled is not None and s.cfg.objective == "content-style":
        rows = torch.cat([rows, _labelled_rows(s, len(rows), gen)])  # semi-supervised: + a labelled batch
        labelled = torch.as_tensor(train.labelled[rows.numpy()], device=s.device)
    labels = torch.as_tensor(train.labels[rows.numpy()], device=s.device)
    return Batch([source.get(rows, v, gen) for v in views], labels, labelled)


def _labelled_rows(s: Session, n: int, gen) -> torch.Tensor:
    """Up to n rows of the labelled subset, from a shuffled order kept in the session: a semi-supervised
    batch is a uniform batch over all training images plus a labelled one, so CE sees labels every step."""
    if "labelled_order" not in s.extra:
        s.extra["labelled_order"] = _BatchOrder(np.flatnonzero(s.parts["train"].labelled), n, gen)
    return s.extra["labelled_order"].next()


def _stage_budgets(fractions: list[float], total: int) -> list[int]:
    """Split `total` steps by `fractions`, every stage getting at least one step."""
    if total < len(fractions):
        raise InvalidConfig(f"a budget of {total} steps is too small for {len(fractions)} stages")
    out, left = [], total
    for i, f in enumerate(fractions[:-1]):
        later = len(fractions) - 1 - i  # stages after this one, each needing a step
        n = min(max(1, round(f * total)), left - later)
        out.append(n)
        left -= n
    return out + [left]


def _lr_scale(step: int, n_steps: int, warmup: float) -> float:
    """Linear warm-up then cosine decay to 0 within one stage."""
    warm = int(warmup * n_steps)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, n_steps - warm)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _make_optimizer(cfg: TrainConfig, method: Method, stage) -> torch.optim.Optimizer:
    head_ids = {id(p) for p in stage.head_params}
    backbone_params = [p for p in method.backbone.parameters() if p.requires_grad and id(p) not in head_ids] if stage.train_encoder else []
    head_params = list(stage.head_params)
    head_lr = cfg.lr if stage.train_encoder else cfg.probe_lr
    groups = []
    if head_params:
        groups.append({"params": head_params, "base_lr": head_lr, "lr": head_lr})
    backbone_lr = cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr / 10
    if backbone_params and backbone_lr > 0:
        groups.append({"params": backbone_params, "base_lr": backbone_lr, "lr": backbone_lr})
    if not groups:
        raise InvalidConfig(f"stage {stage.name!r} has nothing to train: unfreeze some blocks (trainable)")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _check_finite(window: list[torch.Tensor], first_step: int, checkpoint: Path | None = None) -> None:
    losses = torch.stack(window).float()
    bad = ~torch.isfinite(losses)
    if bad.any():
        at = first_step + int(bad.nonzero()[0])
        kept = ("the last good checkpoint is kept" if checkpoint is not None and checkpoint.exists()
                else "it diverged before its first checkpoint, so there is none to resume from")  # say only what is true
        raise Diverged(f"diverged at step {at}: the loss became {losses[bad][0].item()}; lower the learning rate ({kept})")


@torch.no_grad()
def _evaluate(s: Session, stage, step: int, tracker: _Tracker, snapshot_steps: set[int]) -> float | None:
    """Val accuracy with the current classifier; nearest-class-mean accuracy while there is none."""
    es = compute_embeddings(s.method, s.sources["val"], s.parts["val"], s.device, stage=stage, amp=s.cfg.amp)
    acc = es.accuracy
    values = {"val_acc": acc}
    if acc is None:
        values["val_centroid_acc"] = _centroid_accuracy(s, es)
    elif s.cfg.eval_test:  # the test error of the step that is best on val (core/curves.py best_on_val)
        values["test_acc"] = compute_embeddings(s.method, s.sources["test"], s.parts["test"], s.device, stage=stage,
                                                amp=s.cfg.amp).accuracy
    tracker.log_eval(step, values)
    if step in snapshot_steps and s.run_dir is not None:
        _save_within_budget(s.run_dir, s.run_dir / "snapshots" / f"step-{step:06d}", es, f"the val snapshot at step {step}",
                            tracker)
    return acc if acc is not None else values["val_centroid_acc"]


def _class_means(s: Session, output: str | None = None, per_class: int = 20) -> tuple[torch.Tensor, float]:
    """Mean L2-normalised embedding per class over up to `per_class` training images (eval view),
    and the mean embedding norm. `output` picks a named method output (default: the encoder)."""
    train = s.parts["train"]
    ref_rows = ds._balanced_subset(np.arange(len(train)), train.labels, per_class, seed=1)
    with torch.inference_mode(), autocast(s.device, s.cfg.amp):
        was = s.method.training
        s.method.eval()
        ref = s.method.encoder(s.sources["train"].get(torch.as_tensor(ref_rows), 0)).float()
        s.method.train(was)
    vec = s.method.outputs(ref)[output].float() if output else ref
    labels = torch.as_tensor(train.labels[ref_rows], device=vec.device)
    means = torch.zeros(s.data.num_classes, vec.shape[1], device=vec.device).index_add_(0, labels, F.normalize(vec, dim=-1))
    return F.normalize(means, dim=-1), float(vec.norm(dim=-1).mean())


def _centroid_accuracy(s: Session, val_es) -> float:
    """Classify val by the nearest class mean (cosine) of up to 20 training images per class."""
    key = next(iter(val_es.vectors))
    means, _ = _class_means(s, key)
    val = F.normalize(torch.as_tensor(val_es.vectors[key], device=means.device).float(), dim=-1)
    pred = (val @ means.T).argmax(-1).cpu().numpy()
    return float((pred == val_es.labels).mean())


def _store_embeddings(s: Session, phase: str, emit, stage=None, tracker: _Tracker | None = None) -> dict:
    """Embed val, test and the shifted test split (ood), before or after fine-tuning, in every space the method
    has (core/spaces.py). Before-predictions are the before model's own: zero-shot where it is a classifier,
    else the nearest class mean of the training images in the encoder space (an untrained head predicts noise)."""
    from .spaces import NCM_PER_CLASS, apply_nearest_class_mean

    out = {}
    means = None
    for split in ("val", "test", "ood"):
        target = embeddings_dir(s.run_dir, phase, split)
        emit({"type": "prepare", "what": f"embedding {split} ({phase})", "done": 0, "total": len(s.parts[split])})
        es = compute_embeddings(s.method, s.sources[split], s.parts[split], s.device, stage=stage if phase == "after" else None,
                                amp=s.cfg.amp)
        if phase == "before" and _has_zero_shot(s.cfg):
            es.pred_source = "zero-shot"
        elif phase == "before":
            if means is None:
                means = _class_means(s, per_class=NCM_PER_CLASS)[0].cpu().numpy()
            apply_nearest_class_mean(es, means)
        _save_within_budget(s.run_dir, target, es, f"the {phase} {split} embeddings", tracker)
        out[split] = es
    return out


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def _save_within_budget(run_dir: Path, folder: Path, es, what: str, tracker: _Tracker | None) -> bool:
    """save_embeddings unless it would take the run folder past its disk budget (or the disk is full):
    then skip it with a warning in the run's summary. Checkpoints are never skipped (resume needs them)."""
    budget = run_disk_budget()
    need = sum(a.nbytes for a in (es.ids, es.labels, es.preds, es.anchors, *es.vectors.values()) if a is not None)
    if budget is not None and _folder_bytes(run_dir) + need > budget:
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


def _trainable_state(method: Method) -> dict[str, torch.Tensor]:
    """Copy of what training changes: parameters that require grad, and every persistent buffer
    (BatchNorm statistics and their counters)."""
    state = {}
    for name, p in method.named_parameters():
        if p.requires_grad:
            state[name] = p.detach().clone()
    persistent = method.state_dict().keys()  # once: building it per buffer cost ~100 ms a checkpoint
    for name, b in method.named_buffers():
        if name in persistent:
            state[name] = b.detach().clone()
    return state


def _save_checkpoint(method: Method, optimizer, run_dir: Path, step: int, stage_index: int) -> None:
    """Write atomically: the previous checkpoint stays until the new one is complete."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in _trainable_state(method).items()}
    need = sum(t.nbytes for t in state.values()) + (1 << 16)
    write_atomic(run_dir / CHECKPOINT, lambda tmp: save_file(state, str(tmp), metadata={"step": str(step), "stage": str(stage_index)}),
                 need=need, what="the checkpoint")
    opt = optimizer.state_dict()  # AdamW: two moments per trainable weight
    write_atomic(run_dir / TRAINER_STATE, functools.partial(_torch_save, {"optimizer": opt, "step": step, "stage": stage_index}),
                 need=2 * need, what="the optimizer state")


def _torch_save(obj, path: Path) -> None:
    with open(path, "wb") as f:  # a file object: a failed write's OSError (ENOSPC, EFBIG) stays in the exception chain
        torch.save(obj, f)


def load_method_weights(method: Method, run_dir: Path) -> dict:
    """Load a run's checkpoint into `method`; returns the safetensors metadata."""
    from safetensors import safe_open

    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise EmbedLabError(f"run folder {run_dir} has no checkpoint yet")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    own = method.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise EmbedLabError(f"checkpoint in {run_dir} does not match this model (unexpected: {unexpected[0]})")
    device = next(method.parameters()).device
    method.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    return meta


def _load_checkpoint(method: Method, run_dir: Path):
    """(step, stage, optimizer state or None). The checkpoint is the truth for step and stage; the optimizer
    state is used only when it is from the same step: a process killed between the two writes (checkpoint
    first, then trainer state) resumes with a fresh optimizer instead of failing or mixing steps."""
    meta = load_method_weights(method, run_dir)
    path = Path(run_dir) / TRAINER_STATE
    if not path.exists():
        return int(meta["step"]), int(meta.get("stage", 0)), None
    try:
        trainer = torch.load(path, map_location="cpu", weights_only=True)
        step, stage = int(meta.get("step", trainer["step"])), int(meta.get("stage", trainer["stage"]))
        same = int(trainer["step"]) == step and int(trainer["stage"]) == stage
    except Exception as exc:  # truncated, or a pickle that weights_only refuses to run
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EmbedLabError(f"cannot resume: {TRAINER_STATE} in {Path(run_dir).name} is unreadable or unsafe ({first})") from exc
    return step, stage, trainer["optimizer"] if same else None


@torch.no_grad()
def wise_ft_curve(s: Session, zero_shot: dict[str, torch.Tensor], n_alphas: int, emit) -> list[dict]:
    """WiSE-FT: in-distribution (val) and OOD accuracy of theta(a) = (1 - a) theta_zero-shot + a theta_fine-tuned,
    a in [0, 1], on the real interpolated weights (Wortsman et al. 2022, mlfoundations/wise-ft): the ID-OOD frontier."""
    method = s.method
    tuned = _trainable_state(method)
    params = dict(method.named_parameters())
    buffers = dict(method.named_buffers())
    curve = []
    for alpha in np.linspace(0.0, 1.0, n_alphas):
        for name, theta1 in tuned.items():
            theta0 = zero_shot[name]
            target = params.get(name, buffers.get(name))
            if target.dtype.is_floating_point:
                target.copy_((1 - alpha) * theta0 + alpha * theta1)
        point = {"alpha": round(float(alpha), 3)}
        for split in ("val", "ood"):
            es = compute_embeddings(method, s.sources[split], s.parts[split], s.device, amp=s.cfg.amp)
            point[f"{split}_acc"] = es.accuracy
        curve.append(point)
        emit({"type": "prepare", "what": "WiSE-FT curve", "done": len(curve), "total": n_alphas})
    for name, theta1 in tuned.items():
        params.get(name, buffers.get(name)).copy_(theta1)
    method.refresh()
    return curve


def _fault_from_env() -> tuple[str, int] | None:
    """EMBEDLAB_FAULT=kind:step (nan, inf, oom, cuda_oom, raise) simulates a fault, for the reliability tests."""
    spec = os.environ.get("EMBEDLAB_FAULT", "")
    if ":" not in spec:
        return None
    kind, _, at = spec.partition(":")
    return kind, int(at)


def _inject(kind: str, loss: torch.Tensor) -> torch.Tensor:
    if kind == "nan":
        return loss * float("nan")
    if kind == "inf":
        return loss + float("inf")
    if kind == "oom":
        raise MemoryError("simulated out-of-memory")
    if kind == "cuda_oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
    raise RuntimeError(f"simulated crash ({kind})")


def _looks_like_oom(exc: BaseException) -> bool:
    """CUDA OOM, MemoryError, or a cuDNN / cuBLAS allocation failure (those arrive as plain RuntimeErrors)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "_ALLOC_FAILED" in text)
