"""Confusion-matrix cells as sets of images (issue 17.6): which samples fall in a (true, predicted)
cell, the cells worth opening, pages of a long cell, and a confusion figure whose cells can be clicked.

    cell_ids(ids, labels, preds, true=3, pred=8)   -> the sample ids the model called 8 that are 3s
    worst_cells(labels, preds, n_classes)          -> [(true, pred, count)], off-diagonal, most first
    page_of(items, page=2, per_page=48)            -> (items on page 2, "49–96 of 189", pages)
    clickable_confusion_figure(classes, series)    -> report.confusion_figure plus one invisible marker
                                                      per cell carrying [series, true, pred]

Counts agree with `core.metrics.confusion_matrix` on the same labels / predictions by construction
(both count rows of labels == true and preds == pred).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PER_PAGE = 48  # images per page of a cell's grid (the Explore selection grid shows as many)


def cell_ids(ids: np.ndarray, labels: np.ndarray, preds: np.ndarray, true: int, pred: int) -> np.ndarray:
    """Sample ids (in stored order) whose label is `true` and whose prediction is `pred`."""
    ids, labels, preds = np.asarray(ids), np.asarray(labels), np.asarray(preds)
    if not (len(ids) == len(labels) == len(preds)):
        raise ValueError(f"ids, labels and preds differ in length ({len(ids)}, {len(labels)}, {len(preds)})")
    return ids[(labels == int(true)) & (preds == int(pred))]


def worst_cells(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> list[tuple[int, int, int]]:
    """Every non-empty off-diagonal cell as (true, pred, count), most images first (ties: true, then pred)."""
    labels, preds = np.asarray(labels, np.int64), np.asarray(preds, np.int64)
    cm = np.bincount(labels * n_classes + preds, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    cells = [(t, p, int(cm[t, p])) for t in range(n_classes) for p in range(n_classes) if t != p and cm[t, p]]
    return sorted(cells, key=lambda c: (-c[2], c[0], c[1]))


def page_of(items: Sequence, page: int, per_page: int = PER_PAGE) -> tuple[list, str, int]:
    """(the items on 1-based `page`, "k–m of n", number of pages); a page past the end shows the last."""
    n = len(items)
    pages = max(1, math.ceil(n / per_page))
    page = min(max(1, int(page)), pages)
    start = (page - 1) * per_page
    shown = list(items[start:start + per_page])
    text = f"{start + 1}–{start + len(shown)} of {n}" if n else "0 of 0"
    return shown, text, pages


def point_cell(point: dict) -> tuple[int, int, int] | None:
    """(series, true, pred) of a selected point of `clickable_confusion_figure`, None for any other point."""
    data = point.get("customdata") if isinstance(point, dict) else None
    if not isinstance(data, (list, tuple)) or len(data) != 3:
        return None
    try:
        return int(data[0]), int(data[1]), int(data[2])
    except (TypeError, ValueError):
        return None


def clickable_confusion_figure(classes: Sequence[str], series: Sequence[tuple[str, Sequence[Sequence[int]]]], **kw) -> Any:
    """`core.report.confusion_figure` with one transparent marker on every cell, so a click selects the cell.

    plotly.js fires no selection for heatmap cells; markers do, and each carries [series, true, pred] as
    customdata (`point_cell` reads it back). The markers take over the hover, with the heatmap's text.
    """
    import plotly.graph_objects as go

    from .report import confusion_figure
    from .safe_text import plotly_text

    fig = confusion_figure(classes, series, **kw)
    names = [plotly_text(c) for c in classes]
    k = len(classes)
    for col, (_, cm) in enumerate(series, start=1):
        cm = np.asarray(cm, dtype=float)
        share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        t, p = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
        t, p = t.ravel(), p.ravel()
        fig.add_trace(go.Scatter(
            x=[names[j] for j in p], y=[names[i] for i in t], mode="markers", showlegend=False,
            marker=dict(size=max(8, min(40, 300 // max(k, 1))), symbol="square", color="rgba(0,0,0,0)"),
            customdata=np.stack([np.full(len(t), col - 1), t, p], axis=1).tolist(),
            text=[f"{cm[i, j]:.0f} ({share[i, j]:.0%})" for i, j in zip(t, p)],
            hovertemplate="true %{y}, predicted %{x}: %{text}<br>click to see these images<extra></extra>"), row=1, col=col)
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector=dict(type="heatmap"))  # one hover per cell: the marker's
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig
