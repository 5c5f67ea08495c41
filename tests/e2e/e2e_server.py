"""Start the real app for browser tests: `streamlit run app.py` on a free port, own EMBEDLAB_HOME, offline."""
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextmanager
def serve_app(home: Path, log_path: Path, env: dict | None = None):
    """`streamlit run app.py` on a free port with its own EMBEDLAB_HOME (and `env` on top); yields the base URL.

    The server is core.viewer_bench's (the one the viewer benchmark measures): it polls /_stcore/health
    instead of sleeping; the server log goes to `log_path`. Runs train in a child process, the app's default,
    whatever tests/conftest.py set for the in-process tests.
    """
    from core.viewer_bench import BenchError, serve

    with ExitStack() as stack:
        try:
            server = stack.enter_context(serve(home, log_path, extra_env={"EMBEDLAB_TRAIN_IN": "process", **(env or {})}))
        except BenchError as exc:
            pytest.fail(str(exc))
        yield server.url
