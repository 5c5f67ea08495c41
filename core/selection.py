"""Data selection for fine-tuning (seed 002, VeCAF): pick a budget of training samples from a pool.

    $ python -m core select --backbone test_clip --dataset mnist5k --strategy vecaf --budget 200 --json
    $ python -m core train --backbone test_clip --dataset mnist5k --selection <id printed above>

The pool is the dataset's training split (class-balanced `--n-per-class` cap, or all of it). Every
strategy works on the pool's embeddings under a frozen model: the backbone as loaded (`--weights`:
pretrained, random or a file) or, with `--from-run RUN`, the encoder a finished run fine-tuned: the
"current model" of VeCAF's selection loop. Embeddings come from the cached-feature machinery
(core/features.py), so a second selection on the same pool costs nothing.

Geometry (all strategies). f_i = e_i / ||e_i||; z_i = (f_i - mean_j f_j) / ||.|| (centring removes the
component every embedding shares, which dominates raw cosines of random-init or poorly matched models);
d(i, j) = 1 - z_i . z_j, the cosine distance.

    random   a seeded uniform draw without replacement.
    kcenter  greedy k-center (farthest-first, Sener & Savarese 2018): a seeded random first point, then
             repeatedly the pool point with the largest distance to its nearest selected point.
    vecaf    Objective-aware Data Selection (ODS) on language-augmented embeddings, below.

VeCAF, exactly as implemented here.

1. Cross-attentive embedding augmentation (CEA), CLIP-style backbones only (`--eta`, 0 turns it off).
   With t_k the normalised text embedding of class k's prompts (the mean over PROMPT_TEMPLATES of
   "a photo of a {class}.", re-normalised) and s = exp(logit_scale) the model's CLIP temperature:

       alpha_i = softmax_k( s * f_i . t_k )[y_i]          attention of image i on its own class text
       f_i    <- f_i - eta * alpha_i * (f_i - t_{y_i})     (VeCAF's e_aug = e - eta * alpha * (e - t))

   then centred and normalised as above. The pool is labelled (VeCAF selects from a labelled pool to
   fine-tune faster), so y_i is known; a class prompt stands in for the paper's per-image caption.
   Samples the model already places near their class text (high alpha) move further towards it.
   CEA acts on the selector's embeddings only; training runs on the selected images as usual.

2. An ensemble of M centroid-based density estimates of the pool. Member m runs k-means
   (seed = 1000 * seed + m) on z (after CEA when it is on) with K_m = clip(round(r_m * budget), 2, N) centroids mu^m_k,
   r = (0.25, 0.5, 1.0), and represents the pool by its centroids weighted by cluster size:

       p_pool^m = sum_k w^m_k delta(mu^m_k),   w^m_k = |cluster k| / N

   The selection's density is a kernel density estimate with von Mises-Fisher kernels on its samples:

       p_S(x) = 1/|S| sum_{j in S} kappa(x, z_j),   kappa(x, z) = exp((x . z - 1) / tau)   (tau = 0.05)

   (kappa up to its normalising constant, which does not depend on S).

3. The objective, minimised greedily (one sample per step, the candidate with the lowest J(S + {c});
   ties to the lowest pool position):

       J(S) = 1/M sum_m D_m(S)  -  lambda * R(S)
       D_m(S) = - sum_k w^m_k log p_S(mu^m_k)          = KL(p_pool^m || p_S) + terms free of S
       R(S)   = 1/|S| sum_{i in S} min_{j in S, j != i} d(i, j)    (0 while |S| < 2)

   KL(pool || selection) is the mode-covering direction: a centroid with pool mass and no selected
   sample near it costs w_k (1 - mu_k . z_nearest) / tau, so every dense region is represented, and
   the kernel rewards samples *at* the centroids (typical images) over boundary ones; the 1/|S| share
   spreads picks over regions in proportion to their mass. R (mean nearest-neighbour distance inside
   the selection, lambda = 1) keeps picks within a region apart. Log-space throughout; cost per step
   O(N * sum_m K_m + N * |S|): budgets of a few hundred from pools of a few thousand take seconds (cap
   large pools with --n-per-class).

Selections are saved as EMBEDLAB_HOME/selections/<id>.json; `load_selection(id)` gives the sample
ids (indices into the dataset) that `python -m core train --selection ID` trains on. Each record also
carries diagnostics measured in the plain z space (no CEA) for every strategy alike: `coverage_radius`
(max over the pool of the distance to the nearest selected sample: what k-center minimises),
`mean_distance` (its mean: what density matching keeps low), `classes_covered` and `class_kl`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .errors import EmbedLabError, InvalidConfig, UnknownName
from .paths import home, safe_name, subdir

STRATEGIES = ("random", "kcenter", "vecaf")
DEFAULT_ETA = 0.5  # CEA strength: 0 = no language augmentation
DEFAULT_LAMBDA = 1.0  # weight of the diversity term R(S)
DEFAULT_TAU = 0.05  # bandwidth of the selection's kernel density (cosine units)
CENTROID_RATIOS = (0.25, 0.5, 1.0)  # ensemble: K_m = ratio * budget centroids
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


def select_kcenter(z: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Greedy k-center (farthest-first) on prepared embeddings; the first point is a seeded random one."""
    n = len(z)
    first = int(np.random.default_rng(seed).integers(n))
    chosen = [first]
    nearest = cosine_distances(z, z[first:first + 1])[:, 0]
    nearest[first] = -1.0
    for _ in range(budget - 1):
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


