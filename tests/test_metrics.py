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


# ------------------------------------------------------------------------------- uncertainty
def test_wilson_interval_matches_a_hand_computation():
    # 83 of 100, z = 1.96: p = .83, z²/n = .038416, centre = (.83 + .019208) / 1.038416 = .817791,
    # half = 1.96 sqrt(.83 · .17 / 100 + 3.8416 / 40000) / 1.038416 = .073274  ->  [.7445, .8911]
    lo, hi = M.wilson_interval(83, 100)
    assert lo == pytest.approx(0.7445, abs=1e-4) and hi == pytest.approx(0.8911, abs=1e-4)
    # at the edges it stays inside [0, 1] and is not degenerate (the Wald interval would be [0, 0])
    lo, hi = M.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert M.wilson_interval(10, 10)[1] == 1.0 and M.wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert M.wilson_interval(3, 0) is None
    # two images of 59 (83.1 % vs 86.4 %) are far inside each other's interval
    a, b = M.wilson_interval(49, 59), M.wilson_interval(51, 59)
    assert a[0] < 51 / 59 < a[1] and b[0] < 49 / 59 < b[1]


def test_mcnemar_exact_on_hand_counts():
    # 9 samples only the first side gets right, 1 only the second: p = 2 P(Bin(10, ½) <= 1) = 2 · 11/1024
    a = np.array([1] * 9 + [0] + [1] * 5 + [0] * 5, bool)
    b = np.array([0] * 9 + [1] + [1] * 5 + [0] * 5, bool)  # the last 10 agree: they carry no information
    assert M.mcnemar_exact(a, b) == pytest.approx(22 / 1024)
    assert M.mcnemar_exact(a, a) == 1.0
    with pytest.raises(ValueError):
        M.mcnemar_exact(a, b[:-1])


def test_delta_verdict_colours_only_what_the_intervals_support():
    # ants/bees val: 49 vs 51 of 59 is noise; 20 vs 55 of 59 is not
    ci = lambda k, n: M.wilson_interval(k, n)  # noqa: E731
    assert M.delta_verdict(51 / 59, ci(51, 59), 49 / 59, ci(49, 59)) == "unclear"
    assert M.delta_verdict(55 / 59, ci(55, 59), 20 / 59, ci(20, 59)) == "better"
    assert M.delta_verdict(20 / 59, ci(20, 59), 55 / 59, ci(55, 59)) == "worse"
    # a paired test decides when it is given, even where the intervals overlap...
    assert M.delta_verdict(0.90, ci(90, 100), 0.82, ci(82, 100), paired_p=0.008) == "better"
    assert M.delta_verdict(0.90, ci(90, 100), 0.82, ci(82, 100)) == "unclear"  # (they do overlap)
    # ...and a large unpaired gap is still "unclear" when the paired test says so
    assert M.delta_verdict(0.9, ci(90, 100), 0.5, ci(50, 100), paired_p=0.2) == "unclear"
    assert M.delta_verdict(None, None, 0.5, ci(50, 100)) is None


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    x = np.array([0.80, 0.82, 0.79, 0.85, 0.81])
    lo, hi = M.bootstrap_interval(x)
    assert lo <= x.mean() <= hi and lo >= x.min() and hi <= x.max()
    assert M.bootstrap_interval(x) == (lo, hi)
    assert M.bootstrap_interval(x[:1]) is None


def test_probe_cross_validates_small_sets_testing_every_sample_once():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(59, 8)).astype(np.float32)
    y = np.r_[np.zeros(29, int), np.ones(30, int)]
    x[:, 0] += np.where(y == 1, 1.0, -1.0)
    res = M.linear_probe(x, y, seed=0)
    assert res["folds"] == 5
    assert res["tested"].tolist() == list(range(59))  # all 59 tested once (a 70/30 split tested 18)
    assert M.linear_probe_accuracy(x, y, seed=0) == pytest.approx(res["correct"].mean())
    big = np.tile(x, (20, 1)) + 0.01 * rng.normal(size=(59 * 20, 8)).astype(np.float32)
    res = M.linear_probe(big, np.tile(y, 20), seed=0)
    assert res["folds"] == 1 and len(res["tested"]) == round(0.3 * 59 * 20)  # large sets keep one split
    # a class with a single sample cannot be stratified: plain k-fold, still every sample once
    res = M.linear_probe(x[:11], np.r_[np.zeros(10, int), 1], seed=0)
    assert sorted(res["tested"].tolist()) == list(range(11))


def test_set_metrics_carries_an_interval_for_every_accuracy():
    x, y = _two_clusters(n=30)
    m = M.set_metrics(x, y, preds=np.r_[y[:-6], 1 - y[-6:]])
    assert m["acc"] == pytest.approx(54 / 60)
    assert m["acc_ci95"] == pytest.approx(list(M.wilson_interval(54, 60)))
    for key in ("knn_acc", "linear_probe_acc"):
        lo, hi = m[f"{key}_ci95"]
        assert lo <= m[key] <= hi
    assert M.set_metrics(x, y)["acc_ci95"] is None


def test_seed_groups_give_mean_and_spread_per_config_except_seed():
    base = {"objective": "ce", "steps": 60, "lr": 1e-3}
    runs = [("a", {**base, "seed": 0}, {"val_acc": 0.80}), ("b", {**base, "seed": 1}, {"val_acc": 0.84}),
            ("c", {**base, "seed": 2}, {"val_acc": 0.82}), ("d", {**base, "objective": "flyp", "seed": 0}, {"val_acc": 0.7}),
            ("e", {**base, "steps": 1500, "seed": 1}, {"val_acc": 0.9})]  # other steps: not the same comparison
    groups = M.seed_groups(runs)
    assert [g["runs"] for g in groups] == [["a", "b", "c"], ["d"], ["e"]]
    ce = groups[0]
    assert ce["seeds"] == [0, 1, 2] and ce["val_acc_n"] == 3
    assert ce["val_acc_mean"] == pytest.approx(0.82) and ce["val_acc_std"] == pytest.approx(0.02)  # sample std
    assert groups[1]["val_acc_std"] is None and "test_acc_mean" not in ce
    assert M.mean_spread_text(ce, "val_acc") == "82.0 ± 2.0 % (3 seeds)"
    assert M.mean_spread_text(ce, "test_acc") == "–"
