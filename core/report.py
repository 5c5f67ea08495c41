"""Views of finished runs: picking runs, plotly figures, and exports (HTML report, projector TSV, Parquet).

    resolve_run(store, "20261130-0229")      -> RunRecord (exact id, unique prefix or 'latest')
    load_run_view(store, run_id, "val")      -> RunView: before / after EmbeddingSets + summary
    comparison_html(views, ...)              -> one self-contained HTML file (plotly.js inlined)
    projector_files(sets) / export_parquet(sets, path)

Figures are plain `plotly.graph_objects.Figure`s so the pages (st.plotly_chart) and the HTML
report draw the same thing. No streamlit import here.
"""
from __future__ import annotations

import io
import logging
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .embeddings import EmbeddingSet, list_snapshots, load_embeddings, load_run_embeddings
from .errors import EmbedLabError, InvalidConfig, UnknownName
from .metrics import HIGHER_IS_BETTER, analyze, best_of, default_output
from .safe_text import html_text, plotly_text, tsv_cell

_logger = logging.getLogger(__name__)

OBJECTIVE_ORDER = ("ce", "lacvit", "flyp")  # the trio compared by default
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]  # class colours
RUN_COLOURS = ["#1565c0", "#e65100", "#2e7d32", "#6a1b9a"]  # one per compared run (at most 4)
METRIC_ROWS = [  # (key, display name) of the metrics table, in order
    ("val_acc", "val accuracy (top-1)"), ("test_acc", "test accuracy (top-1)"),
    ("ood_acc", "OOD accuracy (top-1, shifted test)"), ("zeroshot_acc", "zero-shot accuracy"),
    ("knn_acc", "kNN accuracy (k=20, cosine, LOO)"), ("linear_probe_acc", "linear-probe accuracy"),
    ("silhouette", "silhouette (cosine)"), ("alignment", "alignment (lower = tighter classes)"),
    ("uniformity", "uniformity (lower = more spread)"), ("pos_mean_cos", "mean cos, same class"),
    ("neg_mean_cos", "mean cos, different class"), ("cos_gap", "cos gap (same - different)"),
]


# ---------------------------------------------------------------------------------------- runs
@dataclass
class RunView:
    """One finished run, as the Explore / Compare pages and the report see it."""

    id: str
    config: dict
    summary: dict
    dir: Path
    split: str
    after: EmbeddingSet | None
    before: EmbeddingSet | None = None

    @property
    def objective(self) -> str:
        return self.config.get("objective", "")

    @property
    def dataset(self) -> str:
        return self.config.get("dataset", "")

    @property
    def label(self) -> str:
        return run_label(self.id, self.config)

    @property
    def short(self) -> str:
        return run_short(self.id, self.config)

    def outputs(self) -> list[str]:
        return list(self.after.vectors) if self.after is not None else []

    def main_output(self) -> str:
        return default_output(self.after)


def run_label(run_id: str, config: dict) -> str:
    """'LaCViT · test_vit · mnist5k · 81b8' (short and unique enough for legends and columns)."""
    names = {"ce": "CE", "lacvit": "LaCViT", "flyp": "FLYP"}
    obj = config.get("objective", "")
    return f"{names.get(obj, obj)} · {config.get('backbone', '')} · {config.get('dataset', '')} · {run_id.rsplit('-', 1)[-1]}"


def run_short(run_id: str, config: dict) -> str:
    """'LaCViT · 81b8': for pane titles and table columns, where space is tight."""
    names = {"ce": "CE", "lacvit": "LaCViT", "flyp": "FLYP"}
    obj = config.get("objective", "")
    return f"{names.get(obj, obj)} · {run_id.rsplit('-', 1)[-1]}"


def has_results(store, run_id: str) -> bool:
    return (store.run_dir(run_id) / "embeddings" / "after-val" / "meta.json").exists()


def finished_runs(store) -> list:
    """Finished runs that have stored embeddings, newest first."""
    return [r for r in store.list(status=["finished"]) if has_results(store, r.id)]


