"""The two plots of the research seeds, as experiments over many ordinary runs (command line: core/cli/curves.py).

    $ python -m core label-curve --backbone efficientnet_lite0 --dataset mnist5k --labels 10,100,1000,all --steps 300
    $ python -m core budget-curve            # offline default: efficientnet_lite0 on fashion-mnist, 3 seeds
    $ python -m core budget-curve --backbone test_clip --dataset mnist5k --budgets 20,50,100 --steps 100 --seeds 0

* label curve (seed 001, its Figs. 3-5): test error vs the number of labelled training images, for
  content-style (semi-supervised: the rest of the training split unlabelled) against supervised CE
  on the same labelled images (the same seed draws the same class-balanced labelled subset). The paper
  plots each run's *best* error; here every point has two: the final test error (after the last step)
  and the best one, i.e. the test error at the evaluation with the highest val accuracy (picked on val,
  reported on test: the runs log test accuracy at every evaluation, `eval_test`, see `best_on_val`).
* budget curve (seed 002): test accuracy vs the selection budget for VeCAF, ActiveFT, k-center and
  random selections (core/selection.py) of the training split, each trained with the same recipe,
  over 3 seeds (band: mean +- std); and batches-to-accuracy, the paper's efficiency measure: the
  optimizer steps each run needed before its logged validation accuracy first reached a target.

Every point is a normal run (core.train.train) stored in the run store, so it shows up in Runs,
Explore and Compare. Runs of one curve share `TrainConfig.experiment` (a tag) and carry the curve's
coordinates in their summary (`curve`, `labels` / `strategy`, `budget`, `selection`), so
`curve_rows(store, tag)` rebuilds the rows later and the UI can redraw a curve without re-running it.
Rows are plain dicts; `label_curve_figure` / `budget_curve_figure` turn them into plotly figures
(mean over seeds, error bars = standard deviation when there is more than one seed).
"""
from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from .errors import InvalidConfig

LABEL_CURVE = "label-curve"
BUDGET_CURVE = "budget-curve"
DEFAULT_LABELS = (10, 100, 1000, None)  # None = all training images labelled
DEFAULT_BUDGETS = (50, 100, 200)
DEFAULT_STRATEGIES = ("vecaf", "activeft", "kcenter", "random")
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_BUDGET_BACKBONE, DEFAULT_BUDGET_DATASET = "efficientnet_lite0", "fashion-mnist"  # the offline default
STRATEGY_COLORS = {"random": "#9D9D9D", "kcenter": "#4C78A8", "vecaf": "#E45756", "activeft": "#F58518", "density": "#72B7B2"}
STRATEGY_NAMES = {"random": "random", "kcenter": "k-center", "vecaf": "VeCAF", "activeft": "ActiveFT", "density": "density"}
def __getattr__(name: str):  # OBJECTIVE_COLORS: name -> colour, read from the objective registry (it imports torch) on use
    if name == "OBJECTIVE_COLORS":
        from .objectives import objective_colours

        return objective_colours()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

Row = dict


