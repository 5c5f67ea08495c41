"""`python -m core label-curve | budget-curve`: the research seeds' two plots, as experiments of many runs
(core/curves.py runs them; this module reads the flags and prints the progress lines and the JSON line).
"""
from __future__ import annotations

import sys
import time

from .. import curves
from ._common import _json_line, _root


def _overrides(args) -> dict:
    keys = ("trainable", "lr", "batch_size", "n_per_class", "eval_per_class", "device", "weights", "image_size", "cs_style_dim",
            "cs_ce_weight", "cs_prior_weight", "cs_entropy_weight", "cs_style_weight", "cs_recon_weight", "cs_regulariser",
            "cs_recon_detach")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _progress(args, total: int):
    done = {"n": 0}

    def on_row(row):
        done["n"] += 1
        if args.json:
            return
        what = f"labels={'all' if row.get('labels') is None else row['labels']}" if row["curve"] == curves.LABEL_CURVE else \
            f"{row['strategy']} budget={row['budget']}"
        acc = "-" if row["test_acc"] is None else f"{row['test_acc']:.3f}"
        print(f"[{done['n']}/{total}] {row['objective']} {what} seed={row['seed']}: {row['status']} test_acc={acc}"
              + (f" ({row['error']})" if row.get("error") else ""), file=sys.stderr, flush=True)
    return on_row


def _finish(kind: str, experiment: str, rows: list[dict], t0: float, **extra) -> int:
    status = "finished" if rows and all(r["status"] == "finished" for r in rows) else "failed"
    _json_line({"experiment": experiment, "kind": kind, "status": status, "rows": rows, **extra,
                "seconds": round(time.time() - t0, 2)})
    return 0 if status == "finished" else 1


def cmd_label_curve(args) -> int:
    t0 = time.time()
    labels = curves.int_list(args.labels, allow_all=True)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    seeds = curves.int_list(args.seeds)
    experiment = args.experiment or curves.new_experiment_tag(curves.LABEL_CURVE)
    rows = curves.label_curve(args.backbone, args.dataset, labels, objectives, args.steps, seeds=seeds,
                              experiment=experiment, root=_root(args),
                              on_row=_progress(args, len(labels) * len(objectives) * len(seeds)), **_overrides(args))
    return _finish(curves.LABEL_CURVE, experiment, rows, t0)


def cmd_budget_curve(args) -> int:
    from ..store import RunStore

    t0 = time.time()
    budgets = curves.int_list(args.budgets)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    seeds = curves.int_list(args.seeds)
    experiment = args.experiment or curves.new_experiment_tag(curves.BUDGET_CURVE)
    root = _root(args)
    rows = curves.budget_curve(args.backbone, args.dataset, budgets, strategies, args.steps, objective=args.objective,
                               seeds=seeds, eta=args.eta, lam=args.lam, tau=args.tau, ods_steps=args.ods_steps,
                               from_run=args.from_run, experiment=experiment, root=root,
                               on_row=_progress(args, len(budgets) * len(strategies) * len(seeds)), **_overrides(args))
    btc = curves.batches_to_accuracy(RunStore(root), rows, args.target_acc)
    if not args.json and btc["target"] is not None:
        print(f"steps to val_acc >= {btc['target']:.3f} (mean over the runs that reached it, per budget):", file=sys.stderr)
        for strategy, points in btc["series"].items():
            print(f"  {curves.STRATEGY_NAMES.get(strategy, strategy):<9} " + ", ".join(f"b{int(b)}: {m:.0f} ({n} runs)" for b, m, _, n in points),
                  file=sys.stderr)
    return _finish(curves.BUDGET_CURVE, experiment, rows, t0, batches_to_accuracy={"target": btc["target"], "rows": btc["rows"]})


def _common_train_args(p, backbone: str | None = None, dataset: str | None = None, seeds: str = "0") -> None:
    p.add_argument("--backbone", required=backbone is None, default=backbone,
                   help=f"default {backbone}" if backbone else None)
    p.add_argument("--dataset", required=dataset is None, default=dataset, help=f"default {dataset}" if dataset else None)
    p.add_argument("--steps", type=int, help="optimizer steps per run")
    p.add_argument("--seeds", default=seeds, help=f"comma list of seeds (each point is repeated per seed; default {seeds})")
    p.add_argument("--n-per-class", dest="n_per_class", type=int, help="cap the training split per class (default: all of it)")
    p.add_argument("--eval-per-class", dest="eval_per_class", type=int, help="val/test images per class")
    p.add_argument("--trainable", help="all, frozen, or k last blocks")
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--weights", help="pretrained (default), random, or a weights file")
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--device")
    p.add_argument("--experiment", help="tag for the runs (default: a fresh one)")
    p.add_argument("--json", action="store_true", help="no progress lines; the last line is JSON either way")


def register(sub, common) -> None:
    p = sub.add_parser(curves.LABEL_CURVE, parents=[common], help="seed 001: test error vs number of labels, content-style vs CE (last line JSON)")
    _common_train_args(p)
    p.add_argument("--labels", default="10,100,1000,all", help="comma list of labelled-image counts, 'all' included (default 10,100,1000,all)")
    p.add_argument("--objectives", default="ce,content-style", help="comma list (default ce,content-style)")
    for flag, dest in (("--style-dim", "cs_style_dim"),):
        p.add_argument(flag, dest=dest, type=int)
    for flag, dest in (("--ce-weight", "cs_ce_weight"), ("--prior-weight", "cs_prior_weight"), ("--entropy-weight", "cs_entropy_weight"),
                       ("--style-weight", "cs_style_weight"), ("--recon-weight", "cs_recon_weight")):
        p.add_argument(flag, dest=dest, type=float)
    p.add_argument("--regulariser", dest="cs_regulariser", choices=["adversarial", "moments"],
                   help="content-style priors (default adversarial)")
    p.add_argument("--recon-detach", dest="cs_recon_detach", action="store_const", const=True,
                   help="content-style: detach the reconstruction target")
    p.set_defaults(func=cmd_label_curve, steps=200)

    p = sub.add_parser(curves.BUDGET_CURVE, parents=[common], help="seed 002: test accuracy vs selection budget, VeCAF / ActiveFT / k-center / random (last line JSON)")
    _common_train_args(p, curves.DEFAULT_BUDGET_BACKBONE, curves.DEFAULT_BUDGET_DATASET, ",".join(map(str, curves.DEFAULT_SEEDS)))
    p.add_argument("--budgets", default=",".join(map(str, curves.DEFAULT_BUDGETS)), help="comma list of budgets (default 50,100,200)")
    p.add_argument("--strategies", default=",".join(curves.DEFAULT_STRATEGIES), help="comma list (default vecaf,activeft,kcenter,random; also density)")
    p.add_argument("--ods-steps", dest="ods_steps", type=int, help="activeft/vecaf: centroid optimisation steps (default 300)")
    p.add_argument("--target-acc", dest="target_acc", type=float, help="batches-to-accuracy target val accuracy (default 0.9 x the best run's)")
    p.add_argument("--objective", default="ce", help="objective the selections are trained with (default ce)")
    p.add_argument("--eta", type=float, help="vecaf/density: caption augmentation strength (default 0.5 on CLIP backbones)")
    p.add_argument("--lambda", dest="lam", type=float, help="density: diversity weight")
    p.add_argument("--tau", type=float, help="density: kernel bandwidth")
    p.add_argument("--from-run", dest="from_run", help="embed the pool with a finished run's encoder")
    p.set_defaults(func=cmd_budget_curve, steps=100)

