"""core/preload.py: the libraries pages and workers share are imported once, one thread at a time,
before app.py starts any thread of its own."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_room_of_threads_preloading_at_once_each_sees_whole_modules():
    """16 threads call preload() at the same instant in a fresh interpreter (nothing of SHARED imported yet);
    each then uses what it imported. A half-initialised module would raise AttributeError here."""
    code = f"""
import sys, threading
assert not any(m in sys.modules for m in ("pandas", "sklearn", "pyarrow")), "not a fresh interpreter"
sys.path.insert(0, {str(REPO)!r})
from core.preload import preload, SHARED
barrier, errors = threading.Barrier(16), []
def visitor():
    barrier.wait()
    try:
        preload()
        import pandas, sklearn.metrics, pyarrow, plotly.graph_objects as go
        pandas.Series([1.0]); sklearn.metrics.accuracy_score([0], [0]); pyarrow.array([1]); go.Figure()
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=visitor) for _ in range(16)]
[t.start() for t in threads]; [t.join() for t in threads]
assert not errors, errors
assert all(m in sys.modules for m in SHARED)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_app_preloads_before_it_starts_any_thread():
    """app.py calls preload() before get_manager() (the training workers) and warm_up_at_start() (numba)."""
    tree = ast.parse((REPO / "app.py").read_text())
    calls = [n.value.func.id for n in tree.body
             if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)]
    assert "preload" in calls and calls.index("preload") < calls.index("get_manager") < calls.index("warm_up_at_start")
