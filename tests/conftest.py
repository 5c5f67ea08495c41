"""Shared test setup: CPU only, offline, and a fresh EMBEDLAB_HOME per test session."""
import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # as open_clip's tests do: everything on the CPU
os.environ["EMBEDLAB_OFFLINE"] = "1"  # never touch the network; offline paths must fail fast
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# idle OpenMP threads sleep instead of spinning: on a loaded 2-core machine spinning workers
# burn the cores the other threads (the app server, a second process) need
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# no numba warm-up thread in the app tests and the browser tests' servers: ~40 CPU seconds each on a
# fresh home, taken from the runs they watch (tests/test_projections.py tests the warm-up itself)
os.environ.setdefault("EMBEDLAB_PROJECTION_WARMUP", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory):
    """A session-wide EMBEDLAB_HOME so caches (features, bridge embeddings) are shared between tests."""
    home = tmp_path_factory.mktemp("embedlab-home")
    os.environ["EMBEDLAB_HOME"] = str(home)
    yield home


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private EMBEDLAB_HOME for one test."""
    monkeypatch.setenv("EMBEDLAB_HOME", str(tmp_path))
    return tmp_path
