"""One training loop for every objective.

    $ python -m core train --backbone test_vit --dataset mnist5k --objective lacvit --steps 20

`train(cfg, store=..., run_id=...)` reads top to bottom: `prepare` checks the settings and splits the
data (once: JobManager.submit hands the result to the worker), `build_session` builds device, backbone,
method and inputs, `_start` stores the before-embeddings (or loads the checkpoint to resume), `_fit` is
the step loop (learning rate, batch, forward + loss, finite check, backward, step, log, evaluate and
checkpoint every `eval_every` steps), `_summarise` stores the after-embeddings, WiSE-FT and the summary.
It emits plain dict events (`stage`, `step`, `eval`, `done`) and checks a cancel flag every step.

The loop never asks an objective's name: what differs between objectives is a trait of its registry
entry (core/objectives.py). Checkpoints live in core/checkpoints.py, the embeddings and snapshots a run
writes (and its disk budget) in core/artifacts.py, WiSE-FT in core/wise_ft.py, simulated faults in
core/faults.py.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import backbones as bb
from . import datasets as ds
from . import distributed, faults, plugins, shifts  # noqa: F401  plugins: every objective and backbone registered
from .spaces import NCM_PER_CLASS
from .artifacts import DEFAULT_RUN_DISK_MB, RUN_DISK_ENV, run_disk_budget, save_within_budget, store_embeddings  # noqa: F401
from .checkpoints import (CHECKPOINT, TRAINER_STATE, load_checkpoint, load_method_weights, save_checkpoint,  # noqa: F401
                          trainable_state)
from .config import SECTIONS, ContentStyleConfig, TrainConfig  # noqa: F401  (re-exported: callers import them from here)
from .device import autocast, autocast_dtype, configure_threads, pick_device
from .embeddings import compute_embeddings
from .errors import EmbedLabError, InvalidConfig, UnknownName, WeightsUnavailable
from .features import CachedSource, ImageSource, cached_prefix_features, pick_views
from .objectives import OBJECTIVES, Batch, Method, ObjectiveEntry, create_method, method_options, objective_entry
from .paths import check_writable, home
from .store import RunStore
from .wise_ft import wise_ft_curve

_logger = logging.getLogger(__name__)

Event = dict[str, Any]
DB_FLUSH_INTERVAL_S = 1.0  # step metrics reach SQLite at most once a second (the UI polls once a second)
STOP_POLL_S = 1.0  # how often a run checks the store for a cancel asked by another process
LOG_POINTS = 200  # about this many loss points per run (every step for short runs)
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
    # config sections (core/content_style.py), by their flat keys
    "cs_style_dim": ("style dimension", Range(1, 1024, whole=True)),
    "cs_ce_weight": ("ce weight", Range(0, 1e6)),
    "cs_prior_weight": ("prior weight", Range(0, 1e6)),
    "cs_entropy_weight": ("entropy weight", Range(0, 1e6)),
    "cs_style_weight": ("style weight", Range(0, 1e6)),
    "cs_recon_weight": ("recon weight", Range(0, 1e6)),
}


def check_ranges(cfg) -> None:
    """InvalidConfig for the first setting outside its RANGES row."""
    for name, (label, rng) in RANGES.items():
        value = getattr(cfg, name, None)
        if value is not None and (problem := rng.problem(label, value)):
            raise InvalidConfig(problem)


@dataclass(frozen=True)
class Prepared:
    """A validated run: the resolved config and its data split. JobManager.submit hands it to the worker,
    so a run is checked, and its dataset loaded and split, once."""

    cfg: TrainConfig
    data: ds.ImageData
    parts: dict[str, ds.Split]  # train / val / test (build_session adds the shifted ood split)


def validate(cfg: TrainConfig, root: Path | None = None) -> TrainConfig:
    """Check every setting before anything is queued; raise InvalidConfig / UnknownName with one clear line.
    Returns the resolved config."""
    return prepare(cfg, root).cfg


def prepare(cfg: TrainConfig, root: Path | None = None) -> Prepared:
    """validate(), keeping the loaded dataset and its split for the run."""
    check_writable(Path(root) if root else home())  # a read-only home: refused before anything is queued
    cfg = cfg.resolved()
    entry = OBJECTIVES.get_entry(cfg.objective)  # UnknownName with the known names for a typo
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
    if entry.needs_text_tower and not bb.is_clip_name(cfg.backbone):
        raise InvalidConfig(f"{cfg.objective} needs a CLIP-style backbone with a text tower; {cfg.backbone!r} has none "
                            "(try lite0-minilm, test_clip or an open_clip MODEL/PRETRAINED name)")
    if cfg.ce_zero_shot_head and (entry.zero_shot != "option" or not bb.is_clip_name(cfg.backbone)):
        raise InvalidConfig("a zero-shot CE head needs objective ce and a backbone with a text tower "
                            f"(lite0-minilm, test_clip or an open_clip name), not {cfg.objective} on {cfg.backbone!r}")
    if entry.check is not None:  # the objective's own settings (FLYP: a trainable encoder; content-style: its section)
        entry.check(cfg)
    data, parts = load_split(cfg, root)
    shifts.resolve(cfg.shift, data.name)
    n_train = len(parts["train"]) if cfg.labels is None or entry.semi_supervised else int(parts["train"].labelled.sum())
    if cfg.batch_size > n_train:
        raise InvalidConfig(f"batch size {cfg.batch_size} is larger than the {n_train} training images; lower it to at most {n_train}")
    if len(parts["val"]) == 0:
        raise InvalidConfig(f"dataset {cfg.dataset!r} has no validation images; add more images per class")
    if len(np.unique(parts["train"].labels)) < 2:
        raise InvalidConfig(f"dataset {cfg.dataset!r} needs at least 2 classes with training images")
    return Prepared(cfg, data, parts)


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


def _selection_ids(cfg: TrainConfig, root: Path | None) -> np.ndarray | None:
    if not cfg.selection:
        return None
    from .selections import load_selection

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
    entry: ObjectiveEntry | None = None  # the objective's registry entry (its traits)


def build_session(cfg: TrainConfig, root: Path | None = None, run_dir: Path | None = None,
                  emit: Callable[[Event], None] = lambda e: None,
                  ctx: distributed.DistContext = distributed.DistContext(), prepared: Prepared | None = None) -> Session:
    """Device, seed, data, backbone, method and input sources for `cfg` (already validated; `prepared`:
    its validated data split, else it is loaded and split here)."""
    root = root or home()
    cfg = cfg.resolved()  # a no-op for a validated config; callers that skip validate() get the same defaults
    configure_threads(ctx.world)
    device = pick_device(cfg.device)
    if device.type == "cuda" and ctx.world > 1:
        device = torch.device("cuda", ctx.local_rank)
    torch.manual_seed(cfg.seed)
    if prepared is not None:
        data, parts = prepared.data, dict(prepared.parts)
    else:
        data, parts = load_split(cfg, root)
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
    entry = objective_entry(cfg.objective)
    method = create_method(cfg.objective, backbone, encoder, data.num_classes, class_names=data.prompt_names,
                           **method_options(cfg))
    method.to(device)
    train = parts["train"]
    rows = np.arange(len(train))
    if train.labelled is not None and not entry.semi_supervised:
        rows = rows[train.labelled]  # supervised objectives see only the labelled images
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * len(rows) / cfg.batch_size))
    return Session(cfg, device, data, parts, backbone, method, sources, rows, steps, run_dir, entry=entry)


def load_split(cfg: TrainConfig, root: Path | None) -> tuple[ds.ImageData, dict[str, ds.Split]]:
    """The run's dataset and its train / val / test / ood split (what `prepare` checks; a child process
    given an already validated config loads only this)."""
    data = ds.load_dataset(cfg.dataset, root)
    parts = ds.splits(data, n_per_class=cfg.n_per_class, eval_per_class=cfg.eval_per_class, labels=cfg.labels,
                      seed=cfg.seed, selection=_selection_ids(cfg, root))
    return data, parts


# ------------------------------------------------------------------------------- the loop
class Cancelled(Exception):
    pass


class Diverged(EmbedLabError):
    pass


def train(cfg: TrainConfig | Prepared, *, store=None, run_id: str | None = None, root: Path | None = None,
          on_event: Callable[[Event], None] | None = None, should_stop: Callable[[], bool] = lambda: False,
          resume: bool = False) -> dict:
    """Run one fine-tune; returns the summary dict (also stored when `store` is given).

    Exceptions inside the run end it as `failed` with a message; `should_stop()` ends it as
    `cancelled` within one step, and so does `store.request_cancel(run_id)` from another process
    (read about once a second). With `resume=True` it continues from the run's last checkpoint.
    `cfg` may be what `prepare` returned (JobManager.submit): then it is not checked, loaded or split again.
    """
    root = Path(root) if root else (store.root if store else home())
    prepared = cfg if isinstance(cfg, Prepared) else prepare(cfg, root)
    cfg = prepared.cfg
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
        summary = _run(prepared, tracker, run_dir, root, should_stop, resume, ctx)
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


def _run(prepared: Prepared, tracker: _Tracker, run_dir: Path, root: Path, should_stop, resume: bool,
         ctx: distributed.DistContext = distributed.DistContext()) -> dict:
    s = build_session(prepared.cfg, root, run_dir, tracker.emit, ctx, prepared)
    stages = s.method.stages()
    budgets = _stage_budgets([st.fraction for st in stages], s.total_steps)
    tracker.log_every = max(1, s.total_steps // LOG_POINTS)
    zero_shot_state = trainable_state(s.method) if s.entry.has_zero_shot(s.cfg) else None  # before any update
    step, val_acc = _fit(s, stages, budgets, _start(s, tracker, resume, ctx), tracker, should_stop, ctx)
    if not ctx.main:
        return dict(tracker.summary)
    return _summarise(s, stages[-1], step, val_acc, zero_shot_state, tracker)


def _start(s: Session, tracker: _Tracker, resume: bool, ctx) -> tuple[int, int, dict | None]:
    """(step, stage index, optimizer state) to start from: the checkpoint's when resuming; else step 0, after
    the before-embeddings (and, for a zero-shot model, its scores) are stored."""
    if resume:
        step, stage, opt_state = load_checkpoint(s.method, s.run_dir)
        tracker.summary.update({k: v for k, v in tracker.store.get(tracker.run_id).summary.items()
                                if k in ("zeroshot_acc", "zeroshot_ood_acc", "warnings")})
        if opt_state is None:
            tracker.warn(f"resumed from step {step} with a fresh optimizer state: the run stopped while "
                         f"writing its checkpoint ({TRAINER_STATE} missing or from another step)")
        return step, stage, opt_state
    if ctx.main:
        before = store_embeddings(s, "before", tracker.emit, tracker=tracker,
                                  class_means=lambda: _class_means(s, per_class=NCM_PER_CLASS)[0].cpu().numpy())
        if s.entry.has_zero_shot(s.cfg):
            zero = {"zeroshot_acc": before["val"].accuracy, "zeroshot_ood_acc": before["ood"].accuracy}
            tracker.summary.update(zero)
            tracker.store.update_summary(tracker.run_id, zero)
    return 0, 0, None


def _fit(s: Session, stages: list, budgets: list[int], start: tuple[int, int, dict | None], tracker: _Tracker,
         should_stop, ctx) -> tuple[int, float | None]:
    """The step loop over the stages from `start` = (step, stage index, optimizer state); returns (step, val acc)."""
    cfg, method, device, run_dir = s.cfg, s.method, s.device, s.run_dir
    model = method if ctx.world == 1 else torch.nn.parallel.DistributedDataParallel(
        method, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and autocast_dtype(device) == torch.float16)  # off: a no-op
    fault = faults.for_run()  # the identity unless a reliability test asks for a fault
    eval_every = cfg.eval_every or max(1, s.total_steps // 10)
    snapshot_steps = set(np.linspace(0, s.total_steps, max(2, cfg.snapshots)).round().astype(int).tolist())
    gen = torch.Generator().manual_seed(cfg.seed)
    step, first_stage, opt_state = start
    saved_step = step
    val_acc = _evaluate(s, stages[first_stage], step, tracker, snapshot_steps) if ctx.main else None
    stage_start = sum(budgets[:first_stage])
    for si in range(first_stage, len(stages)):
        stage, n_steps = stages[si], budgets[si]
        tracker.emit({"type": "stage", "stage": stage.name, "index": si, "steps": n_steps})
        optimizer = _begin_stage(s, stage, step == stage_start, opt_state if si == first_stage else None)
        order = _BatchOrder(s.train_rows, cfg.batch_size, gen)
        method.train()
        window, extras = [], []  # this log interval's losses (and extra terms), kept on device: no per-step host sync on GPU
        for local in range(step - stage_start, n_steps):
            if should_stop():
                if ctx.main and step > saved_step:  # so that resume goes on from here: a cancel loses no step
                    save_checkpoint(method, optimizer, run_dir, step, si)
                raise Cancelled()
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * _lr_scale(local, n_steps, cfg.warmup)
            views = pick_views(stage.views, s.sources["train"].n_views, gen)
            batch = _batch(s, ctx.shard(order.next()), views, gen)
            with autocast(device, cfg.amp):
                loss = model(stage, batch)
            loss = fault(step + 1, loss)
            window.append(loss.detach())
            extras.append(method.step_metrics())  # e.g. content-style's discriminator losses
            if device.type == "cpu":  # checking costs nothing here; on GPU it waits for the log interval
                _check_finite(window[-1:], step + 1, run_dir / CHECKPOINT)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss * ctx.grad_scale(stage.global_loss)).backward()
            scaler.unscale_(optimizer)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            if len(window) >= tracker.log_every or local == n_steps - 1:
                _log_window(s, tracker, stage, step, window, extras, optimizer, ctx)
                window, extras = [], []
            if ctx.main and (step % eval_every == 0 or local == n_steps - 1 or step in snapshot_steps):
                val_acc = _evaluate(s, stage, step, tracker, snapshot_steps)
                if step % eval_every == 0 or local == n_steps - 1:  # a snapshot alone writes no checkpoint (FLYP's: ~60 MB)
                    save_checkpoint(method, optimizer, run_dir, step, si)
                    saved_step = step
        stage_start += n_steps
    return step, val_acc


def _begin_stage(s: Session, stage, fresh: bool, opt_state: dict | None) -> torch.optim.Optimizer:
    """The stage's optimizer (with the checkpoint's state when resuming inside it); a stage entered fresh that
    asks for it starts its head as the nearest-class-mean classifier: no accuracy cliff at the stage switch."""
    if stage.init_head_from_class_means and fresh:
        s.method.init_head_from_class_means(*_class_means(s, per_class=50))
    optimizer = _make_optimizer(s.cfg, s.method, stage)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    return optimizer


def _log_window(s: Session, tracker: _Tracker, stage, step: int, window: list, extras: list, optimizer, ctx) -> None:
    """Check and log the mean loss (and extra terms) of the steps since the last logged point."""
    _check_finite(window, step - len(window) + 1, s.run_dir / CHECKPOINT)
    mean_loss = torch.stack(window).float().mean()
    mean_loss = mean_loss if stage.global_loss else ctx.mean(mean_loss)  # local-batch losses: average ranks
    extra = {k: torch.stack([e[k] for e in extras]).float().mean().item() for k in extras[-1]} if extras else {}
    tracker.log_step(step, s.total_steps, stage.name, mean_loss.item(),
                     optimizer.param_groups[0]["lr"], (step * s.cfg.batch_size) / max(1, len(s.train_rows)), extra)


def _summarise(s: Session, last_stage, step: int, val_acc: float | None, zero_shot_state, tracker: _Tracker) -> dict:
    """Store the after-embeddings (and the WiSE-FT curve); the run's summary, also written to summary.json."""
    cfg = s.cfg
    after = store_embeddings(s, "after", tracker.emit, stage=last_stage, tracker=tracker)
    summary = dict(tracker.summary)  # zero-shot accuracy and any warnings, the embeddings' own included
    summary.update(val_acc=after["val"].accuracy, test_acc=after["test"].accuracy, ood_acc=after["ood"].accuracy,
                   ood_shift=shifts.resolve(cfg.shift, s.data.name).name, steps=step,
                   train_images=len(s.train_rows), backbone=cfg.backbone, dataset=cfg.dataset, objective=cfg.objective)
    if val_acc is not None and summary["val_acc"] is None:
        summary["val_acc"] = val_acc
    if zero_shot_state is not None and s.entry.wise_ft and cfg.wise_alphas > 1:
        summary["wise_ft"] = wise_ft_curve(s, zero_shot_state, cfg.wise_alphas, tracker.emit)
    (s.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


# -------------------------------------------------------------------------------- helpers
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
    if train.labelled is not None and s.entry.semi_supervised:
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
        save_within_budget(s.run_dir, s.run_dir / "snapshots" / f"step-{step:06d}", es, f"the val snapshot at step {step}",
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


def _looks_like_oom(exc: BaseException) -> bool:
    """CUDA OOM, MemoryError, or a cuDNN / cuBLAS allocation failure (those arrive as plain RuntimeErrors)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "_ALLOC_FAILED" in text)
