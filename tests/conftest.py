"""Shared test setup: CPU only, offline, and a fresh EMBEDLAB_HOME per test session."""
import os
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # as open_clip's tests do: everything on the CPU
os.environ["EMBEDLAB_OFFLINE"] = "1"  # never touch the network; offline paths must fail fast
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# idle OpenMP threads sleep instead of spinning: on a loaded 2-core machine spinning workers
# burn the cores the other threads (the app server, a second process) need
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# no numba warm-up thread in the app tests and the browser tests' servers: ~40 CPU seconds each on a
# fresh home, taken from the runs they watch (tests/test_projections.py tests the warm-up itself)
os.environ.setdefault("EMBEDLAB_PROJECTION_WARMUP", "0")
# app and unit tests train in the server's thread: a child process per run costs ~3-5 s of imports each;
# tests/test_process_worker.py tests the child, and the browser tests' servers use it (tests/e2e/e2e_server.py)
os.environ.setdefault("EMBEDLAB_TRAIN_IN", "thread")


def _shared_numba_cache() -> str:
    """One numba cache for the whole suite: both halves of `make test`, the CLI children and the browser
    tests' servers. Each fresh EMBEDLAB_HOME would otherwise compile UMAP's kernels again (~50 s on 2
    cores, paid by several processes); it sits in the venv beside the numba it was compiled by, so a second
    `make test` on the machine loads them (`make clean` removes it)."""
    import sys
    import tempfile

    venv = Path(sys.prefix)
    folder = venv / "numba-cache" if os.access(venv, os.W_OK) else Path(tempfile.gettempdir()) / f"embedlab-numba-{os.getuid()}"
    return str(folder)


os.environ.setdefault("NUMBA_CACHE_DIR", _shared_numba_cache())

import inspect  # noqa: E402

import pytest  # noqa: E402

TESTS = Path(__file__).parent

# Parametrised cases over ~3 s of CPU (measured with EMBEDLAB_TEST_TIMES): "file::test[id]" marks one case
# slow (the other cases stay in the fast tier); whole tests carry @pytest.mark.slow in their own file.
SLOW_TESTS = {
    "tests/test_content_style.py::test_semi_supervised_beats_ce_with_100_labels[adversarial]",  # 4.2 s
    "tests/test_backbones.py::test_backbone_contract[lite0-minilm]",  # 4.2 s
    "tests/test_projections.py::test_shapes_and_determinism[2-tsne]",  # 3.8 s
    "tests/test_backbones.py::test_split_image_reproduces_encode_image[1-lite0-minilm]",  # 4.3 s
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(config, items):
    """The tiers, so `make test-fast` can leave out what is not a unit test (pytest.ini registers the markers):
    slow (@pytest.mark.slow, and the cases in SLOW_TESTS above); e2e = everything under tests/e2e/ (a real server and Chromium); app = a test
    that drives pages through Streamlit's AppTest (its module imports AppTest, or its own body uses it: it runs
    the app script); reliability = tests/reliability/."""
    for item in items:
        if item.nodeid in SLOW_TESTS or item.nodeid.split("[")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        try:
            first = Path(str(item.fspath)).resolve().relative_to(TESTS.resolve()).parts[0]
        except ValueError:
            continue
        if first == "e2e":
            item.add_marker(pytest.mark.e2e)
        elif first == "reliability":
            item.add_marker(pytest.mark.reliability)
        module = getattr(item, "module", None)
        if hasattr(module, "AppTest") or "AppTest" in _source(getattr(item, "function", None)):
            item.add_marker(pytest.mark.app)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """EMBEDLAB_TEST_TIMES=FILE: one line per test, `cpu_s wall_s nodeid` (setup + call + teardown; CPU of
    this process's threads and of the subprocesses it waited for). CPU seconds are what the fast tier's
    "over ~3 s = slow" is judged by: on a loaded machine wall time mostly measures the neighbours."""
    out = os.environ.get("EMBEDLAB_TEST_TIMES")
    if not out:
        return (yield)
    import time

    def cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    c0, t0 = cpu(), time.perf_counter()
    try:
        return (yield)
    finally:
        with open(out, "a", encoding="utf-8") as f:
            f.write(f"{cpu() - c0:.2f} {time.perf_counter() - t0:.2f} {item.nodeid}\n")


def _source(fn) -> str:
    try:
        return inspect.getsource(fn) if fn is not None else ""
    except (OSError, TypeError):
        return ""


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
