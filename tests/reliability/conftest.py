"""Fixtures of the reliability suite (tests/conftest.py already makes everything CPU-only and offline)."""
from __future__ import annotations

import pytest

import core.train as train_mod
from core.store import RunStore

from helpers import one_torch_thread


@pytest.fixture(scope="module")
def real(_session_home, tmp_path_factory):
    """(store, root) for real tiny runs: a private run store; datasets and caches shared with the session.
    Torch runs single-threaded and every step is logged (exact step assertions)."""
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        mp.setattr(train_mod, "DB_FLUSH_INTERVAL_S", 0.0)
        yield RunStore(tmp_path_factory.mktemp("rel-runs")), _session_home


@pytest.fixture
def datasets_home(tmp_path):
    """A private EMBEDLAB_HOME for imports; returns (root, its datasets folder)."""
    root = tmp_path / "home"
    return root, root / "datasets"
