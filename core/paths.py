"""Where EmbedLab keeps things: one folder, `EMBEDLAB_HOME` (default `./.embedlab`).

    $EMBEDLAB_HOME/
        runs.db            run database (SQLite, WAL)
        runs/<run_id>/     per-run artifacts: config.json, checkpoint.safetensors, embeddings/
        datasets/<name>/   imported user datasets, one sub-folder per class
        downloads/         torchvision downloads (CIFAR, SVHN, ...)
        cache/             features, embeddings, projections, decoded datasets (cache/datasets/<name>/<stamp>/)
        locks/             flock files: one import (or delete) of a dataset name at a time

Every user-supplied name goes through `safe_name` / `confined` so nothing is read or written
outside this folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import EmbedLabError, UnsafePath

ENV_VAR = "EMBEDLAB_HOME"
DEFAULT_HOME = ".embedlab"
CHECKPOINT = "checkpoint.safetensors"  # a run folder's weights (core/train.py); here so the store need not import torch
_SAFE_NAME = re.compile(r"^[\w][\w .+\-]{0,99}$", re.UNICODE)  # letters, digits, _ . + - space


def home(override: str | os.PathLike | None = None) -> Path:
    """The EmbedLab home folder, created if missing. `override` wins over the environment."""
    root = Path(override or os.environ.get(ENV_VAR) or DEFAULT_HOME).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # `--runs-dir /etc/passwd`, a read-only parent: one line, naming the folder
        what = "is a file, not a folder" if root.exists() else f"cannot be created ({exc.strerror or exc})"
        raise EmbedLabError(f"EmbedLab home {root} {what}; use another --runs-dir or {ENV_VAR}") from None
    return root


def check_writable(root: Path) -> None:
    """EmbedLabError unless runs can be saved under `root` (a read-only home still lists its runs)."""
    if not os.access(root, os.W_OK | os.X_OK):
        raise EmbedLabError(f"EmbedLab home {root} is read-only: runs cannot be saved there (listing them still works); "
                            f"use a writable --runs-dir or {ENV_VAR}")


def subdir(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(name: str, what: str = "name") -> str:
    """Return `name` if it is a plain single path component, else raise UnsafePath."""
    # fullmatch, not match: `$` would let a trailing newline through ("cats\n" is not a plain name)
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in {".", ".."} or ".." in name:
        raise UnsafePath(
            f"{what} {name!r} is not allowed: use letters, digits, spaces, '.', '_', '+' or '-' "
            "(at most 100 characters, no '..' and no path separators)"
        )
    return name


def confined(root: Path, *parts: str) -> Path:
    """`root/parts...`, refusing anything that resolves outside `root` (.., absolute paths, links)."""
    root = Path(root).resolve()
    for part in parts:
        if Path(part).is_absolute():
            raise UnsafePath(f"absolute path {part!r} is not allowed here")
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise UnsafePath(f"path {'/'.join(parts)!r} points outside {root}")
    return target
