"""WiSE-FT (Wortsman et al. 2022, mlfoundations/wise-ft): accuracy along the straight line between the
zero-shot and the fine-tuned weights, for objectives with a zero-shot head (the `wise_ft` trait).

    theta(a) = (1 - a) theta_zero-shot + a theta_fine-tuned,  a in [0, 1]
"""
from __future__ import annotations

import numpy as np
import torch

from .checkpoints import trainable_state
from .embeddings import compute_embeddings


@torch.no_grad()
def wise_ft_curve(s, zero_shot: dict[str, torch.Tensor], n_alphas: int, emit) -> list[dict]:
    """In-distribution (val) and OOD accuracy of theta(a) on the real interpolated weights: the ID-OOD frontier.

    Args:
        s: the run's core.train.Session (method, sources, parts, device, cfg).
        zero_shot: `trainable_state(method)` before any update.
        n_alphas: points from a = 0 to 1.
        emit: the run's event callback (progress).
    Returns: [{"alpha", "val_acc", "ood_acc"}, ...]; the method ends with its fine-tuned weights.
    """
    method = s.method
    tuned = trainable_state(method)
    params = dict(method.named_parameters())
    buffers = dict(method.named_buffers())
    curve = []
    for alpha in np.linspace(0.0, 1.0, n_alphas):
        for name, theta1 in tuned.items():
            theta0 = zero_shot[name]
            target = params.get(name, buffers.get(name))
            if target.dtype.is_floating_point:
                target.copy_((1 - alpha) * theta0 + alpha * theta1)
        point = {"alpha": round(float(alpha), 3)}
        for split in ("val", "ood"):
            es = compute_embeddings(method, s.sources[split], s.parts[split], s.device, amp=s.cfg.amp)
            point[f"{split}_acc"] = es.accuracy
        curve.append(point)
        emit({"type": "prepare", "what": "WiSE-FT curve", "done": len(curve), "total": n_alphas})
    for name, theta1 in tuned.items():
        params.get(name, buffers.get(name)).copy_(theta1)
    method.refresh()
    return curve
