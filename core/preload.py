"""Import, once per server and one thread at a time, the libraries that page threads and worker threads
would otherwise import for the first time at the same moment.

Streamlit runs every session's script in a thread of its own, and runs train in worker threads. On a
fresh server pandas, pyarrow, plotly and scikit-learn are first imported lazily, from whichever thread
needs them first. When two threads start importing two of them that import each other (pandas and
pyarrow, sklearn and pandas), CPython's import locks break the deadlock by handing one thread a
half-initialised module: the 20-session load test (core/viewer_bench.py) saw a page fail with
"AttributeError: partially initialized module 'pandas' has no attribute 'Series'". `preload()` is the
first thing app.py does; every later import of these is a dictionary lookup.
"""
from __future__ import annotations

import importlib
import threading

# What both a page and a worker may import first (the report's tables and exports, the metrics, the
# plotly figures); numba's UMAP is left to the projection warm-up, which imports nothing else first.
SHARED = ("numpy", "pandas", "pyarrow", "pyarrow.parquet", "plotly.graph_objects", "PIL.Image", "scipy.sparse",
          "sklearn.metrics", "sklearn.linear_model", "sklearn.neighbors", "sklearn.decomposition")
_LOCK = threading.Lock()


def preload(modules: tuple[str, ...] = SHARED) -> None:
    """Import `modules` in this thread; other threads calling it meanwhile wait for the lock, holding no
    import lock, so they cannot be part of a deadlock. After the first call each import is a lookup."""
    with _LOCK:
        for name in modules:
            importlib.import_module(name)