def new_experiment_tag(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _base_config(backbone: str, dataset: str, steps: int | None, overrides: dict):
    from .train import TrainConfig

    known = set(TrainConfig.setting_names())  # section settings (cs_*) by their flat names
    unknown = set(overrides) - known
    if unknown:
        raise InvalidConfig(f"unknown setting(s): {', '.join(sorted(unknown))}")
    cfg = TrainConfig(backbone=backbone, dataset=dataset, **overrides)
    return cfg if steps is None else dataclasses.replace(cfg, steps=steps, epochs=None)


def _run_all(plans: list[tuple[object, dict]], *, store, root: Path, on_row: Callable[[Row], None] | None,
             should_stop: Callable[[], bool], before_each: Callable[[dict], None] | None = None) -> list[Row]:
    """Validate every config first (a bad point fails before the first run), then train them in order."""
    from .train import train, validate

    # selections do not exist yet: check those configs without theirs now, and again once made
    configs = [(validate(dataclasses.replace(cfg, selection=None) if meta.get("_select") else cfg, root), meta)
               for cfg, meta in plans]
    rows = []
    for cfg, meta in configs:
        if should_stop():
            break
        if before_each:
            before_each(meta)
            cfg = validate(dataclasses.replace(cfg, selection=meta["selection"]), root)
        result = train(cfg, store=store, root=root, should_stop=should_stop)
        coords = {k: v for k, v in meta.items() if not k.startswith("_")}
        if result["run_id"] and store.exists(result["run_id"]):
            store.update_summary(result["run_id"], {"experiment": cfg.experiment, **coords})
        best = (best_on_val(store, result["run_id"]) if coords.get("curve") == LABEL_CURVE and result["run_id"]
                and store.exists(result["run_id"]) else {})  # only label-curve runs log test accuracy per eval
        row = _row(cfg.experiment, result["run_id"], result["status"], cfg.objective, coords, result, result.get("error"), best)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def best_on_val(store, run_id: str) -> dict:
    """{best_step, best_val_acc, best_test_acc, best_test_error}: the evaluation with the highest val accuracy
    (the earliest on a tie) and the test accuracy logged at that step; {} when the run logged no test accuracy."""
    metrics = store.metrics(run_id, keys=("val_acc", "test_acc"))
    test = dict(metrics.get("test_acc", []))
    evals = [(acc, -step) for step, acc in metrics.get("val_acc", []) if step in test]
    if not evals:
        return {}
    acc, neg_step = max(evals)
    best = test[-neg_step]
    return {"best_step": -neg_step, "best_val_acc": acc, "best_test_acc": best, "best_test_error": 1.0 - best}


def _row(experiment, run_id, status, objective, coords: dict, summary: dict, error=None, best: dict | None = None) -> Row:
    test_acc = summary.get("test_acc")
    row = {"experiment": experiment, "run_id": run_id, "status": status, "objective": objective, **coords,
           "test_acc": test_acc, "test_error": None if test_acc is None else 1.0 - test_acc,
           "val_acc": summary.get("val_acc"), "train_images": summary.get("train_images"), "error": error,
           "best_step": None, "best_val_acc": None, "best_test_acc": None, "best_test_error": None, **(best or {})}
    if row.get("curve") == LABEL_CURVE:  # x coordinate: 'all' sits at the number of training images
        row["n_labels"] = row["labels"] if row["labels"] is not None else summary.get("train_images")
    return row


# ---------------------------------------------------------------------------------- label curve
def label_curve(backbone: str, dataset: str, labels: Sequence[int | None] = DEFAULT_LABELS,
                objectives: Sequence[str] = ("ce", "content-style"), steps: int | None = 200, *,
                seeds: Iterable[int] = (0,), n_per_class: int | None = None, experiment: str | None = None,
                root: Path | None = None, store=None, on_row: Callable[[Row], None] | None = None,
                should_stop: Callable[[], bool] = lambda: False, **overrides) -> list[Row]:
    """Test error vs number of labels: one run per (seed, labels, objective); returns the rows.

    Args:
        labels: labelled training images per point (None = all labelled).
        objectives: compared objectives; supervised ones (ce, lacvit) train on the labelled images
            only, content-style also on the unlabelled rest of the training split.
        steps: optimizer steps per run (the same for every point).
        n_per_class: training split cap per class (None = all: the unlabelled pool is the point).
        experiment: tag for the runs (default: a fresh one); overrides: any other TrainConfig field.
    Returns: rows {experiment, run_id, status, objective, curve, labels, n_labels, seed, test_acc, test_error,
        best_step, best_val_acc, best_test_acc, best_test_error, ...}.
    """
    from .paths import home
    from .store import RunStore

    if not objectives:
        raise InvalidConfig("objectives names no objective: give a comma list such as ce,content-style")
    root = Path(root) if root else (store.root if store else home())
    store = store or RunStore(root)
    plans = label_curve_plans(backbone, dataset, labels, objectives, steps, seeds=seeds, n_per_class=n_per_class,
                              experiment=experiment, **overrides)
    return _run_all(plans, store=store, root=root, on_row=on_row, should_stop=should_stop)


def label_curve_plans(backbone: str, dataset: str, labels: Sequence[int | None] = DEFAULT_LABELS,
                      objectives: Sequence[str] = ("ce", "content-style"), steps: int | None = 200, *,
                      seeds: Iterable[int] = (0,), n_per_class: int | None = None, experiment: str | None = None,
                      **overrides) -> list[tuple[object, dict]]:
    """The label curve's runs as (TrainConfig, coordinates) pairs, not yet validated or run: `label_curve`
    trains them in order, the Compare page submits the configs to the background job queue. The configs
    carry the experiment tag and log test accuracy at every evaluation (for the best-on-val error)."""
    from .objectives import objective_entry  # torch: imported when runs are planned, not with the CLI

    experiment = experiment or new_experiment_tag(LABEL_CURVE)
    base = _base_config(backbone, dataset, steps, {"n_per_class": n_per_class, "eval_test": True, **overrides,
                                                   "experiment": experiment})
    plans = []
    for seed in seeds:
        for n_labels in labels:
            if n_labels is not None and (not isinstance(n_labels, int) or n_labels < 1):
                raise InvalidConfig(f"labels must be positive whole numbers or 'all', not {n_labels}")
            for objective in objectives:
                cfg = dataclasses.replace(base, objective=objective, labels=n_labels, seed=seed)
                if n_labels is not None and not objective_entry(objective).semi_supervised:
                    cfg = dataclasses.replace(cfg, batch_size=max(2, min(cfg.batch_size, n_labels)))  # supervised: labelled only
                plans.append((cfg, {"curve": LABEL_CURVE, "labels": n_labels, "seed": seed}))
    return plans


# --------------------------------------------------------------------------------- budget curve
def budget_curve(backbone: str = DEFAULT_BUDGET_BACKBONE, dataset: str = DEFAULT_BUDGET_DATASET,
                 budgets: Sequence[int] = DEFAULT_BUDGETS, strategies: Sequence[str] = DEFAULT_STRATEGIES,
                 steps: int | None = 100, *, objective: str = "ce", seeds: Iterable[int] = DEFAULT_SEEDS,
                 n_per_class: int | None = None, ods_steps: int | None = None,
                 eta: float | None = None, lam: float | None = None, tau: float | None = None, weights: str = "pretrained",
                 from_run: str | None = None, experiment: str | None = None, root: Path | None = None, store=None,
                 on_row: Callable[[Row], None] | None = None, should_stop: Callable[[], bool] = lambda: False,
                 **overrides) -> list[Row]:
    """Test accuracy vs selection budget: per (seed, budget, strategy) a selection, then a run on it.

    The pool (training split, `n_per_class` cap) is embedded once per seed by the frozen backbone
    (or by `from_run`'s encoder) and shared by all strategies and budgets. Selections are saved as
    `<experiment>-<strategy>-b<budget>-s<seed>`. Other arguments as in `label_curve`; eta / lam /
    tau are the selectors' settings and ods_steps ActiveFT / VeCAF's optimisation steps (core/selection.py).
    """
    from . import selection as sel
    from .paths import home
    from .store import RunStore

    root = Path(root) if root else (store.root if store else home())
    store = store or RunStore(root)
    experiment = experiment or new_experiment_tag(BUDGET_CURVE)
    for s in strategies:
        if s not in sel.STRATEGIES:
            raise InvalidConfig(f"unknown strategy {s!r}; choose from: {', '.join(sel.STRATEGIES)}")
    base = _base_config(backbone, dataset, steps, {**overrides, "objective": objective, "experiment": experiment})
    vecaf_kw = {k: v for k, v in {"eta": eta, "lam": lam, "tau": tau}.items() if v is not None}
    ods_kw = {} if ods_steps is None else {"steps": ods_steps}
    uses_text = "vecaf" in strategies or "density" in strategies
    pools: dict[int, object] = {}

    def make_selection(meta: dict) -> None:
        seed = meta["seed"]
        if seed not in pools:
            pools[seed] = sel.load_pool(backbone, dataset, weights=weights, n_per_class=n_per_class, seed=seed, root=root,
                                        device=base.device, image_size=base.image_size, from_run=from_run,
                                        captions="auto" if uses_text and eta != 0 else "none")
        record = sel.select(backbone, dataset, meta["strategy"], meta["budget"], seed=seed, n_per_class=n_per_class,
                            weights=weights, selection=meta["selection"], root=root, from_run=from_run, pool=pools[seed],
                            **(vecaf_kw if meta["strategy"] in sel.CEA_STRATEGIES else {}),
                            **(ods_kw if meta["strategy"] in sel.ODS_STRATEGIES else {}))
        meta.update(coverage_radius=record["coverage_radius"], mean_distance=record["mean_distance"],
                    classes_covered=record["classes_covered"])

    plans = []
    for seed in seeds:
        for budget in budgets:
            if not isinstance(budget, int) or budget < 2:
                raise InvalidConfig(f"budgets must be whole numbers >= 2, not {budget}")
            for strategy in strategies:
                cfg = dataclasses.replace(base, seed=seed, batch_size=max(2, min(base.batch_size, budget)))
                sid = f"{experiment}-{strategy}-b{budget}-s{seed}"
                plans.append((cfg, {"curve": BUDGET_CURVE, "strategy": strategy, "budget": budget, "seed": seed,
                                    "selection": sid, "_select": True}))
    return _run_all(plans, store=store, root=root, on_row=on_row, should_stop=should_stop, before_each=make_selection)


# ------------------------------------------------------------------------------- stored curves
def curve_rows(store, experiment: str) -> list[Row]:
    """The rows of a stored experiment (any status), oldest run first."""
    rows = []
    for rec in reversed(store.list()):
        if rec.config.get("experiment") != experiment:
            continue
        s = rec.summary
        coords = {k: s[k] for k in ("curve", "labels", "seed", "strategy", "budget", "selection", "coverage_radius",
                                    "mean_distance", "classes_covered") if k in s}
        if "curve" not in coords:  # still running: coordinates from the config
            coords = {"curve": BUDGET_CURVE if rec.config.get("selection") else LABEL_CURVE, "seed": rec.config.get("seed"),
                      **({"selection": rec.config.get("selection")} if rec.config.get("selection") else
                         {"labels": rec.config.get("labels")})}
        best = best_on_val(store, rec.id) if coords.get("curve") == LABEL_CURVE else {}
        rows.append(_row(experiment, rec.id, rec.status, rec.objective, coords, s, rec.error, best))
    return rows


def list_experiments(store, kind: str | None = None) -> list[dict]:
    """[{experiment, curve, runs, finished, created, backbone, dataset}] newest first; kind: label-curve | budget-curve."""
    out: dict[str, dict] = {}
    for rec in store.list():
        tag = rec.config.get("experiment")
        if not tag:
            continue
        curve = rec.summary.get("curve") or (BUDGET_CURVE if rec.config.get("selection") else LABEL_CURVE)
        e = out.setdefault(tag, {"experiment": tag, "curve": curve, "runs": 0, "finished": 0, "created": rec.created,
                                 "backbone": rec.backbone, "dataset": rec.dataset})
        e["runs"] += 1
        e["finished"] += rec.status == "finished"
        e["created"] = max(e["created"], rec.created)
    rows = sorted(out.values(), key=lambda e: e["created"], reverse=True)
    return [e for e in rows if kind is None or e["curve"] == kind]


def summarise(rows: list[Row], group: str, x: str, y: str) -> dict[str, list[tuple[float, float, float, int]]]:
    """{group value: [(x, mean y, std y, n), ...] sorted by x} over finished rows with a y value."""
    cells: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get("status") != "finished" or r.get(y) is None or r.get(x) is None:
            continue
        cells.setdefault((r[group], float(r[x])), []).append(float(r[y]))
    out: dict[str, list] = {}
    for (g, xv), ys in sorted(cells.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        out.setdefault(g, []).append((xv, float(np.mean(ys)), float(np.std(ys)), len(ys)))
    return out


# ---------------------------------------------------------------------------------------- figures
def _figure(series: dict, title: str, x_title: str, y_title: str, colors: dict, labels: dict | None = None, log_x=False,
            band: bool = False):
    """One line per series; error bars = std over seeds, or with `band` a shaded mean +- std band."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, points in series.items():
        xs, ys, sds, ns = zip(*points)
        if band and max(ns) > 1:
            upper, lower = [y + d for y, d in zip(ys, sds)], [y - d for y, d in zip(ys, sds)]
            fig.add_trace(go.Scatter(x=list(xs) + list(xs)[::-1], y=upper + lower[::-1], fill="toself", mode="lines",
                                     line={"width": 0}, fillcolor=colors.get(name), opacity=0.18, hoverinfo="skip",
                                     showlegend=False, legendgroup=str(name), name=f"{name} ± std"))
        fig.add_trace(go.Scatter(legendgroup=str(name),
            x=xs, y=ys, mode="lines+markers", name=(labels or {}).get(name, name),
            line={"color": colors.get(name)}, error_y={"type": "data", "array": sds, "visible": max(ns) > 1 and not band},
            customdata=np.array(ns)[:, None], hovertemplate=f"{x_title}: %{{x}}<br>{y_title}: %{{y:.3f}}<br>runs: %{{customdata[0]}}<extra>%{{fullData.name}}</extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, legend_title_text="", margin={"t": 50, "r": 10},
                      hovermode="closest")
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def label_curve_figure(rows: list[Row], colors: dict | None = None, labels: dict | None = None):
    """Plotly figure: test error (y) vs number of labelled images (x, log scale); per objective a solid line
    for the final error and a dashed one for the best error (test error at the best-on-val evaluation)."""
    rows = [r for r in rows if r.get("curve", LABEL_CURVE) == LABEL_CURVE]
    from .objectives import objective_colours  # torch: imported when a figure is drawn, not with the CLI

    colors, labels = {**objective_colours(), **(colors or {})}, labels or {}
    series, names, palette = {}, {}, {}
    for kind, key in (("final", "test_error"), ("best", "best_test_error")):
        for objective, points in summarise(rows, "objective", "n_labels", key).items():
            series[f"{objective}|{kind}"] = points
            names[f"{objective}|{kind}"] = f"{labels.get(objective, objective)} · {kind}"
            palette[f"{objective}|{kind}"] = colors.get(objective)
    fig = _figure(series, "Test error vs labelled images (final: last step; best: the step best on val)", "labelled images",
                  "test error", palette, names, log_x=True)
    for trace, name in zip(fig.data, series):
        if name.endswith("|best"):
            trace.line.dash = "dash"
    return fig


def budget_curve_figure(rows: list[Row], colors: dict | None = None, labels: dict | None = None):
    """Plotly figure: test accuracy (y) vs selection budget (x), one line per strategy, mean +- std band over seeds."""
    series = summarise([r for r in rows if r.get("curve", BUDGET_CURVE) == BUDGET_CURVE], "strategy", "budget", "test_acc")
    n_seeds = len({r.get("seed") for r in rows if r.get("status") == "finished"})
    title = "Test accuracy vs selection budget" + (f" (mean ± std over {n_seeds} seeds)" if n_seeds > 1 else "")
    return _figure(series, title, "selected images", "test accuracy", {**STRATEGY_COLORS, **(colors or {})},
                   {**STRATEGY_NAMES, **(labels or {})}, band=True)


def batches_to_accuracy(store, rows: list[Row], target: float | None = None, metric: str = "val_acc") -> dict:
    """Optimizer steps each finished run needed before its logged `metric` first reached `target`.

    target None: 0.9 x the best `metric` any run of the curve reached (a goal every strategy can aim at).
    Returns {target, metric, rows: [{strategy, budget, seed, run_id, steps (None = never reached), best}],
    series: {strategy: [(budget, mean steps, std, runs that reached it), ...]}} (series from reached runs only)."""
    hist = {}
    for r in rows:
        if r.get("status") == "finished" and r.get("run_id") and r.get("curve", BUDGET_CURVE) == BUDGET_CURVE:
            hist[r["run_id"]] = (r, store.metrics(r["run_id"], [metric]).get(metric, []))
    best = {run: max((v for _, v in h if v is not None), default=None) for run, (_, h) in hist.items()}
    reached = [b for b in best.values() if b is not None]
    if target is None:
        target = round(0.9 * max(reached), 4) if reached else None
    out = []
    for run, (r, h) in hist.items():
        steps = next((int(st) for st, v in h if v is not None and target is not None and v >= target), None)
        out.append({"strategy": r.get("strategy"), "budget": r.get("budget"), "seed": r.get("seed"), "run_id": run,
                    "steps": steps, "best": best[run]})
    series = summarise([{**o, "status": "finished"} for o in out if o["steps"] is not None], "strategy", "budget", "steps")
    return {"target": target, "metric": metric, "rows": out, "series": series}


def batches_figure(result: dict, colors: dict | None = None, labels: dict | None = None):
    """Plotly figure: optimizer steps to reach the target (y) vs selection budget (x), one line per strategy."""
    target = result.get("target")
    title = f"Steps to reach {result.get('metric', 'val_acc')} ≥ {target:.3f}" if target is not None else "Steps to target"
    return _figure(result.get("series", {}), title, "selected images", "optimizer steps (batches)",
                   {**STRATEGY_COLORS, **(colors or {})}, {**STRATEGY_NAMES, **(labels or {})}, band=True)


# ------------------------------------------------------------------------------------ inputs
def int_list(value: str, allow_all: bool = False) -> list:
    """A comma list such as "10,100,all" -> [10, 100, None] (None = all, when allowed): the CLI's and the Compare page's."""
    out = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if allow_all and part.lower() == "all":
            out.append(None)
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise InvalidConfig(f"expected a comma list of whole numbers{' or all' if allow_all else ''}, not {value!r}") from None
    if not out:
        raise InvalidConfig(f"empty list {value!r}")
    return out
