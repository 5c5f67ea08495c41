"""`python -m core bench [--quick] [--json]`: EmbedLab's speed, measured side by side.

Outside the library's import graph: only the command line (core/cli/bench.py) imports this package, and it
imports nothing of the UI (the Explore payload it measures is core/scatter_payload.py, which the
scatter component also uses).

Every figure that can be a ratio is one, measured in one process with the two sides interleaved
(A B A B ...) and the median taken, so a noisy shared machine moves both sides alike:

    loop_ratio      EmbedLab's training loop throughput / a bare hand-written PyTorch loop
                    (same model, batch, optimizer, augmentation, data in memory)      goal >= 0.97
    extract_ratio   embedding extraction throughput / a bare `model(x)` loop under
                    torch.inference_mode                                             goal >= 0.95
    cache_speedup   epoch time recomputing a frozen backbone / the same epoch reading
                    cached features                                                  goal >= 20
    ui_slowdown     a job's mean step time while the UI's per-second progress polling runs /
                    while it does not (alternating 2 s windows in one run)           goal <= 1.05
    pca_50k_s, umap_10k_s, tsne_5k_s   projection times on 384-d data (seconds), goals umap <= 10,
                    tsne <= 6; plus *_lever_*_s: what each UMAP / t-SNE setting buys
    viewers_N_ratio  steps/s of a run with N headless Chromium pages on its Train page / with none
                    (core/viewer_bench.py; opt-in: --only viewers)                   goal >= 0.9 at 4
    load_*          N sessions (websocket tabs, one person each, workshop mode) each start a tiny run and
                    watch it: runs finished / lost / unfinished, pages missing, p95 page and poll time
                    (opt-in: --only load; 20 sessions, 3 with --quick)       goals 0 lost / unfinished / missing
    quick_compare_s  wall time of the default CE + LaCViT + FLYP comparison (cold caches),
                     quick_compare_warm_s the same with caches warm

Parts: core/bench/training.py (loop, extract, levers, cache, ui, quick_compare, gpu), core/bench/views.py
(projections, scale); shared measurement helpers in core/bench/_measure.py.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .training import (POLL_INTERVAL_S, cache_speedup, compile_speedup, cpu_levers, extract_ratio,  # noqa: F401
                       gpu_throughput, loop_ratio, online_default_available, quick_compare, ui_slowdown)
from .views import PROJECTION_LEVERS, explorer_scale, load_figures, projection_times, viewer_figures  # noqa: F401


# ---------------------------------------------------------------------------------- entry
def run_bench(quick: bool = True, *, log: Callable[[str], None] = lambda s: None, only: list[str] | None = None) -> dict:
    from ..device import configure_threads, describe

    configure_threads()
    results: dict = {"machine": describe(), "torch": torch.__version__, "quick": quick,
                     "commit": _git_commit()}
    reps = 3 if quick else 5
    with tempfile.TemporaryDirectory(prefix="embedlab-bench-") as tmp:
        root = Path(tmp)
        from ..projections import prepare_numba

        prepare_numba()  # the machine's numba cache (the real EMBEDLAB_HOME), not the throw-away home's
        os.environ.setdefault("EMBEDLAB_HOME", str(root))
        parts = [
            ("loop", lambda: loop_ratio(root, steps=12 if quick else 30, repeats=reps)),
            ("extract", lambda: extract_ratio(root, n=256 if quick else 1024, repeats=reps)),
            ("levers", lambda: cpu_levers(repeats=reps)),
            ("cache", lambda: cache_speedup(root, n_per_class=16 if quick else 64, repeats=reps)),
            ("ui", lambda: ui_slowdown(root, steps=60 if quick else 200)),
            ("projections", lambda: projection_times(root, quick=quick)),
            ("quick_compare", quick_compare),
            ("scale", explorer_scale),
            ("compile", compile_speedup),
            ("viewers", lambda: viewer_figures(quick=quick)),
            ("load", lambda: load_figures(quick=quick)),
        ]
        for name, fn in parts:
            if (only and name not in only) or (not only and name in OPT_IN_PARTS):
                continue
            t0 = time.perf_counter()
            log(f"bench: {name} ...")
            results.update(fn())
            log(f"bench: {name} done in {time.perf_counter() - t0:.0f} s")
    online = online_default_available()
    results["quick_compare_online_s"] = None
    results["quick_compare_online_note"] = (f"{online} weights are cached: run `python -m core bench` online to time it"
                                            if online else "no online default weights in the local cache (offline machine)")
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}


OPT_IN_PARTS = ("compile", "viewers", "load")  # slow one-off measurements (real servers, browsers): --only
GOALS = {"loop_ratio": (">=", 0.97), "extract_ratio": (">=", 0.95), "cache_speedup": (">=", 20.0), "ui_slowdown": ("<=", 1.05),
         "umap_10k_s": ("<=", 10.0), "tsne_5k_s": ("<=", 6.0),
         "viewers_4_ratio": (">=", 0.9), "load_runs_lost": ("<=", 0),
         "load_runs_unfinished": ("<=", 0), "load_errors": ("<=", 0), "load_pages_missing": ("<=", 0)}


def format_table(results: dict) -> str:
    lines = [f"{'figure':<24} {'value':>10}  goal", "-" * 48]
    for key, value in results.items():
        if isinstance(value, (dict, list)) or key in ("machine", "torch", "quick", "commit"):
            continue
        goal = GOALS.get(key)
        goal_text = ""
        if goal and isinstance(value, (int, float)):
            ok = value >= goal[1] if goal[0] == ">=" else value <= goal[1]
            goal_text = f"{goal[0]} {goal[1]}  {'ok' if ok else 'MISSED'}"
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<24} {shown:>10}  {goal_text}")
    return "\n".join(lines)


def _git_commit() -> str | None:
    try:
        import subprocess

        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:
        return None
