"""What the scatter component (assets/scatter_component) sends to the browser: panes of points as base64
typed arrays, their colour categories and hover text, as one JSON-able dict.

In core, not beside the component, so that the benchmark (core/bench/) can measure the payload of the
Explore page at scale without importing the UI; the component re-exports these names.
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence

import numpy as np

from .report import class_colour  # one class palette for the live scatter and the HTML report
from .safe_text import plotly_text

CORRECT_COLOURS = {"correct": "#2e7d32", "wrong": "#d32f2f"}  # colour-by-correctness
AGREEMENT_COLOURS = {"right in every run": "#2e7d32", "right in some": "#f9a825", "wrong in every run": "#d32f2f"}
NO_PREDICTION_COLOUR = "#9e9e9e"  # a pane without predictions of its own, coloured by prediction / correctness
COLOR_MODES = ("label", "prediction", "correctness")  # one run (Explore)
COMPARE_COLOR_MODES = ("label", "agreement")  # several runs (Compare): agreement needs each pane's predictions


def _b64(arr: np.ndarray, dtype) -> str:
    return base64.b64encode(np.ascontiguousarray(np.asarray(arr), dtype=dtype).tobytes()).decode("ascii")


def categories(labels: np.ndarray, preds: np.ndarray | None, class_names: Sequence[str], color_by: str):
    """(category index per point, [{name, color}]) for colouring by label, prediction or correctness."""
    labels = np.asarray(labels, dtype=np.int64)
    if color_by == "correctness" and preds is not None:
        cat = np.where(np.asarray(preds) == labels, 0, 1)
        return cat, [{"name": k, "color": v} for k, v in CORRECT_COLOURS.items()]
    values = np.asarray(preds, dtype=np.int64) if color_by == "prediction" and preds is not None else labels
    n = max(len(class_names), int(values.max(initial=-1)) + 1)
    names = list(class_names) + [str(i) for i in range(len(class_names), n)]
    prefix = "pred " if color_by == "prediction" and preds is not None else ""
    return values, [{"name": prefix + names[i], "color": class_colour(i)} for i in range(n)]


def agreement_categories(labels: np.ndarray, preds_by_run: Sequence[np.ndarray]):
    """(category index per point, [{name, color}]): 0 = right in every run, 1 = right in some, 2 = wrong in all.

    Args:
        labels: [N] true labels.
        preds_by_run: R arrays [N] of predictions, R >= 1, rows in the order of `labels`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    right = (np.stack([np.asarray(p, dtype=np.int64) for p in preds_by_run]) == labels).sum(0)
    cat = np.where(right == len(preds_by_run), 0, np.where(right == 0, 2, 1))
    return cat, [{"name": k, "color": v} for k, v in AGREEMENT_COLOURS.items()]


def build_payload(panes: Sequence[dict], *, ids: np.ndarray, labels: np.ndarray, preds: np.ndarray | None,
                  class_names: Sequence[str], color_by: str = "label", groups: tuple[np.ndarray, list[dict]] | None = None,
                  thumbs: dict | None = None, height: int = 560, view_key: str = "", status: str = "") -> dict:
    """Everything the browser draws, as JSON with base64 typed arrays.

    Args:
        panes: [{"title": str, "points": [N, 2|3], "anchors": [C, 2|3] or None, "anchor_names": [...], "anchor_colors": [...],
            "preds": [N] or None, "own_preds": bool}], every pane's rows in the same sample order as `ids`; a
            pane's own "preds" (one run per pane, in Compare) replace `preds` in that pane's hover label; with
            "own_preds" (Explore's before pane) they also colour that pane by prediction / correctness.
        ids, labels, preds: [N] per point (preds may be None).
        class_names: display names, indexed by label.
        color_by: 'label', 'prediction', 'correctness', or 'agreement' (across the panes' own preds;
            label when no pane has any).
        groups: (category index per point [N], [{"name", "color"}]) to colour by instead, e.g. selected
            vs not selected; overrides `color_by`.
        thumbs: thumbs_for(...) or None (no images on hover).
        view_key: keeps zoom / rotation across redraws while it stays the same.

    Strings that Plotly draws (pane titles, legend names, anchor labels) go out escaped for its pseudo-HTML
    (`plotly_text`); `class_names` go out raw, for the tooltip's text nodes. The `status` line is text too.
    """
    n = len(ids)
    dims = int(panes[0]["points"].shape[1]) if panes else 2
    pane_preds = [pane.get("preds") for pane in panes]
    if groups is not None:
        cat, cats = np.asarray(groups[0]), list(groups[1])
    elif color_by == "agreement" and any(p is not None for p in pane_preds):
        cat, cats = agreement_categories(labels, [p for p in pane_preds if p is not None])
    else:
        cat, cats = categories(labels, preds, class_names, "label" if color_by == "agreement" else color_by)
    # Explore's before pane: coloured by the before model's own predictions ("own_preds": True marks a pane
    # whose "preds" are its own even when None: an old run's before pane then shows "no prediction stored")
    own_colours = groups is None and color_by in ("prediction", "correctness") and preds is not None
    if own_colours and any(pane.get("own_preds") and pane.get("preds") is None for pane in panes):
        cats = cats + [{"name": "no prediction stored", "color": NO_PREDICTION_COLOUR}]
    out_panes = []
    for pane, own_preds in zip(panes, pane_preds):
        pts = np.asarray(pane["points"], dtype=np.float32)
        item = {"title": plotly_text(pane.get("title", "")), "x": _b64(pts[:, 0], "<f4"), "y": _b64(pts[:, 1], "<f4"),
                "z": _b64(pts[:, 2], "<f4") if dims == 3 else None, "anchors": None,
                "preds": None if own_preds is None else _b64(own_preds, "<i2")}
        if own_colours and pane.get("own_preds"):
            if own_preds is None:
                item["cat"], item["no_preds"] = _b64(np.full(n, len(cats) - 1), "<u2"), True
            else:
                item["cat"] = _b64(categories(labels, own_preds, class_names, color_by)[0], "<u2")
        anchors = pane.get("anchors")
        if anchors is not None and len(anchors):
            a = np.asarray(anchors, dtype=np.float64)
            names = list(pane.get("anchor_names") or class_names)
            item["anchors"] = {"x": a[:, 0].round(5).tolist(), "y": a[:, 1].round(5).tolist(),
                               "z": a[:, 2].round(5).tolist() if dims == 3 else None,
                               "text": [plotly_text(names[i] if i < len(names) else i) for i in range(len(a))],
                               "color": list(pane.get("anchor_colors") or [class_colour(i) for i in range(len(a))])}
        out_panes.append(item)
    payload = {
        "n": n, "dims": dims, "height": int(height), "view_key": view_key, "status": status,
        "ids": _b64(ids, "<i4"), "labels": _b64(labels, "<i2"), "preds": None if preds is None else _b64(preds, "<i2"),
        "cat": _b64(cat, "<u2"), "categories": [{**c, "name": plotly_text(c["name"])} for c in cats],
        "class_names": [str(c) for c in class_names],  # raw: the tooltip shows them as DOM text nodes
        "panes": out_panes, "thumbs": thumbs,
        "marker_size": 7 if n <= 2000 else 5 if n <= 10000 else 3 if n <= 30000 else 2,
    }
    payload["data_key"] = hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return payload


def payload_bytes(payload: dict) -> int:
    """Size of the payload as sent (JSON)."""
    return len(json.dumps(payload))
