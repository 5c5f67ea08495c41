"""Embedding spaces: which stored output an objective shapes, what "shared" means across runs, and the
before model's own predictions.

A run stores one vector per sample for every space it has (`EmbeddingSet.vectors`, before and after):
`encoder` (the backbone's embedding, every run), `projection` (LaCViT's contrastive head), `image` (FLYP's
L2-normalised image embedding, the joint image-text space), `content` / `style` (content-style), and
`logits` (class scores, wherever the model has a classifier).

    trained_space("lacvit")                  -> "projection"
    default_space("lacvit", ["encoder", "projection", "logits"])  -> "projection"
    shared_spaces([["encoder", "projection"], ["encoder", "image"]])  -> ["encoder"]

"Shared" is by name and meaning: two runs share a space when both stored it. Every run stores `encoder` (the
backbone's embedding before any objective's head; FLYP's is its image tower's output before normalisation, so
`image` is the same directions, normalised): runs of one backbone are then compared in the same network's
space. `logits` is shared by runs of one dataset (one axis per class). Projections and the cosine metrics
L2-normalise first, so `encoder` and `image` draw alike for FLYP.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LOGITS = "logits"  # the class-score space, stored wherever a classifier exists

PRED_SOURCES = {  # EmbeddingSet.pred_source -> what the legend says the predictions come from
    "zero-shot": "zero-shot classifier (class prompts)",
    "nearest class mean": "nearest class mean (train-split class means, encoder space, cosine)",
    "head": "the fine-tuned classifier",
}
NCM_PER_CLASS = 50  # training images per class for the before model's class means (LaCViT's head init uses 50 too)


def trained_space(objective: str) -> str:
    """The output the objective's loss shapes, as its registry entry says ("encoder" for an objective no
    longer registered: every run has it). The registry imports torch, so it is imported on use."""
    from .objectives import trained_space as registered

    return registered(objective)


def default_space(objective: str, available: Sequence[str]) -> str:
    """The trained space when the run stored it, else the encoder, else the first stored output
    (old runs: a LaCViT run stored before 'projection' existed)."""
    available = list(available)
    for name in (trained_space(objective), "encoder", "image"):
        if name in available:
            return name
    return available[0] if available else "encoder"


def shared_spaces(per_run: Sequence[Sequence[str]]) -> list[str]:
    """Spaces every run stored, in the first run's order."""
    if not per_run:
        return []
    common = set(per_run[0]).intersection(*map(set, per_run[1:]))
    return [s for s in per_run[0] if s in common]


def pred_source_text(source: str | None) -> str:
    """Legend wording for where a pane's predictions come from."""
    if source is None:
        return "no predictions stored"
    return PRED_SOURCES.get(source, str(source))


def nearest_class_mean(vectors: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest-class-mean classifier: cosine of each row to each class mean.

    Args:
        vectors: [N, D] embeddings; means: [C, D] class means (any norm).
    Returns:
        (preds [N] int64, scores [N, C] float32 cosine similarities: the before model's "logits").
    """
    x = np.asarray(vectors, dtype=np.float32)
    m = np.asarray(means, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    scores = x @ m.T
    return scores.argmax(1).astype(np.int64), scores.astype(np.float32)


def apply_nearest_class_mean(es, means: np.ndarray, space: str = "encoder") -> None:
    """Give a before set the before model's own predictions: nearest class mean in `space`; its `logits`
    space becomes the classifier's scores (an untrained head's logits would be noise)."""
    preds, scores = nearest_class_mean(es.vectors[space], means)
    es.preds = preds
    es.pred_source = "nearest class mean"
    es.vectors[LOGITS] = scores.astype(np.float16)


def phase_predictions(sets: dict, ids: np.ndarray) -> dict[str, tuple[np.ndarray | None, str | None]]:
    """{phase: (preds of the samples `ids` in that phase's set or None, pred_source)} for Explore's panes:
    each pane is coloured by its own model's predictions, never the fine-tuned model's.

    Args:
        sets: {phase: EmbeddingSet or None}; ids: [N] sample ids every set holds.
    """
    out = {}
    for phase, es in sets.items():
        if es is None:
            continue
        if es.preds is None:
            out[phase] = (None, None)
            continue
        index = {int(v): i for i, v in enumerate(np.asarray(es.ids))}
        rows = np.array([index[int(i)] for i in np.asarray(ids)], dtype=np.int64)
        # sets stored before pred_source existed: a before set with predictions was FLYP's zero-shot one
        source = es.pred_source or ("zero-shot" if phase == "before" else "head")
        out[phase] = (es.preds[rows], source)
    return out