def vecaf_members(z: np.ndarray, budget: int, seed: int = 0, ratios: tuple[float, ...] = CENTROID_RATIOS) -> list[Member]:
    """The ensemble: one k-means per ratio, K_m = clip(round(ratio * budget), 2, N) centroids."""
    from sklearn.cluster import KMeans

    members = []
    for m, ratio in enumerate(ratios):
        k = int(np.clip(round(ratio * budget), 2, len(z)))
        km = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=1000 * seed + m).fit(z.astype(np.float32))
        members.append(Member(normalise(km.cluster_centers_), np.bincount(km.labels_, minlength=k) / len(z)))
    return members


def vecaf_objective(z: np.ndarray, chosen: np.ndarray, members: list[Member], lam: float = DEFAULT_LAMBDA,
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


def select_vecaf(z: np.ndarray, budget: int, seed: int = 0, lam: float = DEFAULT_LAMBDA, tau: float = DEFAULT_TAU,
                 members: list[Member] | None = None) -> np.ndarray:
    """Greedy minimisation of J(S) (module docstring) on prepared (optionally language-augmented) embeddings."""
    n = len(z)
    members = members if members is not None else vecaf_members(z, budget, seed)
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


def load_pool(backbone: str, dataset: str, *, weights: str = "pretrained", n_per_class: int | None = None,
              seed: int = 0, root: Path | None = None, device: str = "auto", image_size: int | None = None,
              from_run: str | None = None) -> Pool:
    """The training split of `dataset` embedded by a frozen `backbone` (or by a finished run's encoder)."""
    import torch

    from . import backbones as bb
    from . import datasets as ds
    from .device import configure_threads, pick_device
    from .features import cached_prefix_features
    from .objectives import PROMPT_TEMPLATES

    root = Path(root) if root else home()
    configure_threads()
    if from_run:
        return _run_pool(from_run, root, n_per_class, seed, device)
    data = ds.load_dataset(dataset, root)
    pool = ds.splits(data, n_per_class=n_per_class, seed=seed)["train"]
    if len(pool) == 0:
        raise InvalidConfig(f"dataset {dataset!r} has no training images")
    dev = pick_device(device)
    model = bb.create_backbone(backbone, weights=weights, image_size=image_size, trainable="frozen")
    model.preprocess = dataclasses.replace(model.preprocess, hflip=data.hflip)
    model.to(dev).eval()
    prefix, _, key = model.split_image()  # a frozen tower: prefix = the whole encoder
    key += "|eval"  # computed with the model in eval mode (BatchNorm running statistics), never shared with other caches
    feats = np.asarray(cached_prefix_features(prefix, key, pool, model.preprocess, 1, dev, root / "cache")[0], np.float32)
    text, scale = None, 100.0
    if model.is_clip:
        with torch.inference_mode():
            per_template = [torch.nn.functional.normalize(model.encode_text(model.tokenize(
                [t.format(c) for c in data.prompt_names])).float(), dim=-1) for t in PROMPT_TEMPLATES]
            text = torch.nn.functional.normalize(torch.stack(per_template).mean(0), dim=-1).cpu().numpy()
            scale = float(model.logit_scale.exp())
    return Pool(np.asarray(pool.ids), np.asarray(pool.labels), feats.reshape(len(pool), -1), text, scale,
                source=f"{backbone} ({weights}, frozen)")


def _run_pool(run_id: str, root: Path, n_per_class: int | None, seed: int, device: str) -> Pool:
    """The pool embedded by the encoder a finished run fine-tuned (VeCAF's 'current model')."""
    import torch

    from .embeddings import compute_embeddings
    from .report import resolve_run
    from .store import RunStore
    from .train import TrainConfig, build_session, load_method_weights

    store = RunStore(root)
    rec = resolve_run(store, run_id)
    cfg = dataclasses.replace(TrainConfig.from_dict(rec.config), n_per_class=n_per_class, labels=None, selection=None,
                              seed=seed, device=device, feature_views=0, experiment=None)  # the clean view only
    s = build_session(cfg, root)
    load_method_weights(s.method, store.run_dir(rec.id))
    es = compute_embeddings(s.method, s.sources["train"], s.parts["train"], s.device, amp=cfg.amp)
    feats = es.vectors.get("encoder", next(iter(es.vectors.values()))).astype(np.float32)
    text, scale = None, 100.0
    if s.backbone.is_clip:
        s.method.refresh()
        anchors = s.method.anchors()
        if anchors is not None and anchors.shape[1] == feats.shape[1]:
            text = anchors.float().cpu().numpy()
            scale = float(s.backbone.logit_scale.exp().detach())
        else:
            with torch.inference_mode():
                text = torch.nn.functional.normalize(s.backbone.encode_text(s.backbone.tokenize(
                    [f"a photo of a {c}." for c in s.data.prompt_names])).float(), dim=-1).cpu().numpy()
                scale = float(s.backbone.logit_scale.exp())
    return Pool(es.ids, es.labels, feats, text, scale, source=f"run {rec.id} ({cfg.objective}, {cfg.backbone})")


# --------------------------------------------------------------------------------- select + save
def select_from_pool(pool: Pool, strategy: str, budget: int, *, seed: int = 0, eta: float | None = None,
                     lam: float = DEFAULT_LAMBDA, tau: float = DEFAULT_TAU) -> dict:
    """Run one strategy on a pool; returns the selection record (ids in selection order plus diagnostics).

    eta: CEA strength for vecaf (None = DEFAULT_ETA when the pool has class text, else off; 0 = off).
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
    z = prepare(pool.features)
    language, alpha = False, None
    if strategy == "random":
        chosen = select_random(n, budget, seed)
    elif strategy == "kcenter":
        chosen = select_kcenter(z, budget, seed)
    else:
        eta = (DEFAULT_ETA if pool.text is not None else 0.0) if eta is None else float(eta)
        if eta < 0 or eta > 1:
            raise InvalidConfig(f"eta must be in [0, 1], not {eta}")
        if eta > 0 and pool.text is None:
            raise InvalidConfig("language augmentation (eta > 0) needs a CLIP-style backbone with a text tower; "
                                "use --eta 0 or a backbone such as test_clip, lite0-minilm or an open_clip name")
        zs = z
        if eta > 0:
            augmented, alpha = language_augment(pool.features, pool.labels, pool.text, eta, pool.logit_scale)
            zs, language = prepare(augmented), True
        chosen = select_vecaf(zs, budget, seed, lam=lam, tau=tau)
    labels = pool.labels[chosen]
    pool_hist = np.bincount(pool.labels, minlength=int(pool.labels.max()) + 1) / n
    sel_hist = (np.bincount(labels, minlength=len(pool_hist)) + SMOOTHING) / (budget + len(pool_hist) * SMOOTHING)
    present = pool_hist > 0
    record = {
        "strategy": strategy, "budget": int(budget), "seed": int(seed), "pool": n,
        "selected": [int(i) for i in pool.ids[chosen]],
        "language": language, "eta": float(eta) if strategy == "vecaf" else None,
        "lambda": lam if strategy == "vecaf" else None, "tau": tau if strategy == "vecaf" else None,
        "classes_covered": len(np.unique(labels)), "classes": int(present.sum()),
        "class_kl": float((pool_hist[present] * np.log(pool_hist[present] / sel_hist[present])).sum()),
        **coverage(z, chosen), "embedded_by": pool.source,
    }
    if alpha is not None:
        record["mean_alpha"] = float(alpha.mean())
    return record


def selection_id(record: dict, backbone: str, dataset: str, extra: dict | None = None) -> str:
    """A deterministic, path-safe id: <strategy>-<dataset>-b<budget>-s<seed>-<hash of every setting>."""
    keys = {k: record.get(k) for k in ("strategy", "budget", "seed", "pool", "eta", "lambda", "tau")}
    digest = hashlib.sha1(json.dumps({**keys, "backbone": backbone, "dataset": dataset, **(extra or {})},
                                     sort_keys=True, default=str).encode()).hexdigest()[:6]
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset)[:40]
    return safe_name(f"{record['strategy']}-{stem}-b{record['budget']}-s{record['seed']}-{digest}", "selection id")


def selections_dir(root: Path | None = None) -> Path:
    return subdir(Path(root) if root else home(), "selections")


def save_selection(record: dict, root: Path | None = None) -> Path:
    """Write `record` (with an `id`) to EMBEDLAB_HOME/selections/<id>.json atomically."""
    sid = safe_name(record["id"], "selection id")
    path = selections_dir(root) / f"{sid}.json"
    tmp = path.with_name(f".{sid}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def selection_info(selection: str, root: Path | None = None) -> dict:
    """The saved record of a selection id. Raises UnsafePath / UnknownName."""
    sid = safe_name(selection, "selection id")
    path = selections_dir(root) / f"{sid}.json"
    if not path.is_file():
        known = list_selections(root)
        hint = f"; saved selections: {', '.join(known[:10])}" if known else "; make one with: python -m core select ..."
        raise UnknownName(f"no selection {sid!r} in {path.parent}{hint}")
    try:
        record = json.loads(path.read_text())
        record["selected"] = [int(i) for i in record["selected"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidConfig(f"selection file {path} is damaged ({exc}); make it again with python -m core select") from exc
    return record


def load_selection(selection: str, root: Path | None = None) -> np.ndarray:
    """[n] int64 sample ids (dataset indices) of a saved selection, for TrainConfig.selection."""
    return np.asarray(selection_info(selection, root)["selected"], dtype=np.int64)


def list_selections(root: Path | None = None) -> list[str]:
    """Saved selection ids, newest first."""
    files = sorted(selections_dir(root).glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [p.stem for p in files if not p.name.startswith(".")]


def select(backbone: str, dataset: str, strategy: str, budget: int, *, seed: int = 0, n_per_class: int | None = None,
           weights: str = "pretrained", eta: float | None = None, lam: float = DEFAULT_LAMBDA, tau: float = DEFAULT_TAU,
           selection: str | None = None, root: Path | None = None, device: str = "auto", image_size: int | None = None,
           from_run: str | None = None, pool: Pool | None = None) -> dict:
    """Embed the pool, select, save; returns the saved record (with `id` and `path`).

    Args:
        backbone / dataset / weights / image_size: what embeds which pool (ignored with `from_run` or `pool`).
        strategy: random | kcenter | vecaf; budget: how many samples.
        seed: pool subsampling, k-means and random-choice seed.
        n_per_class: cap the pool per class (None = the whole training split).
        eta, lam, tau: VeCAF settings (module docstring).
        selection: the id to save under (default: selection_id(...)).
        from_run: embed with the encoder of this finished run instead of the frozen backbone.
        pool: an already embedded pool (budget curves reuse one).
    """
    t0 = time.time()
    root = Path(root) if root else home()
    if strategy not in STRATEGIES:
        raise UnknownName(f"unknown selection strategy {strategy!r}; choose from: {', '.join(STRATEGIES)}")
    if selection is not None:
        safe_name(selection, "selection id")
    if pool is None:
        pool = load_pool(backbone, dataset, weights=weights, n_per_class=n_per_class, seed=seed, root=root,
                         device=device, image_size=image_size, from_run=from_run)
    record = select_from_pool(pool, strategy, budget, seed=seed, eta=eta, lam=lam, tau=tau)
    record.update(backbone=backbone, dataset=dataset, weights=weights, n_per_class=n_per_class, from_run=from_run)
    record["id"] = selection or selection_id(record, backbone, dataset, {"weights": weights, "from_run": from_run,
                                                                        "n_per_class": n_per_class})
    record["created"] = time.time()
    record["seconds"] = round(time.time() - t0, 2)
    record["path"] = str(save_selection(record, root))
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


# --------------------------------------------------------------------------------------- CLI
def cmd_select(args) -> int:
    from . import cli

    record = select(args.backbone, args.dataset, args.strategy, args.budget, seed=args.seed, n_per_class=args.n_per_class,
                    weights=args.weights, eta=args.eta, lam=args.lam, tau=args.tau, selection=args.id,
                    root=cli._root(args), device=args.device, image_size=args.image_size, from_run=args.from_run)
    if not args.json:
        print(f"{record['strategy']}: {record['budget']} of {record['pool']} images, {record['classes_covered']}/"
              f"{record['classes']} classes, coverage radius {record['coverage_radius']:.3f}, "
              f"mean distance {record['mean_distance']:.3f} -> {record['id']}", file=sys.stderr)
        print(f"train on it: python -m core train --backbone {record['backbone']} --dataset {record['dataset']} "
              f"--selection {record['id']}", file=sys.stderr)
    cli._json_line(record)
    return 0


def cmd_selections(args) -> int:
    from . import cli

    rows = []
    for sid in list_selections(cli._root(args)):
        try:
            info = selection_info(sid, cli._root(args))
        except EmbedLabError:  # a damaged file must not hide the others
            continue
        rows.append({k: info.get(k) for k in ("id", "strategy", "budget", "seed", "backbone", "dataset", "pool",
                                             "classes_covered", "coverage_radius")})
    if not args.json:
        for r in rows:
            print(f"{r['id']:<44} {r['strategy']:<8} {r['budget']:>6} of {r['pool']:<6} {r['backbone']} / {r['dataset']}")
    cli._json_line(rows)
    return 0


def register(sub, common) -> None:

    p = sub.add_parser("select", parents=[common], help="pick a budget of training samples (random, k-center, VeCAF); last line JSON")
    p.add_argument("--backbone", help="backbone whose frozen embeddings the selector uses (required unless --from-run)")
    p.add_argument("--dataset", help="dataset whose training split is the pool (required unless --from-run)")
    p.add_argument("--strategy", required=True, choices=STRATEGIES)
    p.add_argument("--budget", required=True, type=int, help="number of samples to select")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-per-class", dest="n_per_class", type=int, help="cap the pool per class (default: the whole training split)")
    p.add_argument("--weights", default="pretrained", help="pretrained (default), random, or a weights file")
    p.add_argument("--from-run", dest="from_run", help="embed with a finished run's fine-tuned encoder (VeCAF's current model)")
    p.add_argument("--eta", type=float, help=f"vecaf: language augmentation strength in [0, 1] (default {DEFAULT_ETA} on CLIP backbones, 0 = off)")
    p.add_argument("--lambda", dest="lam", type=float, default=DEFAULT_LAMBDA, help=f"vecaf: diversity weight (default {DEFAULT_LAMBDA})")
    p.add_argument("--tau", type=float, default=DEFAULT_TAU, help=f"vecaf: kernel bandwidth (default {DEFAULT_TAU})")
    p.add_argument("--id", help="save under this id (default: derived from the settings)")
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.set_defaults(func=_checked(cmd_select))

    p = sub.add_parser("selections", parents=[common], help="list saved data selections; last line JSON")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_selections)


def _checked(fn):
    def run(args) -> int:
        if not args.from_run and not (args.backbone and args.dataset):
            raise InvalidConfig("select needs --backbone and --dataset (or --from-run RUN)")
        if args.from_run:
            from . import cli
            from .report import resolve_run
            from .store import RunStore

            rec = resolve_run(RunStore(cli._root(args)), args.from_run)
            args.backbone = args.backbone or rec.backbone
            args.dataset = args.dataset or rec.dataset
            if (args.backbone, args.dataset) != (rec.backbone, rec.dataset):
                raise InvalidConfig(f"run {rec.id} is {rec.backbone} on {rec.dataset}; drop --backbone/--dataset or match them")
            args.from_run = rec.id
        return fn(args)
    return run


from . import cli as _cli

if register not in _cli._EXTRA_COMMANDS:
    _cli._EXTRA_COMMANDS.append(register)
