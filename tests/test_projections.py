"""core.projections: shapes, determinism, the disk cache, alignment, trajectories."""
import numpy as np
import pytest

from core import projections as P


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 24)) * 3
    labels = np.repeat(np.arange(4), 25)
    return (centres[labels] + rng.normal(size=(100, 24))).astype(np.float32), labels


@pytest.mark.parametrize("method", ["pca", "tsne"])
@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_and_determinism(blobs, home, method, dims):
    x, _ = blobs
    a = P.project(x, method, dims, seed=1, cache=False, n_iter=100)
    b = P.project(x, method, dims, seed=1, cache=False, n_iter=100)
    assert a.shape == (100, dims) and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_umap_shape_and_determinism(blobs, home):
    x, _ = blobs
    a = P.project(x, "umap", 2, seed=0, cache=False, n_neighbors=10)
    b = P.project(x, "umap", 2, seed=0, cache=False, n_neighbors=10)
    assert a.shape == (100, 2)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_cache_hit_does_not_recompute(blobs, home, monkeypatch):
    x, _ = blobs
    calls = []
    real = P._COMPUTE["pca"]
    monkeypatch.setitem(P._COMPUTE, "pca", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = P.project(x, "pca", 2, seed=0)
    second = P.project(x, "pca", 2, seed=0)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    assert len(list((home / "cache" / "projections").glob("pca-2d-*.npy"))) == 1
    P.project(x, "pca", 3, seed=0)  # other settings: another entry
    P.project(x[:50], "pca", 2, seed=0)  # other input: another entry
    assert len(calls) == 3


def test_procrustes_recovers_a_known_rotation():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(60, 2))
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    target = 2.5 * y @ rot + np.array([3.0, -1.0])
    t = P.procrustes(y, target)
    np.testing.assert_allclose(t["R"], rot, atol=1e-8)
    assert t["s"] == pytest.approx(2.5)
    np.testing.assert_allclose(P.apply_transform(y, t), target, atol=1e-5)


def test_procrustes_handles_reflection_and_3d():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(50, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q[:, 0] *= -1 if np.linalg.det(q) > 0 else 1  # make it a reflection
    target = y @ q
    np.testing.assert_allclose(P.apply_transform(y, P.procrustes(y, target)), target, atol=1e-5)


def test_align_to_uses_shared_ids_only():
    rng = np.random.default_rng(2)
    ref_ids = np.arange(0, 40)
    ref = rng.normal(size=(40, 2))
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    ids = np.arange(20, 70)  # 20 shared ids, 30 new ones
    pane = rng.normal(size=(50, 2))
    pane[:20] = ref[20:] @ rot.T  # the shared samples: ref rotated by -90 degrees
    aligned, _, shared = P.align_to(ref_ids, ref, ids, pane)
    assert shared == 20
    np.testing.assert_allclose(aligned[:20], ref[20:], atol=1e-5)


def test_project_panes_aligns_before_onto_after(blobs, home):
    x, _ = blobs
    ids = np.arange(len(x))
    q = np.linalg.qr(np.random.default_rng(3).normal(size=(24, 24)))[0]
    out = P.project_panes([{"ids": ids, "vectors": x}, {"ids": ids, "vectors": x @ q}], "pca", 2, reference=0)
    # the same geometry, rotated in 24-D: after alignment the panes coincide
    np.testing.assert_allclose(out["points"][1], out["points"][0], atol=1e-3)
    assert out["align"] == "procrustes" and out["shared"] == [100, 100]
    shared = P.project_panes([{"ids": ids, "vectors": x}, {"ids": ids, "vectors": x}], "pca", 2, align="shared-pca")
    assert shared["align"] == "shared-pca"
    np.testing.assert_allclose(shared["points"][0], shared["points"][1])


def test_anchors_are_placed_out_of_sample(blobs, home):
    x, labels = blobs
    anchors = np.stack([x[labels == c].mean(0) for c in range(4)])
    y, ya = P.project_with_extra(x, anchors, "pca", 2, cache=False)
    assert y.shape == (100, 2) and ya.shape == (4, 2)
    # each class anchor lands nearer its own class than any other class centre
    centres = np.stack([y[labels == c].mean(0) for c in range(4)])
    assert (np.linalg.norm(ya[:, None] - centres[None], axis=-1).argmin(1) == np.arange(4)).all()


def test_trajectory_frames_are_chained(blobs, home):
    x, _ = blobs
    ids = np.arange(len(x))
    q = np.linalg.qr(np.random.default_rng(4).normal(size=(24, 24)))[0]
    frames = P.trajectory([(0, ids, x), (5, ids, x @ q), (10, ids, -x)], "pca", 2)
    assert len(frames) == 3
    for f in frames[1:]:
        np.testing.assert_allclose(f, frames[0], atol=1e-3)


def test_bad_method_and_dims(blobs):
    from core.errors import EmbedLabError

    x, _ = blobs
    with pytest.raises(EmbedLabError):
        P.project(x, "mds", 2, cache=False)
    with pytest.raises(EmbedLabError):
        P.project(x, "pca", 4, cache=False)


# ------------------------------------------------------------------ fast and honest projections
@pytest.mark.slow
def test_umap_sees_50_principal_components_of_high_dim_input(home, monkeypatch):
    import umap

    rng = np.random.default_rng(0)
    x = P.l2_normalize(rng.normal(size=(120, 384)).astype(np.float32))
    seen = []

    class Recording(umap.UMAP):
        def fit_transform(self, X, *a, **kw):
            seen.append(X.shape)
            return super().fit_transform(X, *a, **kw)

    monkeypatch.setattr(umap, "UMAP", Recording)
    P._umap(x, 2, 0, n_epochs=20)
    assert seen == [(120, 50)]  # 384 -> 50 PCs first, then UMAP
    P._umap(x[:, :32], 2, 0, n_epochs=20)
    assert seen[-1] == (120, 32)  # low-dimensional input goes in as it is
    y, e = P.pre_pca(x, 0, x[:3])
    assert y.shape == (120, 50) and e.shape == (3, 50)
    # a projection onto 50 orthonormal directions: it can only keep part of the variance, never add any
    var = np.var(x - x.mean(0), axis=0).sum()
    assert np.var(y, axis=0).sum() <= var + 1e-4


def test_numba_cache_goes_to_a_writable_folder_and_covers_umap(home, monkeypatch):
    import numba.core.config as config

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    folder = P.prepare_numba()
    assert folder == str(home / "cache" / "numba") == __import__("os").environ["NUMBA_CACHE_DIR"]
    assert config.CACHE_DIR == folder and (home / "cache" / "numba").is_dir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(home / "mine"))
    assert P.prepare_numba() == str(home / "mine")  # the user's choice wins
    umap = P.import_umap()
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    # the layout optimiser does not ask numba to cache it: it is what recompiled at every server start
    kernels = [v for v in vars(umap.layouts).values() if isinstance(v, Dispatcher)]
    assert kernels and not any(isinstance(k._cache, NullCache) for k in kernels)
    monkeypatch.undo()
    P.prepare_numba()  # numba back on the suite's cache for the tests after this one


