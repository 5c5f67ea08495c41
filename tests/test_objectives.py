"""core/objectives.py: the losses against hand computations and reference implementations, and the
methods' wiring (CE head, labelled mask)."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import InvalidConfig, UnknownName
from core.objectives import Batch, ClipLoss, CrossEntropyMethod, SupConLoss, create_method


def _unit(rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def _supcon_by_hand(z, labels, tau):
    """Khosla et al. L_out with explicit loops, in float64 Python arithmetic.

    per anchor i with P(i) = {p != i : y_p = y_i} non-empty:
        l_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau) )
    L = mean of l_i over those anchors.  Returns (L, [l_i or None]).
    """
    z = z.double().tolist()
    labels = [int(y) for y in labels]
    n = len(z)
    dot = lambda i, j: sum(a * b for a, b in zip(z[i], z[j]))  # noqa: E731
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            per_anchor.append(None)
            continue
        denominator = sum(math.exp(dot(i, a) / tau) for a in range(n) if a != i)
        terms = [math.log(math.exp(dot(i, p) / tau) / denominator) for p in positives]
        per_anchor.append(-sum(terms) / len(positives))
    used = [v for v in per_anchor if v is not None]
    return sum(used) / len(used), per_anchor


# 4 samples on the unit circle (angles 0, 30, 100, 200 degrees)
FOUR = _unit([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in (0, 30, 100, 200)])


# ------------------------------------------------------------------------------------ SupCon
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_supcon_matches_hand_computation_on_four_samples(tau):
    labels = torch.tensor([0, 0, 1, 1])
    expected, per_anchor = _supcon_by_hand(FOUR, labels, tau)
    assert all(v is not None for v in per_anchor)
    got = SupConLoss(tau)(FOUR, labels)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # sanity on the hand computation itself: anchor 0 has one positive (sample 1) ->
    # l_0 = -(z0.z1/tau) + log(sum_{a != 0} exp(z0.za/tau))
    c = lambda deg: math.cos(math.radians(deg))  # noqa: E731
    l0 = -c(30) / tau + math.log(math.exp(c(30) / tau) + math.exp(c(100) / tau) + math.exp(c(200) / tau))
    assert per_anchor[0] == pytest.approx(l0, abs=1e-9)


def test_supcon_anchor_without_positive_contributes_nothing():
    labels = torch.tensor([0, 0, 1, 2])  # anchors 2 and 3 have no positive
    expected, per_anchor = _supcon_by_hand(FOUR, labels, 0.1)
    assert per_anchor[2] is None and per_anchor[3] is None
    got = SupConLoss(0.1)(FOUR, labels).item()
    assert got == pytest.approx((per_anchor[0] + per_anchor[1]) / 2, abs=1e-6)
    # ...and they are not counted as zero-loss anchors either (that would halve the loss)
    assert got != pytest.approx((per_anchor[0] + per_anchor[1]) / 4, abs=1e-3)
    # moving a positive-less sample still matters through the denominators of the others
    moved = FOUR.clone()
    moved[3] = FOUR[0]
    assert SupConLoss(0.1)(moved, labels).item() > got + 0.1


def test_supcon_batch_without_positives_is_zero_with_a_graph():
    z = FOUR.clone().requires_grad_(True)
    loss = SupConLoss(0.1)(z, torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() == 0


def test_supcon_gradient_is_finite_for_identical_features():
    # collapsed features (cosine 1 everywhere) are the natural start of a degenerate run
    z = torch.ones(6, 4).div(2).requires_grad_(True)
    loss = SupConLoss(0.05)(z, torch.tensor([0, 0, 1, 1, 2, 2]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(5), abs=1e-5)  # all 5 others equally likely
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan")])
def test_supcon_rejects_non_positive_temperature(tau):
    with pytest.raises(InvalidConfig, match="temperature"):
        SupConLoss(tau)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_supcon_matches_pytorch_metric_learning(seed):
    """pml's SupConLoss reduces with AvgNonZeroReducer: an anchor without positives gets loss 0
    there and is dropped from the mean, which is exactly our "mean over anchors with a positive"
    (an anchor with a positive always has a strictly positive loss). The one regime where the two
    differ is a batch with no negative pair at all (a single label): pml returns 0 for it, we
    still return the (positive) L_out, so the comparison below always has >= 2 labels."""
    import pytorch_metric_learning.losses as pml  # a declared test dependency (requirements.txt)

    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(24, 16, generator=g), dim=-1)
    labels = torch.randint(0, 5, (22,), generator=g)
    labels = torch.cat([labels, torch.tensor([100, 101])])  # two guaranteed anchors without positives
    for tau in (0.07, 0.1, 0.5):
        ours = SupConLoss(tau)(z, labels)
        ref = pml.SupConLoss(temperature=tau)(z, labels)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
        assert ours.item() == pytest.approx(_supcon_by_hand(z, labels, tau)[0], abs=1e-5)


# -------------------------------------------------------------------------------------- CLIP
def test_clip_loss_matches_hand_computed_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    text = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    scale = 10.0  # already exponentiated, as FLYP passes logit_scale.exp()
    im, tx = image.double().tolist(), text.double().tolist()
    logits = [[scale * sum(a * b for a, b in zip(im[i], tx[j])) for j in range(4)] for i in range(4)]
    # image -> text: row i, correct column i; text -> image: column j, correct row j
    ce_image = sum(-logits[i][i] + math.log(sum(math.exp(logits[i][j]) for j in range(4))) for i in range(4)) / 4
    ce_text = sum(-logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(4))) for j in range(4)) / 4
    expected = (ce_image + ce_text) / 2
    got = ClipLoss()(image, text, torch.tensor(scale))
    assert got.item() == pytest.approx(expected, abs=1e-5)
    # the two directions really differ here, so a one-sided implementation would fail
    assert abs(ce_image - ce_text) > 1e-3


def test_clip_loss_is_low_for_matched_pairs_and_high_for_shuffled():
    g = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    scale = torch.tensor(50.0)
    matched = ClipLoss()(x, x, scale).item()
    shuffled = ClipLoss()(x, x.roll(1, 0), scale).item()
    assert matched < 0.05 < 5 < shuffled


# ---------------------------------------------------------------------------------------- CE
def _ce_method(num_classes=3, dim=8):
    torch.manual_seed(0)
    encoder = nn.Linear(5, dim)
    backbone = SimpleNamespace(embed_dim=dim, is_clip=False, name="stub")
    return CrossEntropyMethod(backbone, encoder, num_classes), encoder


def test_ce_method_loss_is_cross_entropy_of_its_head():
    method, encoder = _ce_method()
    x = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    stage = method.stages()[0]
    got = method.loss(stage, Batch([x], labels))
    expected = F.cross_entropy(method.head(encoder(x)), labels)
    torch.testing.assert_close(got, expected)
    # classify() is the same head
    torch.testing.assert_close(method.classify(encoder(x)), method.head(encoder(x)))
    assert stage.head_params == list(method.head.parameters())


def test_ce_method_labelled_mask_excludes_unlabelled_samples():
    method, encoder = _ce_method()
    x = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    labelled = torch.tensor([True, False, True, False, True, False])
    stage = method.stages()[0]
    got = method.loss(stage, Batch([x], labels, labelled))
    expected = F.cross_entropy(method.head(encoder(x[labelled])), labels[labelled])
    torch.testing.assert_close(got, expected)
    # the unlabelled samples' labels do not matter at all
    other = labels.clone()
    other[~labelled] = (other[~labelled] + 1) % 3
    torch.testing.assert_close(method.loss(stage, Batch([x], other, labelled)), got)
    assert got.item() != pytest.approx(F.cross_entropy(method.head(encoder(x)), labels).item(), abs=1e-4)
    # nothing labelled: zero, with a graph, never NaN
    none = method.loss(stage, Batch([x], labels, torch.zeros(6, dtype=torch.bool)))
    assert none.item() == 0.0 and none.requires_grad
    none.backward()
    assert torch.isfinite(method.head.weight.grad).all()


def test_create_method_unknown_objective():
    with pytest.raises(UnknownName, match="unknown objective 'nope'"):
        create_method("nope", None, nn.Identity(), 2)


def test_lacvit_rejects_bad_stage_fraction():
    backbone = SimpleNamespace(embed_dim=8, is_clip=False, name="stub")
    with pytest.raises(InvalidConfig, match="fraction"):
        create_method("lacvit", backbone, nn.Identity(), 3, stage1_fraction=1.0)


def test_flyp_needs_a_clip_backbone():
    backbone = SimpleNamespace(embed_dim=8, is_clip=False, name="stub")
    with pytest.raises(InvalidConfig, match="CLIP-style"):
        create_method("flyp", backbone, nn.Identity(), 3, class_names=["a", "b", "c"])
