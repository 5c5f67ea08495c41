"""The Learn page's toy: one anchor's label-aware contrastive loss on a handful of 2-D unit vectors.

    toy = contrastive_toy(angles_deg=[0, 30, 70, 45, 140, 250], labels=[0, 0, 0, 1, 1, 1], tau=0.1)
    toy.loss, toy.grad_coeff, toy.negative_share

For anchor i with positives P(i) and all other points A(i) (LaCViT / SupCon L_out for one anchor):

    L_i = -1/|P| sum_{p in P} log( exp(s_p / tau) / sum_{a in A} exp(s_a / tau) ),   s_a = z_i . z_a
    dL_i/ds_a = (q_a - [a in P] / |P|) / tau,   q_a = softmax_{a in A}(s_a / tau)

so every negative n pushes with weight q_n / tau, and its share of the total push is
softmax over the negatives of s_n / tau: the loss is hardness-aware, and a lower tau concentrates
the push on the hardest (most similar) negatives (Wang & Liu, CVPR 2021).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidConfig


@dataclass
class ContrastiveToy:
    """Everything the Learn page draws; arrays are over the non-anchor points, in input order."""

    points: np.ndarray  # [N, 2] unit vectors, the anchor first
    labels: np.ndarray  # [N] class ids, the anchor first
    tau: float
    similarity: np.ndarray  # [N-1] s_a = z_anchor . z_a
    is_positive: np.ndarray  # [N-1] bool: same class as the anchor
    prob: np.ndarray  # [N-1] q_a = softmax(s / tau) over all non-anchor points
    per_positive_loss: np.ndarray  # [N-1] -log q_p for positives, NaN for negatives
    loss: float  # L_anchor = mean of per_positive_loss over the positives
    grad_coeff: np.ndarray  # [N-1] dL/ds_a: < 0 pulls a positive closer, > 0 pushes a negative away
    negative_share: np.ndarray  # [N-1] softmax over negatives of s / tau (0 for positives): share of the push
    grad: np.ndarray  # [2] dL/dz_anchor = sum_a grad_coeff_a z_a (the anchor moves along -grad)


def unit_points(angles_deg) -> np.ndarray:
    """Angles in degrees -> [N, 2] points on the unit circle."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def contrastive_toy(angles_deg, labels, tau: float) -> ContrastiveToy:
    """One anchor's SupCon loss and its gradient weights; the anchor is the first point.

    Args:
        angles_deg: positions of the points on the unit circle, the anchor first.
        labels: class id per point; points sharing the anchor's label are its positives.
        tau: temperature (> 0).
    """
    if not (isinstance(tau, (int, float)) and np.isfinite(tau) and tau > 0):
        raise InvalidConfig(f"temperature must be > 0, not {tau}")
    z = unit_points(angles_deg)
    labels = np.asarray(labels)
    if len(z) != len(labels) or len(z) < 3:
        raise InvalidConfig("give at least three points (the anchor first) and one label per point")
    anchor, others = z[0], z[1:]
    is_pos = labels[1:] == labels[0]
    if not is_pos.any() or is_pos.all():
        raise InvalidConfig("the anchor needs at least one positive and one negative")
    s = others @ anchor  # [N-1]
    logits = s / tau
    log_q = logits - _logsumexp(logits)  # log softmax over every a != anchor
    q = np.exp(log_q)
    per_pos = np.where(is_pos, -log_q, np.nan)
    coeff = (q - is_pos / is_pos.sum()) / tau
    neg_logits = np.where(is_pos, -np.inf, logits)
    share = np.exp(neg_logits - _logsumexp(neg_logits))
    return ContrastiveToy(points=z, labels=labels, tau=float(tau), similarity=s, is_positive=is_pos, prob=q,
                          per_positive_loss=per_pos, loss=float(np.nanmean(per_pos)), grad_coeff=coeff,
                          negative_share=share, grad=coeff @ others)


def hardest_share_curve(angles_deg, labels, taus) -> np.ndarray:
    """The hardest negative's share of the push, for each temperature in `taus`."""
    return np.array([contrastive_toy(angles_deg, labels, t).negative_share.max() for t in taus])


def _logsumexp(x: np.ndarray) -> float:
    m = np.max(x)
    return float(m + np.log(np.sum(np.exp(x - m))))
