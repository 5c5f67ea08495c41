"""Workshop mode: one server, a room of browsers; each person owns their runs, the instructor manages all.

    EMBEDLAB_WORKSHOP=1                      turns it on (`make run WORKSHOP=1` sets it)
    Identity(owner_id, name, instructor)     who is acting; `LOCAL` outside workshop mode
    can_manage(identity, run_owner_id)       may this person cancel / delete / resume that run?
    instructor_passcode() / check_passcode() the instructor's code, kept in EMBEDLAB_HOME (0600)
    pin_run(run_id, by) / pinned_run()       the run the instructor shows the whole room

Not a login system: an owner id is a random token the browser keeps in a cookie, so it only tells
people apart who do not share a browser. What it protects against is the room's accidents (a student
cancelling someone else's run, a link pasted in the chat making the reader someone else), not an
attacker who can read another person's cookies. Outside workshop mode (one user on localhost) every
check passes: nothing changes for that user.

    python -m core.workshop --new-code       a fresh instructor passcode, printed (what `make run WORKSHOP=1` runs)
"""
from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import sys
import threading
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import EmbedLabError, InvalidConfig, NotAllowed
from .paths import home, safe_name

WORKSHOP_ENV = "EMBEDLAB_WORKSHOP"
CODE_ENV = "EMBEDLAB_INSTRUCTOR_CODE"  # set: this is the passcode (nothing is written to the home)
CODE_FILE = "instructor_code"  # in EMBEDLAB_HOME, mode 0600: the server and `make run` read the same code
PIN_FILE = "pinned_run.json"  # in EMBEDLAB_HOME: every session of every server on this home sees the pin
NAME_MAX = 40  # characters of a display name: it sits in table cells and captions of other people's pages
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off a projector and typed by hand
_OWNER_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex


def workshop_enabled() -> bool:
    """EMBEDLAB_WORKSHOP is "1" or "true" (any case); anything else, or unset, is the single-user mode."""
    return os.environ.get(WORKSHOP_ENV, "").strip().lower() in ("1", "true")


@dataclass(frozen=True)
class Identity:
    """Who is acting. `owner_id` is a random token kept in the browser's cookie `embedlab_owner` (never
    shown to others, never in a URL); `name` is what the person typed (cookie `embedlab_name`)."""

    owner_id: str
    name: str
    instructor: bool = False


LOCAL = Identity("local", "you", instructor=True)  # the single user outside workshop mode, and the CLI


def new_owner_id() -> str:
    """A fresh owner token for a browser that has none yet."""
    return uuid.uuid4().hex


def valid_owner_id(value: object) -> bool:
    """Is `value` an owner token `new_owner_id` could have made? (a cookie is whatever the browser sends)"""
    return isinstance(value, str) and bool(_OWNER_ID.fullmatch(value))


def normalise_name(name: object) -> str:
    """A display name as stored: whitespace trimmed and collapsed, at most NAME_MAX characters.

    Refuses (InvalidConfig, one line) an empty name and any control or format character (newlines, NUL,
    bidi overrides, zero-width joiners): the name is shown to everyone in the room. Markup characters
    are kept as typed, plain text: pages escape them where they display names (core/safe_text.py).
    """
    if not isinstance(name, str):
        raise InvalidConfig("a name must be text")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")
                and c not in " \t"), None)
    if bad is not None:
        raise InvalidConfig(f"a name cannot contain the control character U+{ord(bad):04X}; use letters, digits and spaces")
    name = " ".join(name.split())
    if not name:
        raise InvalidConfig("give a name (it is shown next to your runs)")
    if len(name) > NAME_MAX:
        raise InvalidConfig(f"a name can have at most {NAME_MAX} characters, not {len(name)}")
    return name


def can_manage(identity: Identity | None, run_owner_id: str | None) -> bool:
    """May `identity` cancel, delete or resume a run owned by `run_owner_id`?

    Always outside workshop mode; in it, for the instructor and for the run's owner. A run recorded
    before owners existed (NULL) belongs to "local", which only the instructor manages in workshop mode.
    """
    if not workshop_enabled():
        return True
    identity = identity or LOCAL
    return identity.instructor or identity.owner_id == (run_owner_id or "local")


def check_manage(identity: Identity | None, run_owner_id: str | None, run_id: str, action: str,
                 owner_name: str | None = None) -> None:
    """NotAllowed (one line, naming the run and its owner) unless `can_manage`."""
    if not can_manage(identity, run_owner_id):
        whose = f"{owner_name}'s run" if owner_name else "another person's run"
        raise NotAllowed(f"run {run_id} is {whose}: only its owner or the instructor can {action} it")


