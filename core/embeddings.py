"""Embedding sets: what a model makes of one split, stored as float16 arrays.

A run keeps, for its val and test splits, the embeddings *before* fine-tuning (the backbone as
loaded) and *after* it, with labels, predictions and sample ids, under
`runs/<id>/embeddings/<phase>-<split>/`. Every space the model has is stored, before and after
(core/spaces.py): the encoder (penultimate) features; LaCViT's projection-head output; FLYP's
image embedding (plus the class-prompt text embeddings as anchors); content-style's codes; and
`logits` wherever a classifier exists. `pred_source` says whose predictions `preds` are:
"zero-shot", "nearest class mean" (a before model with no trained head) or "head".

Folder layout: ids.npy, labels.npy, vec-<space>.npy per space, preds.npy, anchors.npy (FLYP),
meta.json {"split", "classes", "outputs", "pred_source"}. Sets stored before pred_source existed load
with pred_source None.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .device import autocast


@dataclass
class EmbeddingSet:
    split: str  # val / test
    ids: np.ndarray  # [N] sample ids (indices into the dataset)
    labels: np.ndarray  # [N] int64
    vectors: dict[str, np.ndarray]  # output name -> [N, D] float16
    classes: list[str] = field(default_factory=list)
    preds: np.ndarray | None = None  # [N] int64 predicted class, when the model has a classifier
    anchors: np.ndarray | None = None  # [C, D] class anchors (FLYP's prompt embeddings)
    pred_source: str | None = None  # whose preds: "zero-shot" | "nearest class mean" | "head" (None: not recorded)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def accuracy(self) -> float | None:
        return None if self.preds is None else float((self.preds == self.labels).mean())


@torch.inference_mode()
def compute_embeddings(method, source, split, device: torch.device, *, batch_size: int = 256, stage=None,
                       amp: bool = True, on_progress: Callable[[int, int], None] | None = None) -> EmbeddingSet:
    """Run `method`'s encoder (eval mode) over every sample of `split` from `source` (view 0)."""
    was = method.training
    method.eval()
    method.refresh()
    n = len(split)
    chunks: dict[str, list[np.ndarray]] = {}
    preds: list[np.ndarray] = []
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(n, start + batch_size))
        with autocast(device, amp):
            emb = method.encoder(source.get(rows, 0))
        emb = emb.float()
        named = method.outputs(emb)
        named.setdefault("encoder", emb)  # every run has the encoder space (FLYP names its normalised one 'image'): shared in Compare
        for name, value in named.items():
            chunks.setdefault(name, []).append(value.float().cpu().numpy().astype(np.float16))
        logits = method.classify(emb, stage)
        if logits is not None:
            preds.append(logits.argmax(-1).cpu().numpy())
            chunks.setdefault("logits", []).append(logits.float().cpu().numpy().astype(np.float16))  # the class-score space
        if on_progress:
            on_progress(min(n, start + batch_size), n)
    method.train(was)
    anchors = method.anchors()
    return EmbeddingSet(split=split.name, ids=np.asarray(split.ids), labels=np.asarray(split.labels),
                        vectors={k: np.concatenate(v) for k, v in chunks.items()}, classes=list(split.data.classes),
                        preds=np.concatenate(preds).astype(np.int64) if preds else None,
                        pred_source="head" if preds else None,
                        anchors=None if anchors is None else anchors.float().cpu().numpy().astype(np.float16))


def save_embeddings(folder: Path, es: EmbeddingSet) -> None:
    """Write atomically: a temp folder renamed into place."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "ids.npy", es.ids)
    np.save(tmp / "labels.npy", es.labels)
    for name, arr in es.vectors.items():
        np.save(tmp / f"vec-{name}.npy", arr)
    if es.preds is not None:
        np.save(tmp / "preds.npy", es.preds)
    if es.anchors is not None:
        np.save(tmp / "anchors.npy", es.anchors)
    (tmp / "meta.json").write_text(json.dumps({"split": es.split, "classes": es.classes, "outputs": list(es.vectors),
                                               "pred_source": es.pred_source}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_embeddings(folder: Path) -> EmbeddingSet:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    opt = lambda name: np.load(folder / name) if (folder / name).exists() else None  # noqa: E731
    return EmbeddingSet(split=meta["split"], ids=np.load(folder / "ids.npy"), labels=np.load(folder / "labels.npy"),
                        vectors={n: np.load(folder / f"vec-{n}.npy") for n in meta["outputs"]}, classes=meta["classes"],
                        preds=opt("preds.npy"), anchors=opt("anchors.npy"), pred_source=meta.get("pred_source"))


def embeddings_dir(run_dir: Path, phase: str, split: str) -> Path:
    """`phase`: 'before' or 'after'."""
    return Path(run_dir) / "embeddings" / f"{phase}-{split}"


# ------------------------------------------------------------------------- reading a run's sets
def has_embeddings(run_dir: Path, phase: str, split: str) -> bool:
    return (embeddings_dir(run_dir, phase, split) / "meta.json").exists()


def load_run_embeddings(run_dir: Path, phase: str, split: str) -> EmbeddingSet | None:
    """A run's stored set, or None when the run has none (unfinished, failed, or 'before' missing)."""
    return load_embeddings(embeddings_dir(run_dir, phase, split)) if has_embeddings(run_dir, phase, split) else None


def list_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """[(step, folder)] of the val snapshots saved along training, in step order."""
    folder = Path(run_dir) / "snapshots"
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        if p.name.startswith("step-") and (p / "meta.json").exists():
            try:
                out.append((int(p.name[5:]), p))
            except ValueError:
                continue
    return sorted(out)
