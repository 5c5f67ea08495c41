"""2-D / 3-D projections of embedding sets: PCA, UMAP, t-SNE; aligned panes; trajectories.

    project(x, "umap", dims=2, seed=0)   -> [N, 2] float32, cached on disk by input hash + params
    align_panes([(ids, Y), ...])          -> the panes rotated onto the first one (Procrustes)
    trajectory([(step, ids, X), ...])     -> one aligned frame per snapshot

Every method sees L2-normalised rows, so all three follow cosine geometry like the metrics do.
UMAP first reduces rows of more than 50 dimensions to their top 50 principal components (the
standard practice: it drops noise dimensions and makes the neighbour search several times cheaper),
then runs its usual algorithm; t-SNE can (`pre_pca=True`) but measured no gain. See BENCHMARKS.md
for what each setting buys.

Fast and honest in the UI: `progressive(key, fast, slow)` returns the instant PCA result while the
seeded UMAP / t-SNE runs in one background thread per process, and the slow result once it is done.
numba's compiled kernels are cached on disk (`prepare_numba`: EMBEDLAB_HOME/cache/numba, also for
the umap / pynndescent functions that do not ask for it), so the compile is paid once per machine,
and `warm_up_in_background()` pays it at server start, not on the first click.

How panes share an orientation: each pane is projected on its own (its own PCA / UMAP / t-SNE;
the panes may even have different dimensions: CE's encoder vs FLYP's image tower), then every
pane is mapped onto the reference pane by an orthogonal Procrustes fit (rotation and reflection,
one uniform scale and a translation, nothing that bends the layout) on the sample ids both panes
contain. Frames of a trajectory are chained: frame t is fitted onto the already aligned frame t-1.
`shared_pca` is the alternative when every pane has the same dimension: one PCA basis fitted on all
panes together, so the axes mean the same thing everywhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import l2_normalize

_logger = logging.getLogger(__name__)

METHODS = ("pca", "umap", "tsne")  # projection methods, cheapest first
METHOD_LABELS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}  # display names
_CACHE_VERSION = 3  # bump when a method's output for the same key changes (2: PCA-50 first, n_epochs 200; 3: t-SNE 250 + 350)
PRE_PCA_DIMS = 50  # UMAP / t-SNE input beyond this many dimensions is reduced to its top 50 PCs first
UMAP_EPOCHS = 200  # umap's own default for > 10k points; its 500 for small sets buys nothing visible
# t-SNE's schedule: openTSNE's 250 early-exaggerated iterations, then 350 normal ones where openTSNE runs 500.
# EmbedLab's own choice, said in the Projection control's help and the README: with openTSNE's learning rate
# of N / exaggeration the layout has settled by then (5,000 x 384: exact KL within 0.5 % of 500's, the same
# trustworthiness, 0.963), and the last 150 iterations are the dearest, the FFT grid growing with the
# layout's span: a quarter of the total time (BENCHMARKS.md, lever `iter500`: 5.99 s against 4.50).
TSNE_EXAGGERATION_ITER, TSNE_ITER = 250, 350
PROJECTION_HELP = ("PCA is instant and exact. UMAP (umap-learn: 15 neighbours, min_dist 0.1, on the top 50 PCs, "
                   f"{UMAP_EPOCHS} epochs) and t-SNE (openTSNE: perplexity 30, PCA initialisation, "
                   f"{TSNE_EXAGGERATION_ITER} exaggerated + {TSNE_ITER} iterations, where openTSNE's default is "
                   f"{TSNE_EXAGGERATION_ITER} + 500: the last {500 - TSNE_ITER} change its KL by under 0.5 % and cost a "
                   "quarter of the time) arrive after PCA, then come from the disk cache. Distances between far-apart clusters "
                   "mean little in UMAP and t-SNE.")


# -------------------------------------------------------------------------------- the methods
# Each method fits on `x` and places the optional `extra` rows (FLYP's class-prompt anchors) out of
# sample: anchors live far from the images (the modality gap), so fitting on them too would spend
# a whole axis on that gap and squash every image into a line.
def _pca(x: np.ndarray, dims: int, seed: int, extra: np.ndarray | None = None, **_):
    from sklearn.decomposition import PCA

    n, d = x.shape
    k = min(dims, n, d)
    solver = "randomized" if n > 5000 and d > 50 else "full"
    pca = PCA(n_components=k, svd_solver=solver, random_state=seed).fit(x)
    return _pad(pca.transform(x), dims), None if extra is None else _pad(pca.transform(extra), dims)


def pre_pca(x: np.ndarray, seed: int, extra: np.ndarray | None = None, dims: int = PRE_PCA_DIMS):
    """(x, extra) reduced to their top `dims` principal components (fitted on x) when x has more
    columns than that; unchanged otherwise."""
    n, d = x.shape
    if d <= dims or n <= dims:
        return x, extra
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dims, svd_solver="randomized" if n > 2000 else "full", random_state=seed).fit(x)
    return (pca.transform(x).astype(np.float32),
            None if extra is None else pca.transform(extra).astype(np.float32))


def _umap(x: np.ndarray, dims: int, seed: int, extra: np.ndarray | None = None, *, n_neighbors: int = 15,
          min_dist: float = 0.1, n_epochs: int = UMAP_EPOCHS, pre_pca: bool = True,
          force_approximation: bool = False, **_):
    n = len(x)
    if n < max(dims + 2, 8):  # spectral layout needs a few points; tiny sets get PCA
        return _pca(x, dims, seed, extra)
    umap = import_umap()
    if pre_pca:
        x, extra = globals()["pre_pca"](x, seed, extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": determinism is the point
        reducer = umap.UMAP(n_components=dims, n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist,
                            metric="euclidean", random_state=seed, transform_seed=seed, n_epochs=n_epochs,
                            init="spectral" if n > dims + 10 else "random",
                            force_approximation_algorithm=force_approximation)
        y = reducer.fit_transform(x)
        return y, None if extra is None else reducer.transform(extra)


# t-SNE's two speed levers, both kept faithful (BENCHMARKS.md "t-SNE of 5,000 in 6 s"): the perplexity
# affinities from the exact k nearest neighbours (one brute-force BLAS product: 0.4 s at 5k x 384 where
# openTSNE's default Annoy index took 2 s, and exact is what Annoy approximates), and an FFT grid of at
# least 20 instead of 50 intervals per axis: it only matters while the layout is compact (early
# exaggeration), where 50 intervals bought no visible accuracy (KL within 0.3 %, same trustworthiness).
TSNE_EXACT_KNN_MAX = 10_000  # above this, the O(n^2) exact search loses to Annoy's index
TSNE_MIN_INTERVALS = 20  # openTSNE's min_num_intervals (its default: 50)


def _tsne(x: np.ndarray, dims: int, seed: int, extra: np.ndarray | None = None, *, perplexity: float = 30.0,
          n_iter: int = TSNE_ITER, early_exaggeration_iter: int = TSNE_EXAGGERATION_ITER, n_jobs: int = 1,
          pre_pca: bool = False, knn: str = "auto", min_num_intervals: int = TSNE_MIN_INTERVALS, **_):
    """knn: 'exact', 'annoy' or 'auto' (exact up to TSNE_EXACT_KNN_MAX rows)."""
    n = len(x)
    if n < 8:
        return _pca(x, dims, seed, extra)
    perplexity = float(min(perplexity, max(2.0, (n - 1) / 3.0 - 1.0)))
    fit_x, fit_extra = globals()["pre_pca"](x, seed, extra) if pre_pca else (x, extra)
    try:
        from openTSNE import TSNE
    except ImportError:  # openTSNE is in requirements; sklearn's (no out-of-sample) is the fallback
        from sklearn.manifold import TSNE as SkTSNE

        y = SkTSNE(n_components=dims, perplexity=perplexity, random_state=seed, init="pca").fit_transform(fit_x)
        return y, None if extra is None else _nearest_place(x, y, extra)
    if knn == "auto":
        knn = "exact" if n <= TSNE_EXACT_KNN_MAX else "annoy"
    # FFT interpolation only exists for 1-2 dimensions; 3-D uses Barnes-Hut. One thread and no PCA-50
    # first: on the 2 shared cores n_jobs=2 cost 2x the CPU and PCA-50 bought nothing (BENCHMARKS.md).
    tsne = TSNE(n_components=dims, perplexity=perplexity, n_iter=n_iter, early_exaggeration_iter=early_exaggeration_iter,
                random_state=seed, initialization="pca", negative_gradient_method="fft" if dims <= 2 else "bh",
                neighbors=knn, min_num_intervals=min_num_intervals, n_jobs=n_jobs, verbose=False)
    emb = tsne.fit(fit_x)
    return np.asarray(emb), None if extra is None else _nearest_place(x, np.asarray(emb), extra)


def _nearest_place(x: np.ndarray, y: np.ndarray, extra: np.ndarray, k: int = 10) -> np.ndarray:
    """Out-of-sample position: the similarity-weighted mean position of the k most similar fitted rows."""
    sims = extra @ x.T  # rows are unit length
    k = min(k, len(x))
    nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    w = np.maximum(np.take_along_axis(sims, nn, axis=1), 1e-6)
    return (y[nn] * w[..., None]).sum(1) / w.sum(1, keepdims=True)


_COMPUTE: dict[str, Callable[..., tuple]] = {"pca": _pca, "umap": _umap, "tsne": _tsne}  # method -> fn(x, dims, seed, extra, **params)


def _pad(y: np.ndarray, dims: int) -> np.ndarray:
    if y.shape[1] < dims:
        y = np.hstack([y, np.zeros((len(y), dims - y.shape[1]), dtype=y.dtype)])
    return y


# ------------------------------------------------------------------- numba: compile once per machine
_NUMBA_LOCK = threading.Lock()
_WARM: dict[str, threading.Thread] = {}
WARMUP_ENV = "EMBEDLAB_PROJECTION_WARMUP"  # "0": no warm-up thread at server start (the tests)


def numba_cache_dir(root: Path | None = None) -> Path:
    from .paths import home, subdir

    return subdir(Path(root) if root else home(), "cache", "numba")


def prepare_numba(root: Path | None = None) -> str:
    """Point numba's on-disk cache at a folder we can write (EMBEDLAB_HOME/cache/numba) unless the user
    chose one (NUMBA_CACHE_DIR); call before umap is imported. numba reads the variable when it is
    imported, so an already imported numba re-reads its configuration. Returns the folder."""
    folder = os.environ.get("NUMBA_CACHE_DIR") or str(numba_cache_dir(root))
    os.environ["NUMBA_CACHE_DIR"] = folder
    config = sys.modules.get("numba.core.config")
    if config is not None and getattr(config, "CACHE_DIR", None) != folder:
        config.reload_config()
    return folder


def import_umap():
    """`import umap` with every numba kernel of umap and pynndescent cached on disk.

    umap asks numba to cache only some of its functions; the layout optimiser, the fuzzy set and
    most of pynndescent's search compile afresh in every process (14-23 s on 2 cores, even for 59
    points). Enabling the cache on the remaining module-level dispatchers makes the second process
    load them in well under a second; functions numba cannot cache (closures) just warn and compile.
    """
    with _NUMBA_LOCK:
        if "umap" not in sys.modules:
            prepare_numba()
        import umap
        import pynndescent  # noqa: F401  (umap imports it; named so its modules are in sys.modules)

        if not getattr(umap, "_embedlab_cached", False):
            _enable_numba_caching(("umap", "pynndescent"))
            umap._embedlab_cached = True
        return umap


def _enable_numba_caching(packages: Sequence[str]) -> int:
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    n = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(value._cache, NullCache):
                try:
                    value.enable_caching()
                    n += 1
                except Exception:  # noqa: BLE001 - an uncacheable function simply compiles as before
                    pass
    return n


def warm_up(root: Path | None = None) -> float:
    """Import umap and run a tiny UMAP and t-SNE so numba's kernels are compiled (or loaded from the
    disk cache) before a user asks. Returns the seconds it took."""
    t0 = time.perf_counter()
    prepare_numba(root)
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _umap(x, 2, 0, n_epochs=20, force_approximation=True)  # umap's nn-descent path (>= 4,096 points)
        _tsne(x, 2, 0, n_iter=20, early_exaggeration_iter=20)
    return time.perf_counter() - t0


def warm_up_in_background(root: Path | None = None) -> threading.Thread:
    """warm_up() in a daemon thread, once per process (later calls return the same thread)."""
    with _NUMBA_LOCK:
        thread = _WARM.get("thread")
        if thread is None:
            def run():
                try:
                    _logger.info("projection warm-up took %.1f s", warm_up(root))
                except Exception:  # noqa: BLE001 - a failed warm-up only means the first UMAP compiles
                    _logger.warning("projection warm-up failed", exc_info=True)

            thread = _WARM["thread"] = threading.Thread(target=run, name="embedlab-projection-warmup", daemon=True)
            thread.start()
        return thread


def warm_up_at_start() -> threading.Thread | None:
    """The server's start-up call: warm_up_in_background() unless EMBEDLAB_PROJECTION_WARMUP=0. The test
    suite turns it off: every app test and browser-test server would otherwise compile numba's kernels
    (about 40 CPU seconds on a fresh home) beside the training the test is watching."""
    if os.environ.get(WARMUP_ENV, "1").strip() == "0":
        return None
    return warm_up_in_background()


# ------------------------------------------------------------------ progressive: PCA now, UMAP later
_JOBS: dict[str, tuple[Future, float]] = {}  # key -> (future, start time); process-wide
_JOBS_LOCK = threading.Lock()
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedlab-projection")  # one at a time: 2 cores
MAX_JOBS = 16  # finished results kept in memory (the disk cache keeps them all)


def progressive(key: str, fast: Callable[[], Any], slow: Callable[[], Any]) -> dict[str, Any]:
    """The slow result when it is ready, else the fast one while the slow one runs in the background.

    The first call with `key` submits `slow()` to a process-wide worker and returns `fast()`; later
    calls (page reruns, other sessions) return `fast()` until `slow()` has finished, then its result.
    Returns {"result", "ready": bool, "seconds": since the slow job started, "error": message or None}.
    A failed slow job reports its error with the fast result, and is retried on the next key use.
    """
    with _JOBS_LOCK:
        job = _JOBS.get(key)
        if job is not None and job[0].done() and job[0].exception() is not None:
            del _JOBS[key]  # a failure is reported once; the next call tries again
            exc = job[0].exception()
            return {"result": fast(), "ready": False, "seconds": time.time() - job[1], "error": str(exc) or type(exc).__name__}
        if job is None:
            job = _JOBS[key] = (_POOL.submit(slow), time.time())
            _trim_jobs()
    future, started = job
    if future.done():
        return {"result": future.result(), "ready": True, "seconds": time.time() - started, "error": None}
    return {"result": fast(), "ready": False, "seconds": time.time() - started, "error": None}


def _trim_jobs() -> None:
    done = [k for k, (f, _) in _JOBS.items() if f.done()]
    for k in done[:max(0, len(_JOBS) - MAX_JOBS)]:
        del _JOBS[k]


def pending(key: str) -> bool:
    """Whether the slow job of `key` is still running."""
    job = _JOBS.get(key)
    return job is not None and not job[0].done()


# ------------------------------------------------------------------------------------ caching
def cache_dir(root: Path | None = None) -> Path:
    from .paths import home, subdir

    return subdir(Path(root) if root else home(), "cache", "projections")


def cache_key(x: np.ndarray, method: str, dims: int, seed: int, params: dict[str, Any]) -> str:
    """sha1 of the input (shape, dtype, bytes) plus method, dims, seed, params and the cache version."""
    x = np.ascontiguousarray(x)
    h = hashlib.sha1()
    h.update(f"{x.shape}|{x.dtype}|".encode())
    h.update(x.data)
    h.update(json.dumps({"m": method, "d": dims, "s": seed, "p": params, "v": _CACHE_VERSION}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def project(x: np.ndarray, method: str = "pca", dims: int = 2, *, seed: int = 0, normalize: bool = True,
            cache: bool = True, root: Path | None = None, **params) -> np.ndarray:
    """Project [N, D] rows to [N, dims] float32 with `method` (pca | umap | tsne).

    Args:
        x: the vectors (any float dtype).
        method: 'pca', 'umap' or 'tsne'.
        dims: 2 or 3.
        seed: makes UMAP / t-SNE / randomized PCA deterministic.
        normalize: L2-normalise rows first (cosine geometry).
        cache: read / write EMBEDLAB_HOME/cache/projections (keyed by the input's hash and every setting).
        root: EMBEDLAB_HOME override for the cache.
        **params: method knobs (umap: n_neighbors, min_dist; tsne: perplexity, n_iter).
    """
    return project_with_extra(x, None, method, dims, seed=seed, normalize=normalize, cache=cache, root=root, **params)[0]


def project_with_extra(x: np.ndarray, extra: np.ndarray | None, method: str = "pca", dims: int = 2, *, seed: int = 0,
                       normalize: bool = True, cache: bool = True, root: Path | None = None,
                       **params) -> tuple[np.ndarray, np.ndarray | None]:
    """`project` fitted on `x`, plus the `extra` rows (e.g. class anchors) placed out of sample:
    PCA / UMAP transform them; t-SNE puts each at the similarity-weighted mean of its 10 nearest rows."""
    method = method.lower().replace("-", "")
    if method not in _COMPUTE:
        from .errors import UnknownName

        raise UnknownName(f"unknown projection {method!r}; choose from: {', '.join(METHODS)}")
    if dims not in (2, 3):
        from .errors import InvalidConfig

        raise InvalidConfig(f"projections are 2-D or 3-D, not {dims}-D")
    x = np.asarray(x, dtype=np.float32)
    extra = None if extra is None or len(extra) == 0 else np.asarray(extra, dtype=np.float32)
    if normalize:
        x = l2_normalize(x)
        extra = None if extra is None else l2_normalize(extra)
    if len(x) == 0:
        return np.zeros((0, dims), np.float32), None if extra is None else np.zeros((len(extra), dims), np.float32)
    path = None
    if cache:
        both = x if extra is None else np.vstack([x, extra])
        key = cache_key(both, method, dims, seed, {**params, "n_fit": len(x)})
        path = cache_dir(root) / f"{method}-{dims}d-{key}.npy"
        if path.exists():
            try:
                y = np.load(path)
                if y.shape == (len(both), dims):
                    return y[:len(x)], None if extra is None else y[len(x):]
            except (OSError, ValueError):
                pass
    y, y_extra = _COMPUTE[method](x, dims, seed, extra, **params)
    y = np.asarray(y, dtype=np.float32)
    y_extra = None if y_extra is None else np.asarray(y_extra, dtype=np.float32)
    if path is not None:
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
        np.save(tmp, y if y_extra is None else np.vstack([y, y_extra]))
        os.replace(tmp, path)
    return y, y_extra


# ---------------------------------------------------------------------------------- alignment
def procrustes(source: np.ndarray, target: np.ndarray, *, scale: bool = True) -> dict[str, np.ndarray | float]:
    """Orthogonal Procrustes fit of `source` onto `target` (same rows): the rotation / reflection R,
    uniform scale s and translation minimising ||s (source - mu_s) R + mu_t - target||."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sv, vt = np.linalg.svd(a.T @ b)
    r = u @ vt
    norm = float((a ** 2).sum())
    s = float(sv.sum() / norm) if scale and norm > 0 else 1.0
    return {"R": r, "s": s, "mu_s": mu_s, "mu_t": mu_t}


def apply_transform(y: np.ndarray, t: dict) -> np.ndarray:
    return ((y - t["mu_s"]) @ t["R"] * t["s"] + t["mu_t"]).astype(np.float32)


def align_to(ref_ids: np.ndarray, ref_y: np.ndarray, ids: np.ndarray, y: np.ndarray, *, extra: np.ndarray | None = None,
             scale: bool = True) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Align pane `y` (rows = `ids`, plus optional `extra` rows such as anchors) onto the reference pane
    using the ids both share. Returns (aligned y, aligned extra, number of shared ids); with fewer
    shared ids than dims + 1 the pane is returned unchanged."""
    _, ia, ib = np.intersect1d(np.asarray(ref_ids), np.asarray(ids), assume_unique=False, return_indices=True)
    if len(ia) < y.shape[1] + 1:
        return y, extra, int(len(ia))
    t = procrustes(y[ib], ref_y[ia], scale=scale)
    return apply_transform(y, t), None if extra is None else apply_transform(extra, t), int(len(ia))


def align_panes(panes: Sequence[tuple[np.ndarray, np.ndarray]], reference: int = 0,
                extras: Sequence[np.ndarray | None] | None = None) -> tuple[list[np.ndarray], list[np.ndarray | None], list[int]]:
    """Align every pane (ids, Y) onto pane `reference`. Returns (Ys, extras, shared counts)."""
    extras = list(extras) if extras is not None else [None] * len(panes)
    ref_ids, ref_y = panes[reference]
    ys, outs, shared = [], [], []
    for i, (ids, y) in enumerate(panes):
        if i == reference:
            ya, ea, n = y, extras[i], len(ids)
        else:
            ya, ea, n = align_to(ref_ids, ref_y, ids, y, extra=extras[i])
        ys.append(ya)
        outs.append(ea)
        shared.append(n)
    return ys, outs, shared


def shared_pca(xs: Sequence[np.ndarray], dims: int = 2, *, seed: int = 0, normalize: bool = True) -> list[np.ndarray]:
    """One PCA basis fitted on all sets stacked (they must share their dimension), applied to each."""
    from sklearn.decomposition import PCA

    xs = [l2_normalize(x) if normalize else np.asarray(x, np.float32) for x in xs]
    if len({x.shape[1] for x in xs}) != 1:
        from .errors import InvalidConfig

        raise InvalidConfig("a shared PCA needs sets of the same dimension")
    stacked = np.vstack(xs)
    pca = PCA(n_components=min(dims, *stacked.shape), random_state=seed).fit(stacked)
    return [_pad(pca.transform(x).astype(np.float32), dims) for x in xs]


def shared_pca_extra(sets: Sequence[dict], extra: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """Place `extra` rows with the shared PCA basis of `sets`."""
    from sklearn.decomposition import PCA

    stacked = np.vstack([l2_normalize(s["vectors"]) for s in sets])
    pca = PCA(n_components=min(dims, *stacked.shape), random_state=seed).fit(stacked)
    return _pad(pca.transform(l2_normalize(extra)).astype(np.float32), dims)


def project_panes(sets: Sequence[dict], method: str = "pca", dims: int = 2, *, seed: int = 0, align: str = "procrustes",
                  reference: int = 0, cache: bool = True, root: Path | None = None, **params) -> dict[str, Any]:
    """Project several sets and give them one orientation.

    Args:
        sets: dicts with `ids` [N], `vectors` [N, D] and optional `extra` [M, D] rows placed out of
            sample in the same projection (FLYP anchors).
        align: 'procrustes' (default), 'shared-pca' (PCA only, equal dimensions; falls back to
            procrustes otherwise) or 'none'.
    Returns:
        {"points": [Y_i], "extra": [E_i or None], "shared": [n shared ids], "align": what was done}
    """
    how = align
    if align == "shared-pca":
        if method == "pca" and len({s["vectors"].shape[1] for s in sets}) == 1:
            pts = shared_pca([s["vectors"] for s in sets], dims, seed=seed)
            ext = [None if s.get("extra") is None else shared_pca_extra(sets, s["extra"], dims, seed) for s in sets]
            return {"points": pts, "extra": ext, "shared": [len(s["ids"]) for s in sets], "align": "shared-pca"}
        how = "procrustes"
    pts, ext = [], []
    for s in sets:
        y, e = project_with_extra(s["vectors"], s.get("extra"), method, dims, seed=seed, cache=cache, root=root, **params)
        pts.append(y)
        ext.append(e)
    if how == "none" or len(sets) < 2:
        return {"points": pts, "extra": ext, "shared": [len(s["ids"]) for s in sets], "align": "none"}
    pts, ext, shared = align_panes([(s["ids"], y) for s, y in zip(sets, pts)], reference, ext)
    return {"points": pts, "extra": ext, "shared": shared, "align": "procrustes"}


def trajectory(frames: Sequence[tuple[int, np.ndarray, np.ndarray]], method: str = "pca", dims: int = 2, *,
               seed: int = 0, cache: bool = True, root: Path | None = None, rescale: bool = False,
               **params) -> list[np.ndarray]:
    """Project each snapshot (step, ids, vectors) and chain-align frame t onto aligned frame t-1
    (align_frames: rigid orthogonal Procrustes on the shared ids; `rescale`: each frame to unit spread)."""
    ys = [(ids, project(x, method, dims, seed=seed, cache=cache, root=root, **params)) for _, ids, x in frames]
    return align_frames(ys, rescale=rescale)


def align_frames(frames: Sequence[tuple[np.ndarray, np.ndarray]], *, rescale: bool = False) -> list[np.ndarray]:
    """Chain-align projected frames (ids, Y [N, 2|3]): frame t is rotated / reflected and shifted onto the
    aligned frame t-1 by orthogonal Procrustes on the ids both share, so a slider or an animation shows the
    embedding move, not the projection's arbitrary orientation flip from frame to frame.

    Why rigid (no scale) and chained on the 2-D / 3-D projections rather than one shared PCA basis: it works
    for UMAP and t-SNE too, and each frame keeps its own best view. The scale is left alone so that on fixed
    axes a class that tightens is seen to tighten; `rescale=True` instead centres each frame and scales it to
    unit RMS radius (the shape at every step, whatever its size; UMAP / t-SNE sizes mean nothing anyway).
    """
    out: list[np.ndarray] = []
    prev_ids = prev_y = None
    for ids, y in frames:
        y = np.asarray(y, dtype=np.float32)
        if prev_y is not None:
            y, _, _ = align_to(prev_ids, prev_y, ids, y, scale=False)
        if rescale:
            centred = y - y.mean(0)
            rms = float(np.sqrt((centred ** 2).sum(1).mean()))
            y = (centred / rms if rms > 0 else centred).astype(np.float32)
        out.append(y)
        prev_ids, prev_y = ids, y
    return out