# --- the instructor's passcode --------------------------------------------------------------------
_code_lock = threading.Lock()
_announced: set[str] = set()  # homes whose passcode this process has already printed


def _code_path(root) -> Path:
    return home(root) / CODE_FILE


def new_passcode(root=None) -> str:
    """Draw a fresh passcode, store it in the home (0600, replacing the old one) and return it."""
    code = "-".join("".join(secrets.choice(_CODE_ALPHABET) for _ in range(4)) for _ in range(2))  # e.g. k7qm-3xpd
    path = _code_path(root)
    tmp = path.with_name(f".{CODE_FILE}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w") as f:
        f.write(code + "\n")
    os.replace(tmp, path)
    return code


def instructor_passcode(root=None) -> str:
    """The instructor's passcode: EMBEDLAB_INSTRUCTOR_CODE when set, else the one stored in the home,
    created (and printed once to this process's console) when there is none yet."""
    override = os.environ.get(CODE_ENV, "").strip()
    if override:
        return override
    path = _code_path(root)
    with _code_lock:
        try:
            code = path.read_text().strip()
        except FileNotFoundError:
            code = ""
        if not code:
            code = new_passcode(root)
            if str(path) not in _announced:  # the server's console is the instructor's: say it where they look
                _announced.add(str(path))
                print(f"EmbedLab workshop mode: instructor passcode {code} (kept in {path})", file=sys.stderr)
    return code


def check_passcode(code: object, root=None) -> bool:
    """Is `code` the instructor's passcode? Constant-time, surrounding whitespace ignored."""
    if not isinstance(code, str) or not code.strip():
        return False
    return hmac.compare_digest(code.strip().encode("utf-8"), instructor_passcode(root).encode("utf-8"))


# --- the room's pinned run ------------------------------------------------------------------------
def pin_run(run_id: str | None, by: Identity | None, root=None) -> None:
    """Pin `run_id` for the whole room (None unpins). Instructor only: NotAllowed for anyone else."""
    if not (by or LOCAL).instructor:
        raise NotAllowed("only the instructor can pin a run for the room")
    path = home(root) / PIN_FILE
    if run_id is None:
        path.unlink(missing_ok=True)
        return
    safe_name(run_id, "run id")
    if not (home(root) / "runs" / run_id).is_dir():
        raise InvalidConfig(f"there is no run {run_id!r} to pin")
    tmp = path.with_name(f".{PIN_FILE}.{secrets.token_hex(4)}")
    tmp.write_text(json.dumps({"run_id": run_id, "by": (by or LOCAL).name}))
    os.replace(tmp, path)  # atomic: a session polling the pin never reads half a file


def pinned_run(root=None) -> str | None:
    """The pinned run's id, or None (nothing pinned, the file unreadable, or the run deleted since)."""
    try:
        run_id = json.loads((home(root) / PIN_FILE).read_text()).get("run_id")
        safe_name(run_id, "run id")
    except (OSError, ValueError, AttributeError, EmbedLabError):  # a missing or garbled pin is no pin
        return None
    return run_id if (home(root) / "runs" / run_id).is_dir() else None


def main(argv: list[str] | None = None) -> int:
    """`python -m core.workshop --new-code [--host H --port P]`: print the passcode (fresh with --new-code)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m core.workshop", description="EmbedLab workshop mode: the instructor passcode")
    p.add_argument("--new-code", action="store_true", help="draw a fresh passcode (the old one stops working)")
    p.add_argument("--host", help="the address the server will listen on (only for the hint printed)")
    p.add_argument("--port", help="its port (only for the hint printed)")
    args = p.parse_args(argv)
    if os.environ.get(CODE_ENV, "").strip():
        code, where = instructor_passcode(), f"from {CODE_ENV}"
    else:
        code = new_passcode() if args.new_code else instructor_passcode()
        where = f"kept in {_code_path(None)}"
    print(f"EmbedLab workshop mode: instructor passcode  {code}  ({where})")
    if args.host:
        if args.host in ("127.0.0.1", "localhost", "::1"):
            print(f"  serving on {args.host} only: this machine's browsers. For the room, run `make run WORKSHOP=1 HOST=0.0.0.0`")
        else:
            print(f"  the room opens http://<this machine's address>:{args.port or 8501}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
