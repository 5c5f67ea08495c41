"""Exports of stored embeddings: the TensorBoard projector's TSV pair (one folder or a zip of several) and
Parquet (one row per sample, the vector as list<float32>). Cells through tsv_cell, so a class name cannot add a column."""
from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embeddings import EmbeddingSet
from ..errors import InvalidConfig
from ..safe_text import tsv_cell
from .lookup import RunView


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