def resolve_run(store, name: str):
    """A run by exact id, unique id prefix, or 'latest' (the newest finished run)."""
    if name == "latest":
        runs = finished_runs(store)
        if not runs:
            raise UnknownName(f"no finished runs in {store.root}")
        return runs[0]
    if store.exists(name):
        return store.get(name)
    matches = [r for r in store.list() if r.id.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UnknownName(f"run {name!r} is ambiguous: {', '.join(r.id for r in matches[:5])}")
    raise UnknownName(f"no run {name!r} in {store.root} (see `python -m core runs`)")


def default_compare_runs(runs: Sequence) -> list[str]:
    """The latest CE / LaCViT / FLYP runs on one dataset (the dataset of the newest run that has at
    least two of them); else the two newest runs. `runs` newest first."""
    for dataset in dict.fromkeys(r.dataset for r in runs):
        trio = {}
        for r in runs:
            if r.dataset == dataset and r.objective in OBJECTIVE_ORDER and r.objective not in trio:
                trio[r.objective] = r.id
        if len(trio) >= 2:
            return [trio[o] for o in OBJECTIVE_ORDER if o in trio]
    return [r.id for r in runs[:2]]


def load_run_view(store, run_id: str, split: str = "val") -> RunView:
    rec = resolve_run(store, run_id)
    run_dir = store.run_dir(rec.id)
    after = load_run_embeddings(run_dir, "after", split)
    if after is None:
        raise EmbedLabError(f"run {rec.id!r} has no stored '{split}' embeddings ({rec.status}); only finished runs can be explored")
    return RunView(rec.id, rec.config, rec.summary, run_dir, split, after, load_run_embeddings(run_dir, "before", split))


def positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row positions of the sample ids `wanted` in `ids` (every wanted id must be present)."""
    index = {int(v): i for i, v in enumerate(np.asarray(ids))}
    return np.array([index[int(w)] for w in np.asarray(wanted)], dtype=np.int64)


def load_snapshots(run_dir: Path) -> list[tuple[int, EmbeddingSet]]:
    return [(step, load_embeddings(p)) for step, p in list_snapshots(run_dir)]


# ------------------------------------------------------------------------------------ explore
def explore_data(view: RunView, *, output: str | None = None, method: str = "pca", dims: int = 2, seed: int = 0,
                 max_points: int | None = None, phases: Sequence[str] = ("before", "after")) -> dict[str, Any]:
    """Aligned before / after panes of one run for the Explore view.

    A seeded subsample of at most `max_points` samples is drawn (the same samples in every pane);
    each pane is projected on its own and the 'before' pane is rotated onto the 'after' pane
    (orthogonal Procrustes on the shared samples). FLYP anchors are placed out of sample.
    """
    from .metrics import subsample
    from .projections import project_panes

    after = view.after
    output = output or view.main_output()
    rows = subsample(len(after), max_points, seed)
    ids = after.ids[rows]
    sets, titles, used = [], [], []
    for phase in phases:
        es = view.before if phase == "before" else after
        if es is None or output not in es.vectors:
            continue
        sets.append({"ids": ids, "vectors": es.vectors[output][positions(es.ids, ids)], "extra": _anchors_for(es, output)})
        titles.append(f"{phase} fine-tuning")
        used.append(phase)
    if not sets:
        raise EmbedLabError(f"run {view.id!r} has no {'/'.join(phases)} embeddings for output {output!r}")
    proj = project_panes(sets, method, dims, seed=seed, reference=len(sets) - 1)
    return {"ids": ids, "rows": rows, "labels": after.labels[rows], "preds": None if after.preds is None else after.preds[rows],
            "classes": list(after.classes), "phases": used, "titles": titles, "points": proj["points"],
            "anchors": proj["extra"], "align": proj["align"], "output": output, "n_total": len(after)}


def neighbour_grid(view: RunView, sample_id: int, *, output: str, k: int = 8) -> dict[str, list[dict]]:
    """The k nearest neighbours (cosine, in the stored embedding space) of one sample, before and after."""
    from .metrics import nearest_neighbours

    out = {}
    for phase, es in (("before", view.before), ("after", view.after)):
        if es is None or output not in es.vectors:
            continue
        where = np.flatnonzero(es.ids == sample_id)
        if not len(where):
            continue
        idx, sims = nearest_neighbours(es.vectors[output], int(where[0]), k)
        out[phase] = [{"id": int(es.ids[i]), "label": int(es.labels[i]), "cos": float(c),
                       "pred": None if es.preds is None else int(es.preds[i])} for i, c in zip(idx, sims)]
    return out


# ------------------------------------------------------------------------------------ figures
def class_colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _go():
    import plotly.graph_objects as go

    return go


def projection_figure(panes: Sequence[dict], labels: np.ndarray, classes: Sequence[str], *, height: int = 460,
                      title: str | None = None) -> Any:
    """Static side-by-side scatter panes coloured by label (the report's version of the Explore view).

    panes: [{"title", "points": [N, 2|3], "anchors": [C, 2|3] or None}]."""
    go = _go()
    from plotly.subplots import make_subplots

    dims = panes[0]["points"].shape[1]
    spec = {"type": "scene"} if dims == 3 else {}
    fig = make_subplots(rows=1, cols=len(panes), subplot_titles=[plotly_text(p["title"]) for p in panes], specs=[[spec] * len(panes)],
                        horizontal_spacing=0.03)
    labels = np.asarray(labels)
    big = len(labels) > 3000
    for col, pane in enumerate(panes, start=1):
        pts = np.asarray(pane["points"])
        for c in np.unique(labels):
            m = labels == c
            name = plotly_text(classes[c] if c < len(classes) else c)
            kw = dict(x=pts[m, 0], y=pts[m, 1], mode="markers", name=name, legendgroup=str(c), showlegend=col == 1,
                      marker=dict(color=class_colour(int(c)), size=3 if big else 5, opacity=0.8),
                      hovertemplate="%{fullData.name}<extra></extra>")
            if dims == 3:
                fig.add_trace(go.Scatter3d(z=pts[m, 2], **kw), row=1, col=col)
            else:
                fig.add_trace((go.Scattergl if big else go.Scatter)(**kw), row=1, col=col)
        anchors = pane.get("anchors")
        if anchors is not None and len(anchors):
            a = np.asarray(anchors)
            kw = dict(x=a[:, 0], y=a[:, 1], mode="markers+text", text=[plotly_text(c) for c in list(classes)[:len(a)]], textposition="top center",
                      name="class anchors", legendgroup="anchors", showlegend=col == 1,
                      marker=dict(symbol="diamond" if dims == 3 else "star", size=8 if dims == 3 else 15,
                                  color=[class_colour(i) for i in range(len(a))], line=dict(color="#000", width=1)))
            fig.add_trace(go.Scatter3d(z=a[:, 2], **kw) if dims == 3 else go.Scatter(**kw), row=1, col=col)
    if dims == 2:
        for col in range(1, len(panes) + 1):
            suffix = "" if col == 1 else str(col)
            fig.update_layout({f"xaxis{suffix}": dict(showticklabels=False, zeroline=False, showgrid=False),
                               f"yaxis{suffix}": dict(showticklabels=False, zeroline=False, showgrid=False,
                                                      scaleanchor=f"x{suffix}")})
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=60 if title else 40, b=10), title=title,
                      legend=dict(orientation="h", y=-0.02, yanchor="top"), template="plotly_white")
    return fig


def hist_figure(series: Sequence[tuple[str, dict]], *, height: int = 360, title: str = "Cosine similarity of pairs") -> Any:
    """Positive (same class, solid) and negative (different class, dashed) pair cosine histograms,
    one colour per series; `series` = [(name, {"bin_edges", "pos_hist", "neg_hist"}), ...]."""
    go = _go()
    fig = go.Figure()
    # show only the bins where some series has mass (similarities of a collapsed space crowd near 1)
    mass = np.zeros(len(series[0][1]["pos_hist"])) if series else np.zeros(0)
    for _, hist in series:
        mass += np.asarray(hist["pos_hist"]) + np.asarray(hist["neg_hist"])
    nz = np.flatnonzero(mass > 0)
    lo, hi = (max(0, nz[0] - 2), min(len(mass), nz[-1] + 3)) if len(nz) else (0, len(mass))
    for i, (name, hist) in enumerate(series):
        edges = np.asarray(hist["bin_edges"])
        centres = ((edges[:-1] + edges[1:]) / 2)[lo:hi]
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for kind, dash in (("pos", "solid"), ("neg", "dash")):
            fig.add_trace(go.Scatter(x=centres, y=np.asarray(hist[f"{kind}_hist"])[lo:hi], mode="lines",
                                     line=dict(color=colour, dash=dash, shape="hvh"),
                                     name=f"{plotly_text(name)}: {'same class' if kind == 'pos' else 'different class'}",
                                     hovertemplate="cos %{x:.3f}: %{y:.1%} of pairs<extra></extra>"))
    fig.update_layout(title=title, height=height, xaxis_title="cosine similarity", yaxis_title="fraction of pairs",
                      yaxis_tickformat=".0%", template="plotly_white", margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(font=dict(size=11)))
    return fig


def per_class_figure(classes: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, height: int = 340) -> Any:
    go = _go()
    fig = go.Figure()
    for i, (name, values) in enumerate(series):
        fig.add_trace(go.Bar(x=[plotly_text(c) for c in classes], y=[np.nan if v is None else v for v in values], name=plotly_text(name),
                             marker_color=RUN_COLOURS[i % len(RUN_COLOURS)], hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    fig.update_layout(barmode="group", title="Per-class accuracy", yaxis_tickformat=".0%", yaxis_range=[0, 1], height=height,
                      template="plotly_white", margin=dict(l=10, r=10, t=50, b=10))
    return fig


def confusion_figure(classes: Sequence[str], series: Sequence[tuple[str, Sequence[Sequence[int]]]], *, height: int = 380) -> Any:
    """Row-normalised confusion matrices side by side (hover shows counts)."""
    go = _go()
    from plotly.subplots import make_subplots

    names = [plotly_text(c) for c in classes]
    fig = make_subplots(rows=1, cols=len(series), subplot_titles=[plotly_text(s[0]) for s in series], horizontal_spacing=0.06)
    for col, (_, cm) in enumerate(series, start=1):
        cm = np.asarray(cm, dtype=float)
        rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        fig.add_trace(go.Heatmap(z=rows, x=names, y=names, customdata=cm, coloraxis="coloraxis",
                                 hovertemplate="true %{y}, predicted %{x}: %{customdata:.0f} (%{z:.0%})<extra></extra>"),
                      row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col, title_text="true" if col == 1 else None)
        fig.update_xaxes(title_text="predicted", row=1, col=col)
    fig.update_layout(height=height, coloraxis=dict(colorscale="Blues", cmin=0, cmax=1), title="Confusion matrices (row-normalised)",
                      template="plotly_white", margin=dict(l=10, r=10, t=70, b=10))
    return fig


def wise_ft_figure(series: Sequence[tuple[str, Sequence[dict]]], *, height: int = 320) -> Any:
    """Val (solid) and OOD (dotted) accuracy along theta(a) = (1 - a) zero-shot + a fine-tuned, per FLYP run."""
    go = _go()
    fig = go.Figure()
    for i, (name, curve) in enumerate(series):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        fig.add_trace(go.Scatter(x=[p["alpha"] for p in curve], y=[p["val_acc"] for p in curve], mode="lines+markers",
                                 name=plotly_text(f"{name} · val"), line=dict(color=colour),
                                 hovertemplate="alpha %{x:.1f}: %{y:.1%}<extra></extra>"))
        if any(p.get("ood_acc") is not None for p in curve):
            fig.add_trace(go.Scatter(x=[p["alpha"] for p in curve], y=[p.get("ood_acc") for p in curve], mode="lines+markers",
                                     name=plotly_text(f"{name} · OOD"), line=dict(color=colour, dash="dot"),
                                     hovertemplate="alpha %{x:.1f}: OOD %{y:.1%}<extra></extra>"))
    fig.update_layout(title="WiSE-FT: weight-space ensembles of zero-shot (alpha 0) and fine-tuned (alpha 1)",
                      xaxis_title="alpha", yaxis_title="accuracy", yaxis_tickformat=".0%", height=height,
                      template="plotly_white", margin=dict(l=10, r=10, t=50, b=10))
    return fig


FRONTIER_MIN_SPAN = 0.3  # the frontier's axes span at least 30 points: a 2-point wobble must not fill the plot


def frontier_data(runs: Sequence[tuple[str, dict, dict]]) -> dict[str, Any]:
    """The ID-OOD frontier from stored numbers: `runs` are (name, config, summary) of the compared runs.

    Returns {"curves": [{"name", "alpha", "id", "ood", "shift", "dataset"}], "references": [{"name", "objective",
    "id", "ood"}], "skipped": [name]}: one curve per run whose WiSE-FT sweep holds OOD accuracies (x = val accuracy,
    the in-distribution axis; y = ood_acc), and as reference points the other runs on the same dataset and shift
    (CE, LaCViT) of the same comparison: same dataset, shift, budget and seed as the first curve. The others, and runs
    without an OOD number, are listed in `skipped`."""
    curves, others = [], []
    for name, config, summary in runs:
        wise = [p for p in summary.get("wise_ft") or [] if p.get("val_acc") is not None and p.get("ood_acc") is not None]
        dataset = config.get("dataset") or summary.get("dataset")
        if wise:
            wise = sorted(wise, key=lambda p: p["alpha"])
            curves.append({"name": name, "alpha": [float(p["alpha"]) for p in wise], "id": [float(p["val_acc"]) for p in wise],
                           "ood": [float(p["ood_acc"]) for p in wise], "shift": summary.get("ood_shift"), "dataset": dataset,
                           "budget": (config.get("steps"), config.get("epochs"), config.get("seed"))})
        else:
            others.append((name, config, summary, dataset))
    anchor = curves[0] if curves else None
    references, skipped = [], []
    for name, config, summary, dataset in others:
        same = anchor is None or (dataset == anchor["dataset"] and summary.get("ood_shift") == anchor["shift"]
                                  and (config.get("steps"), config.get("epochs"), config.get("seed")) == anchor["budget"])
        if same and summary.get("val_acc") is not None and summary.get("ood_acc") is not None:
            references.append({"name": name, "objective": config.get("objective", ""), "id": float(summary["val_acc"]),
                               "ood": float(summary["ood_acc"])})
        else:
            skipped.append(name)
    return {"curves": curves, "references": references, "skipped": skipped}


def frontier_range(values: Sequence[float], min_span: float = FRONTIER_MIN_SPAN) -> list[float]:
    """One axis range for both axes: every value with a margin, at least `min_span` wide, inside [0, 1]."""
    lo, hi = max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05)
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
        lo, hi = (0.0, min_span) if lo < 0 else (1.0 - min_span, 1.0) if hi > 1 else (lo, hi)
    return [lo, hi]


def frontier_figure(data: dict, *, height: int = 460) -> Any:
    """x = in-distribution (val) accuracy, y = OOD accuracy: each WiSE-FT sweep as a curve (one point per alpha,
    endpoints labelled zero-shot and fine-tuned), the other runs as reference points; one range on both axes, y = x dotted."""
    go = _go()
    fig = go.Figure()
    values = [v for c in data["curves"] for v in (*c["id"], *c["ood"])] + [v for r in data["references"] for v in (r["id"], r["ood"])]
    rng = frontier_range(values or [0.5])
    fig.add_trace(go.Scatter(x=rng, y=rng, mode="lines", name="OOD = ID", line=dict(color="#bbb", dash="dot"), hoverinfo="skip"))
    for i, c in enumerate(data["curves"]):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        text = ["zero-shot" if k == 0 else "fine-tuned" if k == len(c["alpha"]) - 1 else "" for k in range(len(c["alpha"]))]
        fig.add_trace(go.Scatter(x=c["id"], y=c["ood"], mode="lines+markers+text", name=plotly_text(f"{c['name']} · WiSE-FT"), text=text,
                                 textposition="top center", customdata=c["alpha"], line=dict(color=colour),
                                 hovertemplate="alpha %{customdata:.2f}: ID %{x:.1%}, OOD %{y:.1%}<extra></extra>"))
    symbols = {"ce": "square", "lacvit": "diamond"}
    for j, r in enumerate(data["references"]):
        colour = RUN_COLOURS[(len(data["curves"]) + j) % len(RUN_COLOURS)]
        fig.add_trace(go.Scatter(x=[r["id"]], y=[r["ood"]], mode="markers+text", name=plotly_text(r["name"]), text=[plotly_text(r["name"])],
                                 textposition="bottom center", marker=dict(size=13, color=colour, symbol=symbols.get(r["objective"], "circle")),
                                 hovertemplate="%{text}: ID %{x:.1%}, OOD %{y:.1%}<extra></extra>"))
    shift = next((c["shift"] for c in data["curves"] if c.get("shift")), None)
    fig.update_layout(title="ID-OOD frontier: WiSE-FT from zero-shot to fine-tuned" + (f" (OOD: {shift})" if shift else ""),
                      xaxis=dict(title="in-distribution accuracy (val)", range=rng, tickformat=".0%"),
                      yaxis=dict(title="OOD accuracy (shifted test)", range=rng, tickformat=".0%"),
                      height=height, template="plotly_white", margin=dict(l=10, r=10, t=50, b=10))
    return fig


def trajectory_figure(frames: Sequence[tuple[int, np.ndarray]], labels: np.ndarray, classes: Sequence[str], *,
                      height: int = 520, title: str = "", active: int | None = None) -> Any:
    """An animation over training snapshots (frames already aligned): play button + step slider, starting
    at frame `active` (default: the last)."""
    go = _go()
    labels = np.asarray(labels)
    dims = frames[0][1].shape[1]
    big = len(labels) > 3000
    cls = np.unique(labels)

    def traces(y):
        out = []
        for c in cls:
            m = labels == c
            kw = dict(x=y[m, 0], y=y[m, 1], mode="markers", name=plotly_text(classes[c] if c < len(classes) else c),
                      marker=dict(color=class_colour(int(c)), size=3 if big else 5, opacity=0.8), hoverinfo="name")
            out.append(go.Scatter3d(z=y[m, 2], **kw) if dims == 3 else (go.Scattergl if big else go.Scatter)(**kw))
        return out

    allpts = np.vstack([y for _, y in frames])
    lo, hi = allpts.min(0), allpts.max(0)
    pad = (hi - lo) * 0.05 + 1e-6
    active = len(frames) - 1 if active is None else min(max(0, active), len(frames) - 1)
    fig = go.Figure(data=traces(frames[active][1]),
                    frames=[go.Frame(data=traces(y), name=str(step)) for step, y in frames])
    anim = {"frame": {"duration": 600, "redraw": True}, "transition": {"duration": 300}, "mode": "immediate", "fromcurrent": True}
    steps = [{"label": str(step), "method": "animate",
              "args": [[str(step)], {"frame": {"duration": 0, "redraw": True}, "mode": "immediate", "transition": {"duration": 0}}]}
             for step, _ in frames]
    layout = dict(height=height, title=title or "Embeddings along training (each frame aligned to the previous one)",
                  template="plotly_white", margin=dict(l=10, r=10, t=50, b=10),
                  updatemenus=[{"type": "buttons", "showactive": False, "x": 0, "y": 0, "xanchor": "left", "yanchor": "top",
                                "pad": {"t": 30}, "buttons": [{"label": "▶ play", "method": "animate", "args": [None, anim]},
                                                              {"label": "❚❚ pause", "method": "animate",
                                                               "args": [[None], {"frame": {"duration": 0}, "mode": "immediate"}]}]}],
                  sliders=[{"active": active, "currentvalue": {"prefix": "step "}, "pad": {"t": 30, "l": 130},
                            "steps": steps}])
    if dims == 3:
        layout["scene"] = {ax: {"range": [float(lo[i] - pad[i]), float(hi[i] + pad[i])], "showticklabels": False, "title": ""}
                           for i, ax in enumerate(("xaxis", "yaxis", "zaxis"))}
        layout["scene"]["aspectmode"] = "cube"
    else:
        layout["xaxis"] = {"range": [float(lo[0] - pad[0]), float(hi[0] + pad[0])], "showticklabels": False, "zeroline": False}
        layout["yaxis"] = {"range": [float(lo[1] - pad[1]), float(hi[1] + pad[1])], "showticklabels": False, "zeroline": False}
    fig.update_layout(**layout)
    return fig


# --------------------------------------------------------------------------------- the table
def metrics_table(results: Sequence[dict], names: Sequence[str]) -> tuple[list[dict], dict[str, int | None]]:
    """Rows [{"metric", <name>: value, ...}] for the keys any result has, and the best column per row.
    Rows with intervals (accuracies) carry "ci": {name: [lo, hi]}, and their best is marked only when
    its interval clears the runner-up's (sure_best); otherwise the difference may be noise."""
    rows, best = [], {}
    for key, title in METRIC_ROWS:
        values = [r.get(key) for r in results]
        if all(v is None for v in values):
            continue
        row = {"metric": title, "key": key}
        for n, v in zip(names, values):
            row[n] = v
        cis = [r.get(f"{key}_ci95") for r in results]
        if any(cis):
            row["ci"] = dict(zip(names, cis))
        rows.append(row)
        best[title] = best_of(values, key) if len(results) > 1 or key in HIGHER_IS_BETTER else None
        if any(cis) and best[title] is not None and not sure_best(values, cis, best[title]):
            best[title] = None
    return rows, best


def sure_best(values: Sequence[float | None], cis: Sequence[Sequence[float] | None], i: int) -> bool:
    """Whether value i is better than every other by non-overlapping 95 % intervals (unpaired: the
    runs' models differ, so there is no shared before/after to pair on)."""
    from .metrics import delta_verdict

    return all(delta_verdict(values[i], cis[i], v, c) == "better" for j, (v, c) in enumerate(zip(values, cis))
               if j != i and v is not None)


def ci_text(ci: Sequence[float] | None, n: int | None = None) -> str:
    """'95 % CI 71.5–90.5 % (n = 59)' for an accuracy interval; '' without one."""
    if not ci:
        return ""
    return f"95 % CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f} %" + (f" (n = {n:,})" if n else "")


def delta_colour(verdict: str | None) -> str:
    """st.metric's delta_color for a before/after verdict: coloured only for a sure change."""
    return "normal" if verdict in ("better", "worse") else "off"


def metrics_dataframe(results: Sequence[dict], names: Sequence[str]):
    """(DataFrame indexed by metric, {metric: best column name}) for st.dataframe + Styler."""
    import pandas as pd

    rows, best = metrics_table(results, names)
    df = pd.DataFrame(rows).drop(columns=["key", "ci"], errors="ignore").set_index("metric").astype(float) if rows else pd.DataFrame()
    return df, {m: (names[i] if i is not None else None) for m, i in best.items()}


def _table_html(results: Sequence[dict], names: Sequence[str]) -> str:
    rows, best = metrics_table(results, names)
    head = "".join(f"<th>{html_text(n)}</th>" for n in names)
    body = []
    for row in rows:
        cells = []
        for i, n in enumerate(names):
            v = row[n]
            text = "–" if v is None else f"{v:.3f}"
            ci = row.get("ci", {}).get(n)
            if ci:
                text += f" <span class='ci'>[{ci[0]:.3f}, {ci[1]:.3f}]</span>"
            cells.append(f"<td class='best'>{text} ★</td>" if best[row['metric']] == i and len(names) > 1 else f"<td>{text}</td>")
        body.append(f"<tr><th>{html_text(row['metric'])}</th>{''.join(cells)}</tr>")
    return f"<table class='metrics'><thead><tr><th>metric</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------- comparing runs
def compare_data(views: Sequence[RunView], *, method: str = "pca", dims: int = 2, seed: int = 0, outputs: Sequence[str] | None = None,
                 results: Sequence[dict] | None = None, align: str = "procrustes") -> dict[str, Any]:
    """Metrics and aligned projections of several runs on their shared sample ids."""
    from .projections import project_panes

    outputs = list(outputs) if outputs else [v.main_output() for v in views]
    if results is None:
        results = [analyze(v.dir, split=v.split, output=o, details=True) for v, o in zip(views, outputs)]
    shared = views[0].after.ids
    for v in views[1:]:
        shared = np.intersect1d(shared, v.after.ids)
    sets = []
    for v, o in zip(views, outputs):
        sets.append({"ids": v.after.ids, "vectors": v.after.vectors[o], "extra": v.after.anchors
                     if v.after.anchors is not None and v.after.anchors.shape[1] == v.after.vectors[o].shape[1] else None})
    proj = project_panes(sets, method, dims, seed=seed, align=align)
    return {"outputs": outputs, "results": list(results), "projection": proj, "shared_ids": shared}


def comparison_html(views: Sequence[RunView], *, method: str = "pca", dims: int = 2, seed: int = 0,
                    outputs: Sequence[str] | None = None, data: dict | None = None, title: str = "EmbedLab comparison") -> str:
    """A self-contained HTML report: plotly.js is inlined once, so the file opens offline on its own."""
    from .projections import METHOD_LABELS

    data = data or compare_data(views, method=method, dims=dims, seed=seed, outputs=outputs)
    results, proj = data["results"], data["projection"]
    names = [v.label for v in views]
    figs = []
    # projections, on the ids every run shares (so that the panes are comparable)
    shared = data["shared_ids"]
    if len(shared):
        panes = []
        for v, o, pts, ext in zip(views, data["outputs"], proj["points"], proj["extra"]):
            panes.append({"title": f"{v.short} ({o})", "points": pts[positions(v.after.ids, shared)], "anchors": ext})
        labels = views[0].after.labels[positions(views[0].after.ids, shared)]
        figs.append(("Embeddings", projection_figure(panes, labels, views[0].after.classes, height=480,
                                                     title=f"{METHOD_LABELS.get(method, method)} {dims}-D, panes aligned by orthogonal "
                                                           "Procrustes onto the first run on shared samples")))
    hists = [(n, r["hist"]) for n, r in zip(names, results) if "hist" in r]
    if hists:
        figs.append(("Pair similarities", hist_figure(hists)))
    per_class = [(n, r["per_class_acc"]) for n, r in zip(names, results) if r.get("per_class_acc")]
    classes = results[0].get("classes") or views[0].after.classes
    if per_class:
        figs.append(("Per-class accuracy", per_class_figure(classes, per_class)))
    conf = [(v.short, r["confusion"]) for v, r in zip(views, results) if r.get("confusion")]
    if conf:
        figs.append(("Confusion", confusion_figure(classes, conf)))
    wise = [(n, r["wise_ft"]) for n, r in zip(names, results) if r.get("wise_ft")]
    if wise:
        figs.append(("WiSE-FT", wise_ft_figure(wise)))
    frontier = frontier_data([(n, v.config, v.summary) for n, v in zip(names, views)])
    if frontier["curves"]:
        figs.append(("ID-OOD frontier", frontier_figure(frontier)))
    return _html_page(title, views, names, results, figs)


def seeds_html(views: Sequence[RunView], results: Sequence[dict]) -> str:
    """'Mean ± spread over seeds' for runs that differ only in their seed ('' when no two do)."""
    from .metrics import mean_spread_text, seed_groups

    groups = [g for g in seed_groups([(v.id, v.config, r) for v, r in zip(views, results)]) if len(g["runs"]) > 1]
    if not groups:
        return ""
    keys = [k for k in ("val_acc", "test_acc", "knn_acc", "linear_probe_acc") if any(f"{k}_mean" in g for g in groups)]
    head = "".join(f"<th>{html_text(k)}</th>" for k in keys)
    body = "".join(f"<tr><th>{html_text(str(g['objective']))} · seeds {html_text(', '.join(map(str, g['seeds'])))}</th>"
                   + "".join(f"<td>{html_text(mean_spread_text(g, k))}</td>" for k in keys) + "</tr>" for g in groups)
    return (f"<h2>Mean ± spread over seeds</h2><table class='metrics'><thead><tr><th>runs (same settings)</th>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table><p>Spread: the sample standard deviation across seeds.</p>")


def _html_page(title: str, views: Sequence[RunView], names: Sequence[str], results: Sequence[dict], figs: Sequence[tuple[str, Any]]) -> str:
    parts = []
    for i, (heading, fig) in enumerate(figs):
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False, "showSendToCloud": False})
        parts.append(f"<section><h2>{html_text(heading)}</h2>{div}</section>")
    runs = "".join(f"<li><b>{html_text(n)}</b> <code>{html_text(v.id)}</code> split {html_text(v.split)}, "
                   f"{len(v.after)} samples</li>" for n, v in zip(names, views))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html_text(title)}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1280px; color: #222; }}
