"""`python -m core train | resume | runs | show | cancel`: start runs, continue them, list and stop them.

`train` prints a progress bar on stderr and, as its last stdout line, one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

from ..errors import EmbedLabError
from ._common import _fmt, _json_line, _jsonable, _root, labels_arg


def cmd_train(args) -> int:
    from ..store import RunStore
    from ..train import TrainConfig, train, validate

    root = _root(args)
    objectives = [o.strip() for o in args.objective.split(",") if o.strip()]
    if not objectives:
        from ..objectives import OBJECTIVES

        raise EmbedLabError(f"--objective names no objective: give one or a comma list of {', '.join(OBJECTIVES)}")
    configs = []
    if args.seeds < 1:
        from ..errors import InvalidConfig

        raise InvalidConfig(f"--seeds must be at least 1, not {args.seeds}")
    for objective in objectives:
        cfg = TrainConfig(objective=objective)
        overrides = {name: getattr(args, name) for name in TrainConfig.setting_names()  # section settings by flat name
                     if name != "objective" and getattr(args, name, None) is not None}
        if args.epochs is not None and args.steps is None:
            overrides["steps"] = None
        cfg = dataclasses.replace(cfg, **overrides)
        for i in range(args.seeds):  # --seeds N: seeds s, s+1, ... per objective, everything else equal
            configs.append(validate(dataclasses.replace(cfg, seed=cfg.seed + i), root))  # all checked before the first run
    store = RunStore(root, recover=True)
    results = []
    worker_rank = int(os.environ.get("RANK", "0")) if args.ddp else 0  # torchrun ranks > 0 stay silent
    for cfg in configs:
        results.append(_train_with_bar(cfg, store, root, quiet=args.quiet or worker_rank > 0, train=train))
    if worker_rank > 0:
        return 0 if all(r["status"] == "finished" for r in results) else 1
    if len(results) == 1:
        _json_line(results[0])
        return 0 if results[0]["status"] == "finished" else 1
    status = "finished" if all(r["status"] == "finished" for r in results) else "failed"
    out = {"status": status, "runs": results, "seconds": round(sum(r.get("seconds", 0) for r in results), 2)}
    if args.seeds > 1:
        from ..metrics import mean_spread_text, seed_groups

        out["seed_groups"] = seed_groups([(r["run_id"], c.to_dict(), r) for r, c in zip(results, configs)])
        for g in out["seed_groups"]:
            print(f"{g['objective']}: val accuracy {mean_spread_text(g, 'val_acc')}", file=sys.stderr)
    _json_line(out)
    return 0 if status == "finished" else 1


def _train_with_bar(cfg, store, root, *, quiet: bool, train) -> dict:
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}  # one bar per phase ("caching train features", "train", ...)
    last = {"loss": None, "val_acc": None}

    def bar(key: str, total: int, desc: str) -> tqdm:
        if key not in bars:
            for other in bars.values():
                other.close()
            bars.clear()
            bars[key] = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=key == "train")
        return bars[key]

    def on_event(event):
        if quiet:
            return
        kind = event["type"]
        if kind == "prepare":
            b = bar(event["what"], event["total"], f"[{cfg.objective}] {event['what']}")
            b.update(event["done"] - b.n)
        elif kind == "step":
            b = bar("train", event["total"], f"[{cfg.objective}] {cfg.backbone} on {cfg.dataset}")
            b.update(event["step"] - b.n)
            last["loss"] = event["loss"]
            b.set_postfix(stage=event["stage"], loss=f"{event['loss']:.4f}", val_acc=last["val_acc"])
        elif kind == "eval":
            acc = event.get("val_acc", event.get("val_centroid_acc"))
            last["val_acc"] = None if acc is None else f"{acc:.3f}"
        elif kind == "done":
            for b in bars.values():
                b.close()
            msg = f"[{cfg.objective}] {event['status']}"
            if event.get("val_acc") is not None:
                msg += f": val_acc={event['val_acc']:.3f}"
            if event.get("error"):
                msg += f": {event['error']}"
            print(msg, file=sys.stderr)

    return train(cfg, store=store, root=root, on_event=on_event)


def cmd_resume(args) -> int:
    """Continue a cancelled, failed or interrupted run from its last checkpoint, with the same run id."""
    from ..jobs import RESUMABLE
    from ..report import resolve_run
    from ..store import RunStore
    from ..train import TrainConfig, train, validate

    root = _root(args)
    store = RunStore(root, recover=True)  # a run whose process died is interrupted now, so it can be resumed
    record = resolve_run(store, args.run)
    if record.status not in RESUMABLE:
        raise EmbedLabError(f"run {record.id} is {record.status}; only {', '.join(RESUMABLE)} runs can be resumed")
    step = store.checkpoint_step(record.id)  # None: no (readable) checkpoint
    has_checkpoint = step is not None
    if not has_checkpoint and not args.from_start:
        raise EmbedLabError(f"run {record.id} has no checkpoint: resume starts over from step 0; "
                            "add --from-start to train it again from step 0 under the same id")
    cfg = validate(TrainConfig.from_dict(record.config), root)
    if not args.quiet:
        print(f"resuming run {record.id} " + (f"from step {step} (its last checkpoint)" if has_checkpoint
                                               else "- no checkpoint: resume starts over from step 0"), file=sys.stderr)
    result = _train_with_bar(cfg, store, root, quiet=args.quiet, train=functools.partial(train, run_id=record.id,
                                                                                          resume=has_checkpoint))
    _json_line(result)
    return 0 if result["status"] == "finished" else 1


def cmd_runs(args) -> int:
    from ..store import RunStore

    runs = RunStore(_root(args), recover=True).list(status=[args.status] if args.status else None)
    rows = [{"run_id": r.id, "status": r.status, "objective": r.objective, "backbone": r.backbone, "dataset": r.dataset,
             "val_acc": r.summary.get("val_acc"), "seconds": round(r.duration, 1) if r.duration else None,
             "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)) if r.started else None} for r in runs]
    if args.json:
        _json_line(rows)
        return 0
    if not rows:
        print(f"no runs in {_root(args)}")
        return 0
    cols = ["run_id", "status", "objective", "backbone", "dataset", "val_acc", "seconds", "started"]
    table = [[_fmt(row[c]) for c in cols] for row in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    return 0


def cmd_show(args) -> int:
    from ..store import RunStore

    store = RunStore(_root(args))
    r = store.get(args.run)
    last = {k: v[-1][1] for k, v in store.metrics(r.id).items() if v}
    info = {"run_id": r.id, "status": r.status, "error": r.error, "config": r.config, "summary": r.summary,
            "progress": r.progress, "last_metrics": last, "dir": str(store.run_dir(r.id))}
    if args.json:
        _json_line(info)
    else:
        print(json.dumps(info, indent=2, default=_jsonable))
    return 0


def cmd_cancel(args) -> int:
    from ..store import RunStore

    store = RunStore(_root(args), recover=True)  # a dead owner's run is interrupted, not waited for
    record = store.get(args.run)
    if not store.request_cancel(record.id):
        raise EmbedLabError(f"run {record.id} is {store.get(record.id).status}, not queued or running: nothing to cancel")
    print(f"asked run {record.id} to stop: it ends as cancelled within a few seconds (its next training step)",
          file=sys.stderr)
    _json_line({"run_id": record.id, "cancel_requested": True})
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from ..config import TrainConfig

    d = TrainConfig()
    p.add_argument("--objective", default="ce,lacvit,flyp", help="ce, lacvit, flyp, or a comma list (default: all three)")
    p.add_argument("--backbone", help="EmbedLab, timm or open_clip MODEL/PRETRAINED name (default: offline efficientnet_lite0 / lite0-minilm)")
    p.add_argument("--weights", help="pretrained (default), random, or a path to a safetensors / state-dict file")
    p.add_argument("--trainable", help="fine-tuning depth: all (full fine-tuning), frozen (heads only), k (the last k "
                   "blocks), or auto (the default: all on a GPU, 1 on a CPU, where the frozen rest is cached)")
    p.add_argument("--stage2-train-encoder", dest="stage2_train_encoder", action=argparse.BooleanOptionalAction,
                   help="LaCViT stage 2: fine-tune the encoder with the head (the paper), or --no-stage2-train-encoder: "
                        "keep it frozen (default: fine-tune on a GPU, frozen on a CPU)")
    p.add_argument("--dataset", help=f"dataset name (default: {d.dataset})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help=f"optimizer steps over all stages (default: {d.steps})")
    budget.add_argument("--epochs", type=float, help="passes over the training set instead of --steps")
    p.add_argument("--batch-size", dest="batch_size", type=int, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, help=f"head learning rate (default {d.lr})")
    p.add_argument("--backbone-lr", dest="backbone_lr", type=float, help="backbone learning rate (default lr/10)")
    p.add_argument("--weight-decay", dest="weight_decay", type=float)
    p.add_argument("--temperature", type=float, help=f"LaCViT tau (default {d.temperature})")
    p.add_argument("--stage1-fraction", dest="stage1_fraction", type=float, help=f"LaCViT contrastive share (default {d.stage1_fraction})")
    p.add_argument("--style-dim", dest="cs_style_dim", type=int, help=f"content-style: style vector size (default {d.cs_style_dim})")
    p.add_argument("--ce-weight", dest="cs_ce_weight", type=float, help=f"content-style: labelled CE weight (default {d.cs_ce_weight})")
    p.add_argument("--prior-weight", dest="cs_prior_weight", type=float, help=f"content-style: content-prior weight (default {d.cs_prior_weight})")
    p.add_argument("--entropy-weight", dest="cs_entropy_weight", type=float, help=f"content-style: entropy share in the prior term (default {d.cs_entropy_weight})")
    p.add_argument("--style-weight", dest="cs_style_weight", type=float, help=f"content-style: style-normal weight (default {d.cs_style_weight})")
    p.add_argument("--recon-weight", dest="cs_recon_weight", type=float, help=f"content-style: reconstruction weight (default {d.cs_recon_weight})")
    p.add_argument("--regulariser", dest="cs_regulariser", choices=["adversarial", "moments"],
                   help=f"content-style priors: the paper's discriminators or closed-form moment surrogates (default {d.cs_regulariser})")
    p.add_argument("--recon-detach", dest="cs_recon_detach", action="store_const", const=True,
                   help="content-style: detach the reconstruction target (default: the latent token keeps its gradient)")
    p.add_argument("--feature-views", dest="feature_views", type=int,
                   help=f"augmented views per training image cached in the bank each step draws from (default {d.feature_views})")
    p.add_argument("--image-size", dest="image_size", type=int, help="input resolution (default: the backbone's)")
    p.add_argument("--n-per-class", dest="n_per_class", type=int, help=f"training images per class (default {d.n_per_class})")
    p.add_argument("--eval-per-class", dest="eval_per_class", type=int, help=f"val/test images per class (default {d.eval_per_class})")
    p.add_argument("--labels", type=labels_arg, help="semi-supervised: number of labelled training images, or 'all' (default)")
    p.add_argument("--selection", help="train only on a saved data selection (python -m core select)")
    p.add_argument("--seed", type=int)
    p.add_argument("--shift", help="the OOD split: a shift of the test split, NAME[:SEVERITY] (default: the dataset's "
                                   "natural shift, else mix:3; see `python -m core shifts`)")
    p.add_argument("--seeds", type=int, default=1, help="runs per objective with seeds s, s+1, ... (default 1): "
                                                        "Compare and the report then show mean ± spread")
    p.add_argument("--optimizer", choices=["adamw", "sgd"])
    p.add_argument("--eval-every", dest="eval_every", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--no-amp", dest="amp", action="store_const", const=False, help="disable mixed precision on CUDA")
    p.add_argument("--ce-zero-shot-head", dest="ce_zero_shot_head", action="store_const", const=True,
                   help="CE on a backbone with a text tower: start from the zero-shot head (WiSE-FT's setup; adds a WiSE-FT sweep)")
    p.add_argument("--no-cache", dest="cache_features", action="store_const", const=False, help="do not cache frozen features")
    p.add_argument("--ddp", action="store_const", const=True, help="data-parallel: launch with torchrun --nproc_per_node N -m core train ... --ddp")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def register(sub, common) -> None:
    p = sub.add_parser("train", parents=[common], help="fine-tune (default: CE vs LaCViT vs FLYP on the offline default)")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("resume", parents=[common], help="continue a cancelled, failed or interrupted run from its last checkpoint")
    p.add_argument("run", help="run id or a unique prefix of one")
    p.add_argument("--from-start", dest="from_start", action="store_true",
                   help="a run with no checkpoint yet: train it again from step 0 (refused without this)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("runs", parents=[common], help="list runs")
    p.add_argument("--status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("show", parents=[common], help="show one run")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("cancel", parents=[common], help="stop a queued or running run, whichever process trains it")
    p.add_argument("run")
    p.set_defaults(func=cmd_cancel)
