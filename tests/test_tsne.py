"""core/projections.py t-SNE: the faster defaults (exact neighbours, a 20-interval early FFT grid, 250 + 350
iterations) stay a faithful t-SNE: as trustworthy as sklearn's t-SNE and as openTSNE's own settings on real
digit images, and the shorter schedule has converged (its KL within 1 % of openTSNE's 500 iterations)."""
import time

import numpy as np
import pytest

from core import projections
from core.metrics import l2_normalize


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = np.random.default_rng(0).choice(len(d.data), 700, replace=False)
    return l2_normalize(d.data[rows].astype(np.float32)), d.target[rows]


def _trust(x, y):
    from sklearn.manifold import trustworthiness

    return trustworthiness(x, y, n_neighbors=10)


def _knn_kept(x, y, k=10):
    from sklearn.neighbors import NearestNeighbors

    hi = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]
    lo = NearestNeighbors(n_neighbors=k + 1).fit(y).kneighbors(y, return_distance=False)[:, 1:]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(hi, lo)]))


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_tsne_defaults_are_as_faithful_as_sklearn_and_the_old_settings(digits):
    from sklearn.manifold import TSNE

    x, labels = digits
    now, _ = projections._tsne(x, 2, 0)
    old, _ = projections._tsne(x, 2, 0, knn="annoy", min_num_intervals=50, n_iter=500)  # openTSNE's own defaults
    ref = TSNE(n_components=2, perplexity=30, random_state=0, init="pca").fit_transform(x)
    t_now, t_old, t_ref = _trust(x, now), _trust(x, old), _trust(x, ref)
    assert t_now > 0.95 and t_now >= t_ref - 0.01 and abs(t_now - t_old) < 0.01, (t_now, t_old, t_ref)
    assert _knn_kept(x, now) >= _knn_kept(x, ref) - 0.05
    # and the picture is the digits one: a class's points stay together (kNN label agreement in 2-D)
    from sklearn.neighbors import KNeighborsClassifier

    agree = KNeighborsClassifier(10).fit(now, labels).score(now, labels)
    assert agree > 0.9


def test_tsne_neighbour_search_choice():
    x = l2_normalize(np.random.default_rng(1).normal(size=(60, 16)).astype(np.float32))
    exact, _ = projections._tsne(x, 2, 0, n_iter=30, early_exaggeration_iter=30, knn="exact")
    auto, _ = projections._tsne(x, 2, 0, n_iter=30, early_exaggeration_iter=30)
    np.testing.assert_allclose(auto, exact)  # at this size 'auto' is the exact search
    assert projections.TSNE_EXACT_KNN_MAX >= 5_000  # the bench's 5k set is searched exactly


@pytest.mark.slow
def test_tsne_defaults_cost_less_cpu_than_the_old_settings():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 384)).astype(np.float32)
    x = l2_normalize((centres[rng.integers(0, 10, 1500)] + 0.5 * rng.normal(size=(1500, 384))).astype(np.float32))

    def cpu(**kw):
        c0 = time.process_time()
        projections._tsne(x, 2, 0, **kw)
        return time.process_time() - c0

    old, now = cpu(knn="annoy", min_num_intervals=50, n_iter=500), cpu()
    assert now < 0.95 * old, (now, old)


@pytest.mark.slow
def test_the_shorter_schedule_has_converged(digits):
    """EmbedLab's 350 normal iterations against openTSNE's 500 on the same affinities and start: the KL
    divergence t-SNE minimises is within 1 % (the reason the README gives for the shorter schedule)."""
    from openTSNE import TSNE

    x, _ = digits

    def kl(n_iter):
        return TSNE(perplexity=30, n_iter=n_iter, early_exaggeration_iter=projections.TSNE_EXAGGERATION_ITER,
                    random_state=0, initialization="pca", neighbors="exact", n_jobs=1,
                    min_num_intervals=projections.TSNE_MIN_INTERVALS).fit(x).kl_divergence

    short, full = kl(projections.TSNE_ITER), kl(500)
    assert projections.TSNE_ITER < 500 and full <= short <= 1.01 * full, (short, full)
    assert f"+ {projections.TSNE_ITER} iterations" in projections.PROJECTION_HELP  # said where it is chosen
