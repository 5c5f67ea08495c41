"""Embedding-quality metrics: pure numpy functions, plus `analyze()` for a whole run.

Everything here works on the float16 sets `core.embeddings` stores and never imports streamlit.

    classification  accuracy, per_class_accuracy, confusion_matrix, zero_shot_accuracy
    neighbourhoods  knn_accuracy (cosine, k=20, leave-one-out on the set), nearest_neighbours
    separability    linear_probe_accuracy (logistic regression; stratified 5-fold cross-validation on
                    sets under 1,000 points, a stratified 70/30 split above), silhouette (cosine)
    uncertainty     wilson_interval (95 % interval of a proportion), bootstrap_interval (any other
                    statistic), mcnemar_exact (paired before/after on the same samples) and
                    delta_verdict (is "better / worse than before" real or noise?)
    geometry        pair_stats: alignment and uniformity (Wang & Isola, 2020, on L2-normalised
                    vectors, positives = same-class pairs), positive / negative pair cosine
                    histograms and means (the LaCViT paper's Figure 2)

Pairwise statistics are computed exactly on sets of up to `max_n` points (2,000 by default) and on
a seeded random subset of `max_n` points beyond that, so the result is deterministic and costs at
most ~2M pairs.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from .embeddings import EmbeddingSet, embeddings_dir, load_run_embeddings

_logger = logging.getLogger(__name__)

KNN_K = 20  # neighbours for the kNN accuracy (leave-one-out)
PAIR_MAX_N = 2000  # points used for pairwise statistics (exact below, seeded subsample above)
KNN_MAX_QUERIES = 3000  # kNN queries beyond this are a seeded subset (standard error < 1 point)
PROBE_MAX_TRAIN = 5000  # linear-probe training rows beyond this are a seeded subset
HIST_BINS = np.linspace(-1.0, 1.0, 81)  # cosine-similarity histogram edges (width 0.025)
SCALAR_KEYS = ("val_acc", "knn_acc", "linear_probe_acc", "silhouette", "alignment", "uniformity",
               "pos_mean_cos", "neg_mean_cos")  # what analyze() always reports (None when undefined)
HIGHER_IS_BETTER = {  # for "best value" marks; alignment and uniformity are losses (lower is better)
    "val_acc": True, "test_acc": True, "ood_acc": True, "acc": True, "zeroshot_acc": True, "knn_acc": True, "linear_probe_acc": True,
    "silhouette": True, "alignment": False, "uniformity": False, "pos_mean_cos": True, "neg_mean_cos": False,
    "cos_gap": True,
}


# ----------------------------------------------------------------------------------- helpers
def l2_normalize(x: np.ndarray, eps: float = 1e-12, dtype=np.float32) -> np.ndarray:
    """[N, D] -> rows of unit length (zero rows stay zero), float32 unless `dtype` says otherwise."""
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


def subsample(n: int, max_n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted positions of a seeded random subset of size min(n, max_n) (all of them when n <= max_n)."""
    if max_n is None or n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_n, replace=False))


