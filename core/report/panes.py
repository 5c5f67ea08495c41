"""What the Explore and Compare views draw, computed from stored runs: aligned before / after panes of one run,
a sample's nearest neighbours, and the metrics + aligned projections of several runs (no figures, no streamlit)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..embeddings import EmbeddingSet
from ..errors import EmbedLabError
from ..metrics import analyze
from .lookup import RunView, positions


def explore_data(view: RunView, *, output: str | None = None, method: str = "pca", dims: int = 2, seed: int = 0,
                 max_points: int | None = None, phases: Sequence[str] = ("before", "after")) -> dict[str, Any]:
    """Aligned before / after panes of one run for the Explore view.

    A seeded subsample of at most `max_points` samples is drawn (the same samples in every pane);
    each pane is projected on its own and the 'before' pane is rotated onto the 'after' pane
    (orthogonal Procrustes on the shared samples). FLYP anchors are placed out of sample.
    """
    from ..metrics import subsample
    from ..projections import project_panes

    after = view.after
    output = output or view.main_output()
    rows = subsample(len(after), max_points, seed)
    ids = after.ids[rows]
    sets, titles, used = [], [], []
    for phase in phases:
        es = view.before if phase == "before" else after
        if es is None or output not in es.vectors:
            continue
        sets.append({"ids": ids, "vectors": es.vectors[output][positions(es.ids, ids)], "extra": anchors_for(es, output)})
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
    from ..metrics import nearest_neighbours

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

def compare_data(views: Sequence[RunView], *, method: str = "pca", dims: int = 2, seed: int = 0, outputs: Sequence[str] | None = None,
                 results: Sequence[dict] | None = None, align: str = "procrustes") -> dict[str, Any]:
    """Metrics and aligned projections of several runs on their shared sample ids."""
    from ..projections import project_panes

    outputs = list(outputs) if outputs else [v.main_output() for v in views]
    if results is None:
        results = [analyze(v.dir, split=v.split, output=o, details=True) for v, o in zip(views, outputs)]
    shared = views[0].after.ids
    for v in views[1:]:
        shared = np.intersect1d(shared, v.after.ids)
    sets = []
    for v, o in zip(views, outputs):
        sets.append({"ids": v.after.ids, "vectors": v.after.vectors[o], "extra": anchors_for(v.after, o)})
    proj = project_panes(sets, method, dims, seed=seed, align=align)
    return {"outputs": outputs, "results": list(results), "projection": proj, "shared_ids": shared}


def anchors_for(es: EmbeddingSet, output: str) -> np.ndarray | None:
    """The set's class anchors (FLYP's prompt embeddings) when they live in `output`'s space; else None."""
    if es.anchors is not None and es.anchors.shape[1] == es.vectors[output].shape[1]:
        return es.anchors
    return None
