"""Plotly figures of runs: projections, pair-similarity histograms, per-class accuracy, confusion, WiSE-FT, the
ID-OOD frontier and the training trajectory. Plain `plotly.graph_objects.Figure`s, so the pages (st.plotly_chart)
and the HTML report draw the same thing. Every user-supplied string goes through plotly_text."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..safe_text import plotly_text

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]  # class colours
RUN_COLOURS = ["#1565c0", "#e65100", "#2e7d32", "#6a1b9a"]  # one per compared run (at most 4)


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

