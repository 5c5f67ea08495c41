"""What every command of `python -m core` shares: the one-line usage error, the home folder a command
works in (`--runs-dir`), and the JSON line most commands end with."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _root(args) -> Path:
    from ..paths import home

    return home(getattr(args, "runs_dir", None))


def _json_line(obj) -> None:
    print(json.dumps(obj, default=_jsonable))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def labels_arg(value: str) -> int | None:
    """--labels N | all: a positive number of labelled images, or None for 'all'."""
    if value.strip().lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', not {value!r}") from None