@pytest.mark.slow
def test_progressive_returns_pca_first_then_umap(blobs, home):
    import threading

    x, _ = blobs
    gate = threading.Event()

    def slow():
        gate.wait(60)
        return "umap", P.project(x, "umap", 2, seed=0, cache=False, n_neighbors=10)

    fast = lambda: ("pca", P.project(x, "pca", 2, cache=False))  # noqa: E731
    first = P.progressive("test/umap", fast, slow)
    assert first["result"][0] == "pca" and not first["ready"] and first["error"] is None
    assert P.pending("test/umap")
    assert P.progressive("test/umap", fast, slow)["result"][0] == "pca"  # still computing: same job, PCA again
    gate.set()
    P._JOBS["test/umap"][0].result(timeout=120)
    done = P.progressive("test/umap", fast, slow)
    assert done["ready"] and done["result"][0] == "umap" and done["result"][1].shape == (100, 2)
    assert not P.pending("test/umap")

    def broken():
        raise ValueError("no memory")

    P.progressive("test/broken", fast, broken)
    P._JOBS["test/broken"][0].exception(timeout=60)
    failed = P.progressive("test/broken", fast, broken)
    assert failed["error"] == "no memory" and failed["result"][0] == "pca"  # said once, PCA still shown
    assert "test/broken" not in P._JOBS  # the next use tries again


# slow: UMAP compiles numba's kernels once per EMBEDLAB_HOME (~30 s of CPU), paid by whichever UMAP test runs first
@pytest.mark.slow
def test_warm_up_runs_once_per_process_in_a_daemon_thread(home):
    t1 = P.warm_up_in_background()
    t2 = P.warm_up_in_background()
    assert t1 is t2 and t1.daemon
    t1.join(300)
    assert not t1.is_alive()


def test_the_start_up_warm_up_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(P.WARMUP_ENV, "0")
    assert P.warm_up_at_start() is None  # the suite's setting: no background compile beside the tests' runs
    monkeypatch.setenv(P.WARMUP_ENV, "1")
    assert P.warm_up_at_start() is P.warm_up_in_background()  # on: the one thread of this process


# ------------------------------------------------------------------ trajectory frames (issue 17.5)
def _rot(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_a_rotated_reflected_shifted_copy_aligns_back_to_the_original():
    y = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
    moved = (y @ _rot(1.1)) * np.array([1, -1]) + np.array([5.0, -3.0])  # rotated, reflected, shifted
    t = P.procrustes(moved, y, scale=False)
    np.testing.assert_allclose(P.apply_transform(moved, t), y, atol=1e-4)
    aligned = P.align_frames([(np.arange(60), y), (np.arange(60), moved)])
    np.testing.assert_allclose(aligned[1], y, atol=1e-4)


def test_frames_align_on_shared_ids_only_and_keep_their_scale_unless_rescaled():
    rng = np.random.default_rng(1)
    ids = np.arange(80)
    y0 = rng.normal(size=(80, 2)).astype(np.float32)
    y1 = (0.25 * y0 @ _rot(2.0)).astype(np.float32)  # the same shape, a quarter the size, turned
    order = rng.permutation(80)  # frame 1 stores its rows in another order
    fixed = P.align_frames([(ids, y0), (ids[order], y1[order])])
    np.testing.assert_allclose(fixed[1], (0.25 * (y0 - y0.mean(0)) + y0.mean(0))[order], atol=1e-4)  # tightened: seen
    scaled = P.align_frames([(ids, y0), (ids[order], y1[order])], rescale=True)
    radius = [float(np.sqrt(((f - f.mean(0)) ** 2).sum(1).mean())) for f in scaled]
    assert radius == pytest.approx([1.0, 1.0], abs=1e-5)
    np.testing.assert_allclose(scaled[1], scaled[0][order], atol=1e-4)  # the same shape on the same axes
