"""What the Train page remembers per person across reloads and server restarts: the last form values
and the batches of runs they started (newest first).

    remember_form(root, owner_id, {"steps": 400, ...});  recall_form(root, owner_id) -> dict
    remember_batch(root, owner_id, [run ids]);           recall_batches(root, owner_id) -> [[run ids], ...]

One small JSON file per owner id in EMBEDLAB_HOME/people/ ("local" outside workshop mode). Form values
only, never identity: the owner id names the file and nothing else is stored about the person. Writes
go through a temporary file and a rename, so a crash never leaves half a file; a broken file reads
as empty (the form falls back to its defaults).
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from .paths import safe_name, subdir

MAX_BATCHES = 20  # batches remembered per person
_PLAIN = (str, int, float, bool, type(None))
_lock = threading.Lock()  # one server, many sessions of the same person (two tabs)


def _path(root, owner_id: str) -> Path:
    return subdir(Path(root), "people") / f"{safe_name(owner_id, 'owner id')}.json"


def _read(root, owner_id: str) -> dict:
    try:
        data = json.loads(_path(root, owner_id).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(root, owner_id: str, data: dict) -> None:
    path = _path(root, owner_id)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _plain(value) -> bool:
    return isinstance(value, _PLAIN) or (isinstance(value, list) and all(isinstance(v, _PLAIN) for v in value))


def remember_form(root, owner_id: str, values: dict) -> None:
    """Keep the form's plain values (numbers, strings, lists of them); anything else is skipped."""
    with _lock:
        data = _read(root, owner_id)
        data["form"] = {k: v for k, v in values.items() if isinstance(k, str) and _plain(v)}
        _write(root, owner_id, data)


def recall_form(root, owner_id: str) -> dict:
    form = _read(root, owner_id).get("form")
    return form if isinstance(form, dict) else {}


def remember_batch(root, owner_id: str, run_ids: list[str]) -> None:
    with _lock:
        data = _read(root, owner_id)
        batches = [b for b in data.get("batches", []) if isinstance(b, list)]
        data["batches"] = [list(run_ids), *batches][:MAX_BATCHES]
        _write(root, owner_id, data)


def recall_batches(root, owner_id: str) -> list[list[str]]:
    batches = _read(root, owner_id).get("batches", [])
    return [[r for r in b if isinstance(r, str)] for b in batches if isinstance(b, list)]


def forget_batches(root, owner_id: str, keep: list[list[str]]) -> None:
    """Replace the remembered batches (Clear finished)."""
    with _lock:
        data = _read(root, owner_id)
        data["batches"] = [list(b) for b in keep][:MAX_BATCHES]
        _write(root, owner_id, data)