def _float(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


# ------------------------------------------------------------------------------- uncertainty
# Every accuracy here is a proportion of independent-ish trials (images), so its 95 % interval is the
# Wilson score interval: unlike the normal ("Wald") interval it stays inside [0, 1] and keeps close to
# 95 % coverage at the small n (59 val images) and extreme p (zero-shot 0.15, probes near 1.0) we see.
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of `successes` out of `n` (None when n is 0).

        centre = (p + z²/2n) / (1 + z²/n),  half = z sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)
    """
    n = int(n)
    if n <= 0:
        return None
    p = float(successes) / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * float(np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact at the ends, not 1 - 1e-16
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return lo, hi


def ci95(correct: np.ndarray | None) -> list[float] | None:
    """[lo, hi] Wilson interval of a boolean per-sample correctness vector (JSON-friendly)."""
    if correct is None or len(correct) == 0:
        return None
    lo, hi = wilson_interval(int(np.sum(correct)), len(correct))
    return [lo, hi]


def bootstrap_interval(values: np.ndarray, statistic=np.mean, *, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `statistic` over the rows of `values` (for statistics that are
    not a proportion, e.g. a mean over seeds); seeded, so the same input gives the same interval."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(n_boot)])
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired correctness on the same samples (before vs after on
    the same images): under "no change" the discordant pairs split 50/50, so p = P(Binomial(b + c, ½)
    at least as uneven as observed). 1.0 when nothing changed."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError("McNemar needs the same samples on both sides")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return 1.0
    from scipy.stats import binom

    return float(min(1.0, 2.0 * binom.cdf(min(only_a, only_b), n, 0.5)))


def delta_verdict(after: float | None, after_ci: Sequence[float] | None, before: float | None,
                  before_ci: Sequence[float] | None, *, paired_p: float | None = None, alpha: float = 0.05) -> str | None:
    """Whether a change may be called better or worse: 'better', 'worse', 'unclear' (noise-sized), or
    None when a side is missing.

    With a paired test on the same samples (McNemar's `paired_p`) that test decides: it is the more
    powerful one, since both sides share each image's difficulty. Otherwise the two 95 % intervals must
    not overlap (conservative: non-overlap implies p < 0.05 for a difference, not the other way round).
    """
    if after is None or before is None:
        return None
    if paired_p is not None:
        significant = paired_p < alpha
    elif after_ci is None or before_ci is None:
        return "unclear"
    else:
        significant = after_ci[0] > before_ci[1] or after_ci[1] < before_ci[0]
    if not significant or after == before:
        return "unclear"
    return "better" if after > before else "worse"


# ---------------------------------------------------------------------------- classification
def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    labels, preds = np.asarray(labels), np.asarray(preds)
    return float((labels == preds).mean()) if len(labels) else float("nan")


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """[C, C] int64 counts; rows are true classes, columns predicted classes."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    n = n_classes or int(max(labels.max(initial=-1), preds.max(initial=-1)) + 1)
    return np.bincount(labels * n + preds, minlength=n * n).reshape(n, n)


def per_class_accuracy(labels: np.ndarray, preds: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """[C] recall of each class; NaN for a class with no samples."""
    cm = confusion_matrix(labels, preds, n_classes)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def zero_shot_accuracy(vectors: np.ndarray, labels: np.ndarray, anchors: np.ndarray) -> float:
    """Classify each vector by its most similar anchor (cosine), e.g. CLIP class-prompt embeddings."""
    pred = (l2_normalize(vectors) @ l2_normalize(anchors).T).argmax(-1)
    return accuracy(labels, pred)


# ----------------------------------------------------------------------------- neighbourhoods
def knn_accuracy(vectors: np.ndarray, labels: np.ndarray, k: int = KNN_K, *, max_queries: int | None = KNN_MAX_QUERIES,
                 seed: int = 0, chunk: int = 1024) -> float:
    """Leave-one-out cosine kNN accuracy on one set: each point is classified by a majority vote of its
    k most similar *other* points of the same set (ties go to the class with the larger summed
    similarity). Beyond `max_queries` points a seeded subset is queried (against all points).
    """
    correct = knn_correct(vectors, labels, k, max_queries=max_queries, seed=seed, chunk=chunk)
    return float(correct.mean()) if correct is not None else float("nan")


def knn_correct(vectors: np.ndarray, labels: np.ndarray, k: int = KNN_K, *, max_queries: int | None = KNN_MAX_QUERIES,
                seed: int = 0, chunk: int = 1024) -> np.ndarray | None:
    """knn_accuracy's per-query outcome: a boolean per queried point (None below 2 points); the same
    seed queries the same positions, so two sets of the same samples pair up for McNemar."""
    z = l2_normalize(vectors)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(z)
    if n < 2:
        return None
    k = max(1, min(k, n - 1))
    n_classes = int(labels.max()) + 1
    queries = subsample(n, max_queries, seed)
    out = np.zeros(len(queries), dtype=bool)
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        sims = z[q] @ z.T  # [b, N]
        sims[np.arange(len(q)), q] = -np.inf  # leave one out
        nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # [b, k]
        nn_sims = np.take_along_axis(sims, nn, axis=1)
        votes = np.zeros((len(q), n_classes))
        rows = np.repeat(np.arange(len(q)), k)
        np.add.at(votes, (rows, labels[nn].ravel()), 1.0 + 1e-3 * (nn_sims.ravel() + 1.0) / (2.0 * k))
        out[start:start + len(q)] = votes.argmax(1) == labels[q]
    return out


def nearest_neighbours(vectors: np.ndarray, index: int, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Positions and cosine similarities of the k rows most similar to row `index` (itself excluded)."""
    z = l2_normalize(vectors)
    sims = z @ z[index]
    sims[index] = -np.inf
    k = max(0, min(k, len(z) - 1))
    order = np.argsort(-sims, kind="stable")[:k]
    return order, sims[order]


# ------------------------------------------------------------------------------- separability
PROBE_CV_BELOW = 1000  # sets smaller than this are cross-validated (every sample tested once)
PROBE_FOLDS = 5


def linear_probe_accuracy(vectors: np.ndarray, labels: np.ndarray, *, test_size: float = 0.3, seed: int = 0,
                          max_train: int = PROBE_MAX_TRAIN, max_iter: int = 500, C: float = 1.0) -> float:
    """Accuracy of `linear_probe` (NaN where undefined)."""
    res = linear_probe(vectors, labels, test_size=test_size, seed=seed, max_train=max_train, max_iter=max_iter, C=C)
    return float("nan") if res is None else float(res["correct"].mean())


def linear_probe(vectors: np.ndarray, labels: np.ndarray, *, test_size: float = 0.3, seed: int = 0,
                 max_train: int = PROBE_MAX_TRAIN, max_iter: int = 500, C: float = 1.0,
                 cv_below: int = PROBE_CV_BELOW, folds: int = PROBE_FOLDS) -> dict[str, Any] | None:
    """Logistic regression on frozen (standardised) embeddings, judged on rows it was not fitted on.

    Below `cv_below` points: stratified `folds`-fold cross-validation, pooling the out-of-fold
    predictions, so every sample is tested exactly once (a 70/30 split of 59 images tests 18, and two
    images move the number by 11 points). Above: one stratified 70/30 split (at most `max_train`
    training rows). Deterministic for a given seed and labels, so the before and after sets of one run
    are split identically and their outcomes pair up for McNemar.

    Returns {"correct": bool per tested row, "tested": the rows' positions, "folds": how many fits}
    or None when the set is too small or has one class.
    """
    from sklearn.model_selection import KFold, ShuffleSplit, StratifiedKFold, StratifiedShuffleSplit

    x = np.asarray(vectors, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or len(y) < 4:
        return None
    if len(y) < cv_below:
        k = int(min(folds, counts.min())) if counts.min() >= 2 else 0
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if k >= 2 else \
            KFold(min(folds, len(y)), shuffle=True, random_state=seed)
        splits = list(splitter.split(x, y))
    else:
        n_test = max(1, int(round(test_size * len(y))))
        stratify = counts.min() >= 2 and n_test >= len(classes) and len(y) - n_test >= len(classes)
        splitter = (StratifiedShuffleSplit if stratify else ShuffleSplit)(n_splits=1, test_size=n_test, random_state=seed)
        splits = [next(splitter.split(x, y))]
    tested, correct = [], []
    for train, test in splits:
        if len(train) > max_train:
            train = np.sort(np.random.default_rng(seed).choice(train, max_train, replace=False))
        pred = _probe_fit_predict(x, y, train, test, seed=seed, max_iter=max_iter, C=C)
        tested.append(test)
        correct.append(pred == y[test])
    order = np.argsort(np.concatenate(tested), kind="stable")
    return {"correct": np.concatenate(correct)[order], "tested": np.concatenate(tested)[order], "folds": len(splits)}


def _probe_fit_predict(x, y, train, test, *, seed: int, max_iter: int, C: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y[train])) < 2:  # a fold with one class: predict it (what any fit would)
        return np.full(len(test), y[train][0])
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on tiny sets is expected and harmless here
        clf.fit(scaler.transform(x[train]), y[train])
    return clf.predict(scaler.transform(x[test]))


def silhouette(vectors: np.ndarray, labels: np.ndarray, *, max_n: int = PAIR_MAX_N, seed: int = 0) -> float:
    """Mean silhouette coefficient with cosine distance (on a seeded subset of at most `max_n` points)."""
    from sklearn.metrics import silhouette_score

    idx = subsample(len(labels), max_n, seed)
    x, y = l2_normalize(vectors)[idx], np.asarray(labels)[idx]
    if not 2 <= len(np.unique(y)) <= len(y) - 1:
        return float("nan")
    return float(silhouette_score(x, y, metric="cosine"))


# ----------------------------------------------------------------------------------- geometry
def pair_stats(vectors: np.ndarray, labels: np.ndarray, *, max_n: int = PAIR_MAX_N, seed: int = 0,
               t: float = 2.0, bins: np.ndarray = HIST_BINS) -> dict[str, Any]:
    """Alignment, uniformity and the positive / negative cosine histograms, from one Gram matrix.

    On L2-normalised f (Wang & Isola, 2020), over distinct pairs i < j:
        alignment  = E_{same class} ||f(x) - f(y)||^2          (0 = every class collapsed to a point)
        uniformity = log E_{all pairs} exp(-t ||f(x) - f(y)||^2)  (0 = everything collapsed; more
                     negative = more uniformly spread on the sphere)
    Returns floats plus `pos_hist` / `neg_hist` (fractions per bin of `bin_edges`).
    """
    idx = subsample(len(labels), max_n, seed)
    z = l2_normalize(np.asarray(vectors)[idx], dtype=np.float64)
    y = np.asarray(labels)[idx]
    n = len(z)
    out: dict[str, Any] = {"alignment": None, "uniformity": None, "pos_mean_cos": None, "neg_mean_cos": None,
                           "n_pos_pairs": 0, "n_neg_pairs": 0, "bin_edges": np.asarray(bins).tolist(),
                           "pos_hist": [0.0] * (len(bins) - 1), "neg_hist": [0.0] * (len(bins) - 1)}
    if n < 2:
        return out
    iu = np.triu_indices(n, k=1)
    cos = np.clip((z @ z.T)[iu], -1.0, 1.0)
    same = y[iu[0]] == y[iu[1]]
    sq = np.maximum(2.0 - 2.0 * cos, 0.0)  # ||a - b||^2 for unit vectors
    a = -t * sq
    out["uniformity"] = float(np.log(np.mean(np.exp(a - a.max()))) + a.max())  # log-mean-exp, stable
    pos, neg = cos[same], cos[~same]
    out["n_pos_pairs"], out["n_neg_pairs"] = int(len(pos)), int(len(neg))
    if len(pos):
        out["alignment"] = float(sq[same].mean())
        out["pos_mean_cos"] = float(pos.mean())
        out["pos_hist"] = (np.histogram(pos, bins=bins)[0] / len(pos)).tolist()
    if len(neg):
        out["neg_mean_cos"] = float(neg.mean())
        out["neg_hist"] = (np.histogram(neg, bins=bins)[0] / len(neg)).tolist()
    return out


def uniformity(vectors: np.ndarray, **kw) -> float | None:
    return pair_stats(vectors, np.zeros(len(vectors), dtype=np.int64), **kw)["uniformity"]


# -------------------------------------------------------------------------------- one set, one run
def set_metrics(vectors: np.ndarray, labels: np.ndarray, *, preds: np.ndarray | None = None, k: int = KNN_K,
                seed: int = 0, max_n: int = PAIR_MAX_N, probe: bool = True, details: bool = False) -> dict[str, Any]:
    """Every embedding metric of one [N, D] set (accuracy only when `preds` is given); each accuracy
    `<key>` comes with `<key>_ci95` = [lo, hi], its Wilson 95 % interval."""
    return _set_metrics(vectors, labels, preds=preds, k=k, seed=seed, max_n=max_n, probe=probe, details=details)[0]


def _set_metrics(vectors, labels, *, preds, k, seed, max_n, probe, details) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """set_metrics plus the per-sample outcomes behind each accuracy ({key: bool array}), for McNemar."""
    labels = np.asarray(labels, dtype=np.int64)
    pairs = pair_stats(vectors, labels, max_n=max_n, seed=seed)
    outcomes: dict[str, np.ndarray] = {}
    if preds is not None and len(labels):
        outcomes["acc"] = np.asarray(preds) == labels
    knn = knn_correct(vectors, labels, k, seed=seed)
    if knn is not None:
        outcomes["knn_acc"] = knn
    lp = linear_probe(vectors, labels, seed=seed) if probe else None
    if lp is not None:
        outcomes["linear_probe_acc"] = lp["correct"]
    out: dict[str, Any] = {}
    for key in ("acc", "knn_acc", "linear_probe_acc"):
        got = outcomes.get(key)
        out[key] = None if got is None else float(got.mean())
        out[f"{key}_ci95"] = ci95(got)
    out["linear_probe_folds"] = None if lp is None else lp["folds"]
    out["silhouette"] = _float(silhouette(vectors, labels, max_n=max_n, seed=seed))
    out.update({key: pairs[key] for key in ("alignment", "uniformity", "pos_mean_cos", "neg_mean_cos")})
    if out["pos_mean_cos"] is not None and out["neg_mean_cos"] is not None:
        out["cos_gap"] = out["pos_mean_cos"] - out["neg_mean_cos"]
    if details:
        out["hist"] = {key: pairs[key] for key in ("bin_edges", "pos_hist", "neg_hist")}
    return out, outcomes


def split_accuracy_intervals(run_dir: Path) -> dict[str, Any]:
    """`<split>_acc_ci95` (and `<split>_n`) for every split whose fine-tuned predictions a run stored
    (val, test, and any other split such as 'ood'): read from labels.npy / preds.npy, no vectors."""
    out: dict[str, Any] = {}
    folder = Path(run_dir) / "embeddings"
    for sub in sorted(folder.glob("after-*")) if folder.is_dir() else []:
        split = sub.name[len("after-"):]
        if ".tmp" in split or not (sub / "preds.npy").exists():
            continue
        try:
            labels, preds = np.load(sub / "labels.npy"), np.load(sub / "preds.npy")
        except (OSError, ValueError):
            continue
        out[f"{split}_acc_ci95"] = ci95(labels == preds)
        out[f"{split}_n"] = int(len(labels))
    return out


def default_output(es: EmbeddingSet) -> str:
    """The output a run is judged by: the encoder (CE, LaCViT) or the image embedding (FLYP, which stores its
    un-normalised encoder output too)."""
    for name in ("image", "encoder"):
        if name in es.vectors:
            return name
    return next(iter(es.vectors))


def analyze(source: str | Path | EmbeddingSet, *, split: str = "val", output: str | None = None, k: int = KNN_K,
            seed: int = 0, max_n: int = PAIR_MAX_N, before: bool = True, details: bool = False) -> dict[str, Any]:
    """All metrics of a run folder (its `after` set, and its `before` set when stored) or of one set.

    Args:
        source: a run folder (`runs/<id>`) or an EmbeddingSet.
        split: 'val', 'test' or 'ood' (the shifted test split; run folders only).
        output: which stored vectors to judge (default: encoder, or image for FLYP).
        k: neighbours for the kNN accuracy.
        seed: the seed of every subsample and of the linear probe's split.
        max_n: points used for pairwise statistics and the silhouette.
        before: also compute the metrics of the pretrained ('before') embeddings, as `<key>_before`.
        details: add per-class accuracy, confusion matrix and cosine histograms (not scalars).

    Returns:
        A dict with at least val_acc, knn_acc, linear_probe_acc, silhouette, alignment, uniformity,
        pos_mean_cos and neg_mean_cos (None where undefined); FLYP runs add zeroshot_acc and wise_ft.
        Every accuracy `<key>` has `<key>_ci95` = [lo, hi] (Wilson 95 %; `<split>_acc_ci95` for each
        stored split: val, test, ood); with a before set, `<key>_vs_before` is 'better' / 'worse' /
        'unclear' by an exact McNemar test on the same samples (`<key>_vs_before_p`).
    """
    summary: dict = {}
    config: dict = {}
    before_es = None
    if isinstance(source, EmbeddingSet):
        es = source
        run_id = None
    else:
        run_dir = Path(source)
        es = load_run_embeddings(run_dir, "after", split)
        if es is None:
            from .errors import EmbedLabError

            raise EmbedLabError(f"run {run_dir.name!r} has no '{split}' embeddings yet (unfinished, failed or cancelled run)")
        before_es = load_run_embeddings(run_dir, "before", split) if before else None
        summary = _read_json(run_dir / "summary.json")
        config = _read_json(run_dir / "config.json")
        run_id = run_dir.name
    output = output or default_output(es)
    if output not in es.vectors:
        from .errors import UnknownName

        raise UnknownName(f"no output {output!r} in this run; choose from: {', '.join(es.vectors)}")
    n_classes = max(len(es.classes), int(es.labels.max()) + 1)
    result: dict[str, Any] = {"run_id": run_id, "objective": config.get("objective") or summary.get("objective"),
                              "backbone": config.get("backbone") or summary.get("backbone"),
                              "dataset": config.get("dataset") or summary.get("dataset"),
                              "split": es.split, "output": output, "n": len(es), "dim": int(es.vectors[output].shape[1]),
                              "k": k, "seed": seed}
    m, outcomes = _set_metrics(es.vectors[output], es.labels, preds=es.preds, k=k, seed=seed, max_n=max_n, probe=True,
                               details=details)
    result.update(m)
    acc = m["acc"]
    result["val_acc"] = acc if es.split == "val" else summary.get("val_acc")
    result["test_acc"] = acc if es.split == "test" else summary.get("test_acc")
    result["ood_acc"] = acc if es.split == "ood" else summary.get("ood_acc")  # the shifted test split (core/shifts.py)
    if summary.get("ood_shift"):
        result["ood_shift"] = summary["ood_shift"]
    if run_id is not None:
        result.update(split_accuracy_intervals(run_dir))  # every stored split: val, test, ood...
        for key in [k_ for k_ in summary if k_.endswith("_acc") and k_ not in result]:  # e.g. ood_acc from the summary
            result[key] = summary[key]
    result[f"{es.split}_acc_ci95"] = m["acc_ci95"]
    if es.anchors is not None and es.anchors.shape[1] == es.vectors[output].shape[1]:
        result["anchor_acc"] = _float(zero_shot_accuracy(es.vectors[output], es.labels, es.anchors))
    if "zeroshot_acc" in summary or (before_es is not None and before_es.anchors is not None):
        zs = summary.get("zeroshot_acc")
        if before_es is not None and es.split != "val":
            zs = before_es.accuracy  # the summary's zero-shot number is for val
        if zs is None and before_es is not None and before_es.anchors is not None and output in before_es.vectors:
            zs = _float(zero_shot_accuracy(before_es.vectors[output], before_es.labels, before_es.anchors))
        result["zeroshot_acc"] = zs
    if summary.get("wise_ft"):
        result["wise_ft"] = wise_ft_curve(summary)
    if details:
        classes = es.classes or [str(i) for i in range(n_classes)]
        result["classes"] = list(classes)
        result["labels_count"] = np.bincount(es.labels, minlength=n_classes).tolist()
        if es.preds is not None:
            result["per_class_acc"] = [_float(v) for v in per_class_accuracy(es.labels, es.preds, n_classes)]
            result["confusion"] = confusion_matrix(es.labels, es.preds, n_classes).tolist()
    if before_es is not None and output in before_es.vectors:
        mb, outcomes_b = _set_metrics(before_es.vectors[output], before_es.labels, preds=before_es.preds, k=k, seed=seed,
                                      max_n=max_n, probe=True, details=details)
        for key, value in mb.items():
            result[f"{key}_before"] = value
        result[f"{es.split}_acc_before"] = mb["acc"]  # FLYP: the zero-shot accuracy; others: None (no head yet)
        result[f"{es.split}_acc_ci95_before"] = mb["acc_ci95"]
        paired = np.array_equal(before_es.ids, es.ids)  # the same images in the same order: McNemar applies
        for key in ("acc", "knn_acc", "linear_probe_acc"):
            p = None
            if paired and key in outcomes and key in outcomes_b and outcomes[key].shape == outcomes_b[key].shape:
                p = mcnemar_exact(outcomes_b[key], outcomes[key])
            result[f"{key}_vs_before_p"] = p
            result[f"{key}_vs_before"] = delta_verdict(m[key], m[f"{key}_ci95"], mb[key], mb[f"{key}_ci95"], paired_p=p)
        if details and before_es.preds is not None:
            result["per_class_acc_before"] = [_float(v) for v in per_class_accuracy(before_es.labels, before_es.preds, n_classes)]
    return result


_ANALYSIS_VERSION = 3  # v2: ood_acc; v3: 95 % intervals, CV probe; bump when a metric's definition changes: old cache entries are ignored


def analyze_cached(run_dir: str | Path, *, root: Path | None = None, **kw) -> dict[str, Any]:
    """analyze() of a run folder, memoised in EMBEDLAB_HOME/cache/analysis (finished runs do not change;
    the key includes the stored set's modification time, so a resumed run is analysed afresh)."""
    import hashlib

    from .paths import home, subdir

    run_dir = Path(run_dir)
    meta = embeddings_dir(run_dir, "after", kw.get("split", "val")) / "meta.json"
    stamp = meta.stat().st_mtime_ns if meta.exists() else 0
    key = hashlib.sha1(json.dumps({"run": str(run_dir.resolve()), "mtime": stamp, "v": _ANALYSIS_VERSION,
                                   "knn_q": KNN_MAX_QUERIES, "probe": PROBE_MAX_TRAIN, **kw},
                                  sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = subdir(Path(root) if root else home(), "cache", "analysis") / f"{run_dir.name}-{key}.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    result = analyze(run_dir, **kw)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, default=_jsonable))
    tmp.replace(path)
    return json.loads(path.read_text())  # the same JSON types whether it was cached or not


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def scalar_metrics(result: dict) -> dict[str, Any]:
    """The JSON-friendly scalar part of an analyze() result (drops histograms, matrices, lists; keeps
    the [lo, hi] pairs of `*_ci95` keys)."""
    return {k: v for k, v in result.items() if v is None or isinstance(v, (int, float, str, bool))
            or ("_ci95" in k and isinstance(v, (list, tuple)) and len(v) == 2)}


def wise_ft_curve(summary: dict) -> list[dict[str, float]]:
    """The WiSE-FT curve a FLYP run stored: [{alpha, val_acc, ood_acc}, ...] sorted by alpha (passthrough;
    ood_acc None for runs from before the OOD split existed)."""
    curve = summary.get("wise_ft") or []
    return sorted(({"alpha": float(p["alpha"]), "val_acc": _float(p.get("val_acc")), "ood_acc": _float(p.get("ood_acc"))}
                   for p in curve), key=lambda p: p["alpha"])


# ----------------------------------------------------------------------------------- multi-seed
SEED_KEYS = ("val_acc", "test_acc", "ood_acc", "zeroshot_acc", "knn_acc", "linear_probe_acc", "silhouette")  # aggregated


def seed_group_key(config: dict) -> str:
    """Runs of one multi-seed comparison share everything but the seed."""
    return json.dumps({k: v for k, v in (config or {}).items() if k != "seed"}, sort_keys=True, default=str)


def seed_groups(runs: Sequence[tuple[str, dict, dict]], keys: Sequence[str] = SEED_KEYS) -> list[dict[str, Any]]:
    """Group (run_id, config, metrics) by config except seed, in first-seen order, and give each group
    `<key>_mean`, `<key>_std` (sample standard deviation across seeds; None below two) and `<key>_n`
    for every metric key the runs have: what "mean ± spread" on Compare and in the report shows."""
    groups: dict[str, dict[str, Any]] = {}
    for run_id, config, values in runs:
        g = groups.setdefault(seed_group_key(config), {"objective": (config or {}).get("objective"), "config": config,
                                                        "runs": [], "seeds": [], "values": []})
        g["runs"].append(run_id)
        g["seeds"].append((config or {}).get("seed"))
        g["values"].append(values or {})
    out = []
    for g in groups.values():
        row = {k: g[k] for k in ("objective", "runs", "seeds")}
        row["config"] = {k: v for k, v in (g["config"] or {}).items() if k != "seed"}
        for key in keys:
            vals = np.array([v[key] for v in g["values"] if v.get(key) is not None], dtype=np.float64)
            if not len(vals):
                continue
            row[f"{key}_mean"] = float(vals.mean())
            row[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else None
            row[f"{key}_n"] = int(len(vals))
        out.append(row)
    return out


def mean_spread_text(group: dict, key: str, scale: float = 100.0, unit: str = " %") -> str:
    """'82.1 ± 1.3 % (3 seeds)' for a seed group's metric; '–' when it has none."""
    mean = group.get(f"{key}_mean")
    if mean is None:
        return "–"
    std, n = group.get(f"{key}_std"), group.get(f"{key}_n", 1)
    spread = "" if std is None else f" ± {scale * std:.1f}"
    return f"{scale * mean:.1f}{spread}{unit} ({n} seed{'s' if n != 1 else ''})"


def best_of(values: list[float | None], key: str) -> int | None:
    """Position of the best value for metric `key` (None when none is defined)."""
    higher = HIGHER_IS_BETTER.get(key.removesuffix("_before"), True)
    scored = [(v if higher else -v, -i) for i, v in enumerate(values) if v is not None and np.isfinite(v)]
    return -max(scored)[1] if scored else None  # ties go to the first


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
