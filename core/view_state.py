"""A page's view in its URL: read and check the query parameters, write them back (issue 16.4: a link
pasted into the room's chat opens the same view).

    url = UrlState({"run": ["20261201-ab12"], "dims": ["7"]})
    run = url.choice("run", run_ids, run_ids[0], what="run")     -> the run, or the default with a note
    dims = url.choice("dims", [2, 3], 2, what="dims")            -> 2, and url.notes says why
    to_params({"run": run, "dims": dims})                        -> {"run": "20261201-ab12", "dims": "2"}

Every value is a user-supplied string: it is only ever compared with the options the page offers, never
used as a path, an id to look up without that check, or markup. A value that is not an option (an unknown
run id, a typo, a hostile string) gives the page's default and one plain-text note for the page to show
(through core.safe_text.md_text). Only the view's own keys are read or written: the URL carries no identity
(the workshop's owner id and name stay in cookies, SPEC.md).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import re
from typing import Any, TypeVar

T = TypeVar("T")

VIEW_KEYS = ("run", "split", "proj", "dims", "color", "space", "panes", "align", "frame", "rescale")  # all a view writes
MAX_VALUE_CHARS = 200  # longer values are refused unread (no id or option is near this long)
SHOWN_CHARS = 40  # how much of a refused value a note repeats
_INTEGER = re.compile(r"-?[0-9]{1,12}")
IDENTITY_KEYS = frozenset({"owner", "owner_id", "name", "embedlab_owner", "embedlab_name", "code", "passcode"})  # never written


def shown(value: str) -> str:
    """A refused value as a note repeats it: one line, at most SHOWN_CHARS characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


class UrlState:
    """The query parameters of one page run, checked value by value; `notes` collects what was refused."""

    def __init__(self, params: Mapping[str, str | Sequence[str]]):
        self.params: dict[str, list[str]] = {}
        for key, value in dict(params).items():
            values = [value] if isinstance(value, str) else [str(v) for v in value]
            self.params[str(key)] = values
        self.notes: list[str] = []

    def raw(self, key: str) -> list[str]:
        return list(self.params.get(key, []))

    def has(self, key: str) -> bool:
        return bool(self.params.get(key))

    def choice(self, key: str, options: Sequence[T], default: T, *, what: str | None = None,
               label: Callable[[T], str] = str) -> T:
        """The option whose text is the key's (last) value; `default` when absent or not an option."""
        values = self.params.get(key)
        if not values:
            return default
        value = values[-1]
        if len(value) <= MAX_VALUE_CHARS:
            for option in options:
                if label(option) == value:
                    return option
        self.notes.append(f"The link's {what or key} '{shown(value)}' is not available here; showing "
                          f"{label(default) if default is not None else 'the default'}.")
        return default

    def choices(self, key: str, options: Sequence[T], *, limit: int, what: str | None = None,
                label: Callable[[T], str] = str) -> list[T]:
        """Every value that is an option (in the link's order, no repeats, at most `limit`); notes for the rest."""
        by_text = {label(o): o for o in options}
        out: list[T] = []
        refused: list[str] = []
        for value in self.params.get(key, []):
            option = by_text.get(value) if len(value) <= MAX_VALUE_CHARS else None
            if option is None:
                refused.append(value)
            elif option not in out:
                out.append(option)
        if refused:
            self.notes.append(f"The link's {what or key} {', '.join(repr(shown(v)) for v in refused[:3])}"
                              f"{' and more' if len(refused) > 3 else ''} "
                              f"{'is' if len(refused) == 1 else 'are'} not available here; left out.")
        if len(out) > limit:
            self.notes.append(f"The link names {len(out)} {what or key}s; showing the first {limit}.")
            out = out[:limit]
        return out

    def integer(self, key: str, lo: int, hi: int, default: int, *, what: str | None = None) -> int:
        """An integer in [lo, hi]; `default` when absent, not an integer, or out of range."""
        values = self.params.get(key)
        if not values:
            return default
        value = values[-1].strip()
        if _INTEGER.fullmatch(value) and lo <= int(value) <= hi:  # ASCII digits only (int() takes any Unicode digit)
            return int(value)
        self.notes.append(f"The link's {what or key} '{shown(value)}' is not a whole number from {lo} to {hi}; "
                          f"showing {default}.")
        return default

    def flag(self, key: str, default: bool, *, what: str | None = None) -> bool:
        return self.choice(key, [True, False], default, what=what, label=lambda b: "1" if b else "0")


def to_params(state: Mapping[str, Any]) -> dict[str, str | list[str]]:
    """The query parameters of a view: only VIEW_KEYS (never an identity), None dropped, bools as 1 / 0,
    lists as repeated keys."""
    out: dict[str, str | list[str]] = {}
    for key, value in state.items():
        if key not in VIEW_KEYS or key in IDENTITY_KEYS or value is None:
            continue
        if isinstance(value, bool):
            out[key] = "1" if value else "0"
        elif isinstance(value, (list, tuple)):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def changed_params(current: Mapping[str, str | Sequence[str]], state: Mapping[str, Any]) -> dict[str, str | list[str]]:
    """The parameters of `state` whose value differs from the URL's `current` ones (written one by one, so a
    page rerun that changed nothing writes nothing and keys of other pages are left alone)."""
    now = {k: ([v] if isinstance(v, str) else list(v)) for k, v in dict(current).items()}
    out = {}
    for key, value in to_params(state).items():
        as_list = [value] if isinstance(value, str) else list(value)
        if now.get(key) != as_list:
            out[key] = value
    return out


# ------------------------------------------------------------------------------ paging a grid
def page_bounds(n: int, page: int, per_page: int) -> tuple[int, int, int]:
    """(start, stop, pages) of page `page` (1-based, clamped to 1..pages) of n items."""
    pages = max(1, -(-max(0, n) // max(1, per_page)))
    page = min(max(1, int(page)), pages)
    start = (page - 1) * per_page
    return start, min(n, start + per_page), pages


def page_caption(n: int, start: int, stop: int) -> str:
    """'48 of 189 (1–48)': how many a grid shows of how many are selected."""
    if n == 0:
        return "0 selected"
    if stop - start >= n:
        return f"all {n}"
    return f"{stop - start} of {n} ({start + 1}–{stop})"
