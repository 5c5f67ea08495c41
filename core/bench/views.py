"""The viewing side of `python -m core bench`: projection times (and what each UMAP / t-SNE lever buys), and
the Explore page's server side at scale (PCA of two panes and the payload the browser receives)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

PROJECTION_LEVERS = {  # name -> (method, params): each lever alone, then all together (the defaults)
    "umap": {"before": {"pre_pca": False, "n_epochs": 500}, "pca50": {"pre_pca": True, "n_epochs": 500},
             "epochs200": {"pre_pca": False, "n_epochs": 200}, "now": {}},
    "tsne": {"before": {"knn": "annoy", "min_num_intervals": 50, "n_iter": 500}, "iter500": {"n_iter": 500},
             "pca50": {"pre_pca": True}, "all_cores": {"n_jobs": 2}, "now": {}},
}  # "before": the old code's settings (umap's own n_epochs at 10k is 500; t-SNE: Annoy neighbours, a 50-interval FFT
#    grid, openTSNE's 500 normal iterations); "iter500": only openTSNE's 500 iterations instead of EmbedLab's 350


def projection_times(root: Path, *, quick: bool, sizes: dict[str, int] | None = None, levers: bool = True,
                     params: dict[str, dict] | None = None) -> dict:
    """Seconds to project clustered 384-d data: PCA 50k, UMAP 10k, t-SNE 5k (2-D), with the defaults;
    `levers`: each speed lever of UMAP / t-SNE alone and all together, the settings run one after
    another on the same data (`<method>_<n>k_lever_<name>_s`); `params`: per-method settings that
    override every lever's (the test's small form runs every lever with few t-SNE iterations). `projection_jit_warmup_s` is the first
    tiny UMAP + t-SNE in this process: numba loading its kernels from the disk cache on a warm machine,
    compiling them (15-20 s) only the first time on a machine."""
    from .. import projections

    sizes = {"pca": 50_000, "umap": 10_000, "tsne": 5_000, **(sizes or {})}
    params_all = params or {}
    rng = np.random.default_rng(0)

    def clustered(n: int) -> np.ndarray:
        centres = rng.normal(size=(10, 384)).astype(np.float32)
        return (centres[rng.integers(0, 10, n)] + 0.5 * rng.normal(size=(n, 384))).astype(np.float32)

    out = {}
    out["projection_jit_warmup_s"] = round(projections.warm_up(), 2)
    for method in ("pca", "umap", "tsne"):
        n = sizes[method]
        x = clustered(n)
        tag = f"{method}_{n // 1000}k" if n >= 1000 else f"{method}_{n}"
        runs = {"now": {}}
        if levers and method in PROJECTION_LEVERS:
            runs = PROJECTION_LEVERS[method]
        for name, lever in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            projections.project(x, method=method, dims=2, seed=0, cache=False, **{**lever, **(params_all.get(method) or {})})
            key = tag if name == "now" else f"{tag}_lever_{name}"
            out[f"{key}_s"] = round(time.perf_counter() - t0, 2)
            # CPU seconds of all threads: on a shared machine wall time mostly measures the neighbours
            out[f"{key}_cpu_s"] = round(time.process_time() - c0, 2)
    return out


def explorer_scale(sizes=(10_000, 50_000, 100_000), max_points: int = 50_000) -> dict:
    """The Explore page's server side at scale: PCA of two panes (before/after, 384-d) and the payload
    sent to the browser. Above `max_points` the page draws a seeded subsample, as it does in the app."""
    from .. import projections
    from ..scatter_payload import build_payload, payload_bytes

    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        shown = min(n, max_points)
        labels = rng.integers(0, 10, n)
        centres = rng.normal(size=(10, 384)).astype(np.float32)
        t0 = time.perf_counter()
        panes = []
        for shift in (0.8, 0.4):  # 'before' blurrier than 'after'
            x = (centres[labels] + shift * rng.normal(size=(n, 384))).astype(np.float16)
            keep = np.sort(rng.choice(n, shown, replace=False)) if shown < n else np.arange(n)
            panes.append({"title": f"pane {shift}", "points": projections.project(x[keep], method="pca", dims=2, seed=0, cache=False)})
        project_s = time.perf_counter() - t0
        payload = build_payload(panes, ids=keep, labels=labels[keep], preds=labels[keep], class_names=[str(i) for i in range(10)])
        tag = f"{n // 1000}k"
        out[f"explore_{tag}_pca_2panes_s"] = round(project_s, 2)
        out[f"explore_{tag}_payload_mb"] = round(payload_bytes(payload) / 1e6, 2)
        out[f"explore_{tag}_points_drawn"] = shown
    return out


def viewer_figures(*, quick: bool) -> dict:
    """core/viewer_bench.py's viewer table as bench figures: steps/s of a run with N headless Chromium pages on
    its Train page, and the ratio to none (`--only viewers`, opt-in: minutes, not seconds)."""
    from .. import viewer_bench

    shape = dict(window_s=6, settle_s=2, steps=12_000) if quick else dict(steps=150_000)
    result = viewer_bench.viewer_benchmark((0, 1) if quick else (0, 1, 2, 4, 8), **shape)
    out: dict = {}
    for n, row in result["viewers"].items():
        out[f"viewers_{n}_steps_per_s"] = row["steps_per_s"]
        out[f"viewers_{n}_ratio"] = row["ratio"]
    return out


def load_figures(*, quick: bool) -> dict:
    """core/viewer_bench.py's load test as bench figures: sessions (websocket tabs, one person each, in
    workshop mode) that each start a tiny run and watch it (`--only load`, opt-in). Lost: started but not in
    the store; unfinished: in the store but not finished; pages missing: loads that got no whole answer."""
    from .. import viewer_bench

    r = viewer_bench.load_test(3 if quick else 20)
    return {"load_sessions": r["sessions"], "load_clients": r["clients"], "load_runs_finished": r["runs_finished"],
            "load_runs_lost": len(r["lost"]), "load_runs_unfinished": len(r["not_finished"]),
            "load_errors": len(r["errors"]), "load_pages_missing": r["pages_expected"] - r["pages_answered"],
            "load_p95_page_s": r["p95_page_s"], "load_median_page_s": r["median_page_s"],
            "load_p95_poll_s": r["p95_poll_s"], "load_p95_start_s": r["p95_start_s"],
            "load_first_error": r["errors"][0] if r["errors"] else None}
