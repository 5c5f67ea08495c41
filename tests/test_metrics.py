"""core.metrics on constructed cases with known answers."""
import numpy as np
import pytest

from core import metrics as M
from core.embeddings import EmbeddingSet


def _two_clusters(n=40, d=16, noise=0.01, seed=0):
    """Two tight clusters around orthogonal directions (cosine distance ~1 between them)."""
    rng = np.random.default_rng(seed)
    a, b = np.eye(d)[0], np.eye(d)[1]
    x = np.vstack([a + noise * rng.normal(size=(n, d)), b + noise * rng.normal(size=(n, d))])
    return x.astype(np.float32), np.repeat([0, 1], n)


def test_accuracy_confusion_and_per_class_on_a_hand_example():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 1, 0, 1, 1, 0])
    assert M.accuracy(labels, preds) == pytest.approx(4 / 6)
    cm = M.confusion_matrix(labels, preds, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    per = M.per_class_accuracy(labels, preds, 4)
    assert per[:3].tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert np.isnan(per[3])  # a class with no samples has no accuracy


def test_knn_and_silhouette_on_far_apart_clusters():
    x, y = _two_clusters()
    assert M.knn_accuracy(x, y, k=20) == 1.0
    assert M.silhouette(x, y) > 0.95


def test_knn_is_leave_one_out():
    # two points per class, each other's only same-class neighbour: with k=1 self must not count
    x = np.array([[1, 0], [0.99, 0.1], [-1, 0], [-0.99, -0.1]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    assert M.knn_accuracy(x, y, k=1) == 1.0
    # shuffled labels: every point's nearest *other* point has the other label
    assert M.knn_accuracy(x, np.array([0, 1, 0, 1]), k=1) == 0.0


def test_linear_probe_on_separable_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    x[:, 0] += np.where(y == 1, 2.0, -2.0)  # a clear margin
    assert M.linear_probe_accuracy(x, y, seed=0) >= 0.98
    assert M.linear_probe_accuracy(x, y, seed=0) == M.linear_probe_accuracy(x, y, seed=0)  # deterministic


def test_uniformity_orders_spread_above_collapsed():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(500, 32))  # Gaussian directions: uniform on the sphere
    collapsed = np.tile(rng.normal(size=(1, 32)), (500, 1))
    u_spread, u_collapsed = M.uniformity(spread), M.uniformity(collapsed)
    assert u_collapsed == pytest.approx(0.0, abs=1e-9)
    # on S^31 with t=2 ||x-y||^2 ~ 2, so log E exp(-2 * 2) ~ -4
    assert u_spread < -3.5
    assert u_spread < u_collapsed


def test_alignment_is_zero_for_identical_positive_pairs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    labels = np.repeat([0, 1, 2], 10)
    x = centres[labels]  # every class collapsed to one point
    stats = M.pair_stats(x, labels)
    assert stats["alignment"] == pytest.approx(0.0, abs=1e-9)
    assert stats["pos_mean_cos"] == pytest.approx(1.0)
    assert stats["n_pos_pairs"] == 3 * 45 and stats["n_neg_pairs"] == 30 * 29 // 2 - 3 * 45
    assert sum(stats["pos_hist"]) == pytest.approx(1.0) and sum(stats["neg_hist"]) == pytest.approx(1.0)


def test_pos_and_neg_cosines_on_orthogonal_clusters():
    x, y = _two_clusters(noise=0.0)
    stats = M.pair_stats(x, y)
    assert stats["pos_mean_cos"] == pytest.approx(1.0)
    assert stats["neg_mean_cos"] == pytest.approx(0.0, abs=1e-6)
    assert stats["alignment"] == pytest.approx(0.0, abs=1e-6)


def test_pair_stats_subsample_deterministically():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3000, 8)), rng.integers(0, 5, 3000)
    a = M.pair_stats(x, y, max_n=500, seed=3)
    b = M.pair_stats(x, y, max_n=500, seed=3)
    assert a == b
    assert a["n_pos_pairs"] + a["n_neg_pairs"] == 500 * 499 // 2


def test_zero_shot_accuracy_and_neighbours():
    anchors = np.eye(3, dtype=np.float32)
    x = np.array([[0.9, 0.1, 0], [0, 1, 0.2], [0.1, 0, 2], [1, 0, 0]], dtype=np.float32)
    assert M.zero_shot_accuracy(x, np.array([0, 1, 2, 1]), anchors) == 0.75
    idx, sims = M.nearest_neighbours(x, 3, k=2)
    assert idx[0] == 0 and 3 not in idx and sims[0] >= sims[1]


def test_best_of_respects_direction():
    assert M.best_of([0.5, 0.9, None], "knn_acc") == 1
    assert M.best_of([-1.0, -3.0], "uniformity") == 1  # lower is better
    assert M.best_of([0.2, 0.1], "alignment_before") == 1
    assert M.best_of([None, None], "knn_acc") is None


def test_analyze_an_embedding_set_and_wise_ft_passthrough():
    x, y = _two_clusters(n=30)
    es = EmbeddingSet("val", np.arange(len(y)), y, {"encoder": x.astype(np.float16)}, classes=["a", "b"], preds=y.copy())
    r = M.analyze(es, details=True)
    for key in M.SCALAR_KEYS:
        assert key in r
    assert r["val_acc"] == 1.0 and r["knn_acc"] == 1.0 and r["linear_probe_acc"] == 1.0
    assert r["silhouette"] > 0.9 and r["pos_mean_cos"] > 0.99 and abs(r["neg_mean_cos"]) < 0.1
    assert r["confusion"] == [[30, 0], [0, 30]] and r["per_class_acc"] == [1.0, 1.0]
    curve = M.wise_ft_curve({"wise_ft": [{"alpha": 1.0, "val_acc": 0.9}, {"alpha": 0.0, "val_acc": 0.5}]})
    assert [p["alpha"] for p in curve] == [0.0, 1.0]