table.metrics {{ border-collapse: collapse; margin: 8px 0 24px; }}
table.metrics th, table.metrics td {{ border-bottom: 1px solid #ddd; padding: 4px 12px; text-align: right; }}
table.metrics th:first-child {{ text-align: left; font-weight: normal; }}
td.best {{ font-weight: 700; background: #e8f5e9; }}
.ci {{ color: #777; font-size: 85%; font-weight: 400; }}
section {{ margin: 24px 0; }}
</style></head><body>
<h1>{html_text(title)}</h1>
<p>Generated {time.strftime('%Y-%m-%d %H:%M')} by EmbedLab. Best value per row marked ★ (alignment, uniformity and
different-class cosine: lower is better; an accuracy only when its 95 % interval clears every other run's). Accuracies
carry their Wilson 95 % interval in brackets. kNN: leave-one-out on the split, k=20, cosine. Linear probe: logistic
regression, 5-fold cross-validated below 1,000 samples (else a stratified 70/30 split).</p>
<ul>{runs}</ul>
<h2>Metrics</h2>
{_table_html(results, names)}
{seeds_html(views, results)}
{''.join(parts)}
</body></html>
"""


def run_report_html(view: RunView, *, method: str = "pca", dims: int = 2, seed: int = 0, output: str | None = None) -> str:
    """A single-run report: before vs after, metrics, histograms, per-class accuracy, confusion, WiSE-FT."""
    from .projections import METHOD_LABELS, project_panes

    output = output or view.main_output()
    result = analyze(view.dir, split=view.split, output=output, details=True)
    figs = []
    sets = [{"ids": view.after.ids, "vectors": view.after.vectors[output], "extra": _anchors_for(view.after, output)}]
    titles = [f"after ({output})"]
    if view.before is not None and output in view.before.vectors:
        sets.insert(0, {"ids": view.before.ids, "vectors": view.before.vectors[output], "extra": _anchors_for(view.before, output)})
        titles.insert(0, f"before ({output})")
    proj = project_panes(sets, method, dims, seed=seed)
    panes = [{"title": t, "points": p, "anchors": e} for t, p, e in zip(titles, proj["points"], proj["extra"])]
    title = f"{METHOD_LABELS.get(method, method)} {dims}-D, before aligned onto after (Procrustes)"
    figs.append(("Embeddings", projection_figure(panes, view.after.labels, view.after.classes, title=title)))
    hists = [("after", result["hist"])] + ([("before", result["hist_before"])] if "hist_before" in result else [])
    figs.append(("Pair similarities", hist_figure(hists)))
    if result.get("per_class_acc"):
        figs.append(("Per-class accuracy", per_class_figure(result["classes"], [("after", result["per_class_acc"])])))
        figs.append(("Confusion", confusion_figure(result["classes"], [("after", result["confusion"])])))
    if result.get("wise_ft"):
        figs.append(("WiSE-FT", wise_ft_figure([(view.label, result["wise_ft"])])))
        frontier = frontier_data([(view.label, view.config, view.summary)])
        if frontier["curves"]:
            figs.append(("ID-OOD frontier", frontier_figure(frontier)))
    before = {k[:-7]: v for k, v in result.items() if k.endswith("_before")}
    if before:
        before["val_acc"] = before.get("acc")
    results, names = [result], [f"{view.label} (after)"]
    if before:
        results.insert(0, before)
        names.insert(0, "before fine-tuning")
    return _html_page(f"EmbedLab report: {view.label}", [view] * len(names), names, results, figs)


def _anchors_for(es: EmbeddingSet, output: str) -> np.ndarray | None:
    if es.anchors is not None and es.anchors.shape[1] == es.vectors[output].shape[1]:
        return es.anchors
    return None


# ------------------------------------------------------------------------------------ exports
@dataclass
class ExportSet:
    """One set to export: which run, phase, split and output."""

    run_id: str
    phase: str
    es: EmbeddingSet
    output: str


def export_sets(view: RunView, *, phases: Sequence[str] = ("after",), output: str | None = None) -> list[ExportSet]:
    output = output or view.main_output()
    out = []
    for phase in phases:
        es = view.after if phase == "after" else view.before
        if es is not None and output in es.vectors:
            out.append(ExportSet(view.id, phase, es, output))
    return out


def _metadata_rows(s: ExportSet) -> list[list[str]]:
    names = s.es.classes
    rows = []
    for i in range(len(s.es)):
        label = int(s.es.labels[i])
        pred = None if s.es.preds is None else int(s.es.preds[i])
        rows.append([str(int(s.es.ids[i])), str(label), names[label] if label < len(names) else str(label),
                     "" if pred is None else str(pred), "" if pred is None else (names[pred] if pred < len(names) else str(pred)),
                     "" if pred is None else str(pred == label).lower(), s.phase, s.run_id, s.es.split, s.output])
    return rows


METADATA_HEADER = ["sample_id", "label", "label_name", "pred", "pred_name", "correct", "phase", "run", "split", "output"]


def projector_files(sets: Sequence[ExportSet]) -> tuple[str, str]:
    """(vectors.tsv, metadata.tsv) for the TensorBoard projector (projector.tensorflow.org 'Load'):
    one row per sample and set; the metadata has a header row (required with several columns)."""
    if not sets:
        raise InvalidConfig("nothing to export")
    dims = {s.es.vectors[s.output].shape[1] for s in sets}
    if len(dims) > 1:
        raise InvalidConfig(f"sets of different dimensions ({sorted(dims)}) cannot share one vectors.tsv; export them separately")
    vec = io.StringIO()
    meta = io.StringIO()
    meta.write("\t".join(METADATA_HEADER) + "\n")
    for s in sets:
        np.savetxt(vec, s.es.vectors[s.output].astype(np.float32), fmt="%.6g", delimiter="\t")
        for row in _metadata_rows(s):
            meta.write("\t".join(tsv_cell(cell) for cell in row) + "\n")
    return vec.getvalue(), meta.getvalue()


def write_projector(sets: Sequence[ExportSet], folder: Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vectors, metadata = projector_files(sets)
    (folder / "vectors.tsv").write_text(vectors)
    (folder / "metadata.tsv").write_text(metadata)
    return [folder / "vectors.tsv", folder / "metadata.tsv"]


def projector_zip(groups: dict[str, Sequence[ExportSet]]) -> bytes:
    """A zip with one `<name>/vectors.tsv` + `<name>/metadata.tsv` pair per group (e.g. per run)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, sets in groups.items():
            vectors, metadata = projector_files(sets)
            z.writestr(f"{name}/vectors.tsv", vectors)
            z.writestr(f"{name}/metadata.tsv", metadata)
    return buf.getvalue()


def parquet_table(sets: Sequence[ExportSet]):
    """One row per sample and set: ids, labels, predictions, and the vector as list<float32>."""
    import pyarrow as pa

    cols: dict[str, list] = {k: [] for k in METADATA_HEADER}
    vectors = []
    for s in sets:
        for row in _metadata_rows(s):
            for k, v in zip(METADATA_HEADER, row):
                cols[k].append(v)
        vectors.append(s.es.vectors[s.output].astype(np.float32))
    n = len(cols["sample_id"])
    flat = np.concatenate([v.ravel() for v in vectors]) if vectors else np.zeros(0, np.float32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    lengths = np.concatenate([np.full(len(v), v.shape[1]) for v in vectors]) if vectors else np.zeros(0, np.int32)
    offsets[1:] = np.cumsum(lengths)
    opt_int = lambda xs: pa.array([int(x) if x != "" else None for x in xs], pa.int64())  # noqa: E731
    return pa.table({
        "run_id": pa.array(cols["run"], pa.string()), "phase": pa.array(cols["phase"], pa.string()),
        "split": pa.array(cols["split"], pa.string()), "output": pa.array(cols["output"], pa.string()),
        "sample_id": opt_int(cols["sample_id"]), "label": opt_int(cols["label"]),
        "label_name": pa.array(cols["label_name"], pa.string()), "pred": opt_int(cols["pred"]),
        "correct": pa.array([None if c == "" else c == "true" for c in cols["correct"]], pa.bool_()),
        "vector": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32())),
    })


def export_parquet(sets: Sequence[ExportSet], path: Path | None = None) -> bytes | Path:
    """Write a Parquet file (or return its bytes when `path` is None)."""
    import pyarrow.parquet as pq

    table = parquet_table(sets)
    if path is None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()
    pq.write_table(table, str(path))
    return Path(path)

