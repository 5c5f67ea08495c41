"""Saved data selections: the stored format the training loop reads (`TrainConfig.selection`).

A selection is EMBEDLAB_HOME/selections/<id>.json, one JSON object: at least `id`, `selected` (sample ids,
i.e. indices into the dataset, in selection order), `dataset` and `strategy`, plus whatever the selector
recorded (core/selection.py writes its settings and diagnostics). This module only names, writes, reads
and lists them; it imports no selector, so the loop that trains on a selection does not depend on the
algorithms that make one (core/selection.py), which themselves run the loop (VeCAF's rounds).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import InvalidConfig, UnknownName
from .paths import home, safe_name, subdir


def selection_id(record: dict, backbone: str, dataset: str, extra: dict | None = None) -> str:
    """A deterministic, path-safe id: <strategy>-<dataset>-b<budget>-s<seed>-<hash of every setting>."""
    keys = {k: record.get(k) for k in ("strategy", "budget", "seed", "pool", "eta", "lambda", "tau", "captions", "steps",
                                        "members", "previous", "target_caption")}
    digest = hashlib.sha1(json.dumps({**keys, "backbone": backbone, "dataset": dataset, **(extra or {})},
                                     sort_keys=True, default=str).encode()).hexdigest()[:6]
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset)[:40]
    return safe_name(f"{record['strategy']}-{stem}-b{record['budget']}-s{record['seed']}-{digest}", "selection id")


def selections_dir(root: Path | None = None) -> Path:
    return subdir(Path(root) if root else home(), "selections")


def save_selection(record: dict, root: Path | None = None) -> Path:
    """Write `record` (with an `id`) to EMBEDLAB_HOME/selections/<id>.json atomically."""
    sid = safe_name(record["id"], "selection id")
    path = selections_dir(root) / f"{sid}.json"
    tmp = path.with_name(f".{sid}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def selection_info(selection: str, root: Path | None = None) -> dict:
    """The saved record of a selection id. Raises UnsafePath / UnknownName."""
    sid = safe_name(selection, "selection id")
    path = selections_dir(root) / f"{sid}.json"
    if not path.is_file():
        known = list_selections(root)
        hint = f"; saved selections: {', '.join(known[:10])}" if known else "; make one with: python -m core select ..."
        raise UnknownName(f"no selection {sid!r} in {path.parent}{hint}")
    try:
        record = json.loads(path.read_text())
        record["selected"] = [int(i) for i in record["selected"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidConfig(f"selection file {path} is damaged ({exc}); make it again with python -m core select") from exc
    return record


def load_selection(selection: str, root: Path | None = None) -> np.ndarray:
    """[n] int64 sample ids (dataset indices) of a saved selection, for TrainConfig.selection."""
    return np.asarray(selection_info(selection, root)["selected"], dtype=np.int64)


def list_selections(root: Path | None = None) -> list[str]:
    """Saved selection ids, newest first."""
    files = sorted(selections_dir(root).glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [p.stem for p in files if not p.name.startswith(".")]
