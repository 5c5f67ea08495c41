"""Workshop mode: who is who on a shared server (THIN FALLBACK by helper wsui; helper wsq's version wins).

Only the names of SPEC.md: the identity a browser carries, the instructor passcode, who may manage a run,
and the run pinned for the room (a small JSON file in EMBEDLAB_HOME).
"""
from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .errors import NotAllowed
from .paths import home

WORKSHOP_ENV = "EMBEDLAB_WORKSHOP"
CODE_ENV = "EMBEDLAB_INSTRUCTOR_CODE"
_PIN_FILE = "workshop-pin.json"
_codes: dict[str, str] = {}  # home -> this process's passcode (one per server start)


@dataclass(frozen=True)
class Identity:
    owner_id: str
    name: str
    instructor: bool = False


LOCAL = Identity("local", "you", instructor=True)


def workshop_enabled() -> bool:
    return os.environ.get(WORKSHOP_ENV, "").strip().lower() in ("1", "true")


def instructor_passcode(root=None) -> str:
    if os.environ.get(CODE_ENV):
        return os.environ[CODE_ENV]
    return _codes.setdefault(str(home(root)), secrets.token_hex(3))


def check_passcode(code: str, root=None) -> bool:
    return bool(code) and hmac.compare_digest(str(code).encode(), instructor_passcode(root).encode())


def can_manage(identity: Identity | None, run_owner_id: str | None) -> bool:
    identity = identity or LOCAL
    return not workshop_enabled() or identity.instructor or identity.owner_id == (run_owner_id or "local")


def pin_run(run_id: str | None, by: Identity | None, root=None) -> None:
    if workshop_enabled() and not (by or LOCAL).instructor:
        raise NotAllowed("only the instructor can pin a run for the room")
    (home(root) / _PIN_FILE).write_text(json.dumps({"run_id": run_id}))


def pinned_run(root=None) -> str | None:
    try:
        return json.loads((home(root) / _PIN_FILE).read_text()).get("run_id")
    except (OSError, ValueError):
        return None
