"""The Learn page's contrastive toy against torch autograd and the training loss."""
import numpy as np
import pytest
import torch

from core.errors import InvalidConfig
from core.objectives import SupConLoss
from core.toy import contrastive_toy, hardest_share_curve, unit_points

ANGLES = [0, 25, 70, 40, 120, 200, 290]  # anchor, two positives, four negatives (40 deg is the hard one)
LABELS = [0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5, 2.0])
def test_loss_and_gradient_match_autograd(tau):
    toy = contrastive_toy(ANGLES, LABELS, tau)
    z = torch.tensor(unit_points(ANGLES), requires_grad=True)
    s = z[1:] @ z[0]
    s.retain_grad()
    log_q = torch.log_softmax(s / tau, dim=0)
    pos = torch.tensor(LABELS[1:]) == LABELS[0]
    loss = -(log_q[pos]).mean()
    loss.backward()
    assert toy.loss == pytest.approx(loss.item(), rel=1e-9)
    np.testing.assert_allclose(toy.grad_coeff, s.grad.numpy(), rtol=1e-9, atol=1e-12)
    # dL/dz_anchor through s only (the other points held fixed)
    np.testing.assert_allclose(toy.grad, (s.grad[:, None] * z[1:].detach()).sum(0).numpy(), rtol=1e-9)


def test_matches_the_training_loss_for_one_anchor():
    """The toy is row 0 of the batch loss that LaCViT trains with."""
    tau = 0.2
    toy = contrastive_toy(ANGLES, LABELS, tau)
    feats = torch.tensor(unit_points(ANGLES), dtype=torch.float32)
    labels = torch.tensor(LABELS)
    # SupConLoss averages over anchors; rebuild the anchor-0 term from its definition
    n = len(feats)
    logits = feats @ feats.T / tau
    logits.fill_diagonal_(float("-inf"))
    log_prob = logits - torch.logsumexp(logits, 1, keepdim=True)
    pos = (labels[:, None] == labels[None]) & ~torch.eye(n, dtype=torch.bool)
    row0 = -(log_prob[0][pos[0]]).mean().item()
    assert toy.loss == pytest.approx(row0, rel=1e-5)
    full = SupConLoss(tau)(feats, labels).item()  # sanity: same formula, all anchors
    per_anchor = [-(log_prob[i][pos[i]]).mean().item() for i in range(n)]
    assert full == pytest.approx(np.mean(per_anchor), rel=1e-5)


def test_negative_share_is_a_softmax_over_negatives():
    toy = contrastive_toy(ANGLES, LABELS, 0.1)
    neg = ~toy.is_positive
    assert toy.negative_share[neg].sum() == pytest.approx(1.0)
    assert np.all(toy.negative_share[~neg] == 0)
    expected = np.exp(toy.similarity[neg] / 0.1) / np.exp(toy.similarity[neg] / 0.1).sum()
    np.testing.assert_allclose(toy.negative_share[neg], expected)
    # negatives are always pushed; the positives are pulled on balance (sum_p q_p - 1 < 0), though a
    # positive that already dominates the softmax can be pushed: positives compete in the denominator
    assert np.all(toy.grad_coeff[neg] > 0) and toy.grad_coeff[~neg].sum() < 0


def test_lower_temperature_concentrates_on_the_hardest_negative():
    taus = [2.0, 1.0, 0.5, 0.2, 0.1, 0.05]
    share = hardest_share_curve(ANGLES, LABELS, taus)
    assert np.all(np.diff(share) > 0)
    toy = contrastive_toy(ANGLES, LABELS, 0.05)
    assert toy.negative_share.argmax() == 2  # the point at 40 degrees
    assert share[-1] > 0.9 and share[0] < 0.4


@pytest.mark.parametrize("tau", [0, -1, float("nan")])
def test_bad_temperature(tau):
    with pytest.raises(InvalidConfig):
        contrastive_toy(ANGLES, LABELS, tau)


def test_needs_a_positive_and_a_negative():
    with pytest.raises(InvalidConfig):
        contrastive_toy([0, 10, 20], [0, 1, 1], 0.1)
    with pytest.raises(InvalidConfig):
        contrastive_toy([0, 10, 20], [0, 0, 0], 0.1)
