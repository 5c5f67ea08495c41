"""A small named registry, as timm's `_registry.py` does it: plugins register entries, the registry
imports none of them.

    OBJECTIVES = Registry("objective")

    @OBJECTIVES.register("ce", label="CE", ...)
    class CrossEntropyMethod(Method): ...

A registry is a mapping (name -> entry) in registration order, so `list(OBJECTIVES)`,
`name in OBJECTIVES` and `OBJECTIVES[name]` work as on a dict; an unknown name raises
`UnknownName` with the known names and the nearest ones. Which modules register into which registry
is listed once, in `core/plugins.py`; code that needs every entry imports that.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

from .errors import UnknownName

E = TypeVar("E")


def did_you_mean(name: str, candidates: list[str]) -> str:
    """'; did you mean a, b?' for the close matches of `name` among `candidates`, else ''."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


class Registry(MutableMapping[str, E], Generic[E]):
    """Name -> entry, filled by `add` or the `register` decorator; duplicate names are refused."""

    def __init__(self, kind: str):
        self.kind = kind  # what an entry is, for messages ("objective", "backbone")
        self._entries: dict[str, E] = {}  # name -> entry, in registration order

    def add(self, name: str, entry: E, *, replace: bool = False) -> E:
        """Register `entry` under `name` (a second registration of a name is a bug unless `replace`)."""
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str, make_entry: Callable[[Callable], E]) -> Callable[[Callable], Callable]:
        """Decorator: `make_entry(fn)` is registered under `name`; the function itself is returned unchanged."""

        def decorate(fn: Callable) -> Callable:
            self.add(name, make_entry(fn))
            return fn

        return decorate

    def remove(self, name: str) -> None:
        """Forget an entry (tests that register a temporary one)."""
        self._entries.pop(name, None)

    def get_entry(self, name: str) -> E:
        """The entry of `name`, or UnknownName listing the known names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(self.unknown(name)) from None

    def unknown(self, name) -> str:
        """The one-line message for a name that is not registered."""
        names = list(self._entries)
        hint = did_you_mean(name, names) if isinstance(name, str) else ""
        return f"unknown {self.kind} {name!r}; choose from: {', '.join(names)}{hint}"

    def __getitem__(self, name: str) -> E:
        return self._entries[name]

    def __setitem__(self, name: str, entry: E) -> None:  # monkeypatch.setitem in tests; code uses add()
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
