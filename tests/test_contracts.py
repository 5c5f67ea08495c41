"""Contract tests that grow with the registries (as timm's tests/test_models.py does over list_models()).

Every objective in `core.objectives.OBJECTIVES` and every backbone in `core.backbones.BACKBONES` is a case,
computed from the registry when the tests are collected: a new entry gets these tests without editing
this file. An objective must build on a tiny backbone, take one training step per stage with a finite
loss, reach every parameter the stage trains with a gradient, and embed a batch as `[B, D]` per output
(its `trained_space` among them). A backbone must build offline, embed `[B, embed_dim]` (text too, for
one with a text tower) and pass gradients to every trainable parameter.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import core.train as train_mod
from core import backbones as bb
from core.objectives import (Batch, Method, Stage, create_method, method_options, objective_entry, register_objective,
                             registered)
from core.train import TrainConfig

B, C = 6, 3  # batch size, classes
CLASS_NAMES = ["cat", "dog", "bird"]


# ----------------------------------------------------------------------------------- contracts
def objective_contract(name: str) -> None:
    """Build objective `name` on the tiny offline backbone it needs, one optimizer step per stage, and its outputs."""
    entry = objective_entry(name)
    torch.manual_seed(0)
    backbone = bb.create_backbone("test_clip" if entry.needs_text_tower else "test_vit", weights="random", trainable="all")
    cfg = TrainConfig(objective=name, backbone=backbone.name, trainable="all", stage2_train_encoder=True, device="cpu")
    method = create_method(name, backbone, bb.ImageEncoder(backbone), C, class_names=CLASS_NAMES, **method_options(cfg))
    size = backbone.preprocess.image_size
    labels = torch.arange(B) % C
    labelled = (torch.arange(B) < B // 2) if entry.semi_supervised else None
    stages = method.stages()
    assert [st.name for st in stages] == list(entry.stages), f"{name}: stages() differ from the entry's stages trait"
    for stage in stages:
        method.train()
        batch = Batch([torch.randn(B, 3, size, size) for _ in range(stage.views)], labels, labelled)
        optimizer = train_mod._make_optimizer(cfg, method, stage)  # what the loop trains in this stage
        optimizer.zero_grad(set_to_none=True)
        loss = method(stage, batch)
        assert loss.ndim == 0 and torch.isfinite(loss), f"{name}/{stage.name}: loss {loss}"
        loss.backward()
        trained = [p for g in optimizer.param_groups for p in g["params"]]
        names = {id(p): n for n, p in method.named_parameters()}
        missing = [names.get(id(p), "?") for p in trained if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"{name}/{stage.name}: no (finite) gradient reaches {missing[:5]}"
        optimizer.step()
    method.eval()
    with torch.no_grad():
        emb = method.encoder(torch.randn(B, 3, size, size))
        outputs = method.outputs(emb)
        logits = method.classify(emb, stages[-1])
    assert entry.trained_space in outputs, f"{name}: trained_space {entry.trained_space!r} not in {list(outputs)}"
    for key, vec in outputs.items():
        assert vec.ndim == 2 and vec.shape[0] == B and vec.shape[1] > 0, f"{name}: output {key} has shape {tuple(vec.shape)}"
        assert torch.isfinite(vec).all(), f"{name}: output {key} is not finite"
    assert logits is None or tuple(logits.shape) == (B, C)


def backbone_contract(name: str) -> None:
    """Build backbone `name` offline, embed images (and text), and reach every trainable parameter."""
    torch.manual_seed(0)
    backbone = bb.create_backbone(name, trainable="all")
    size = backbone.preprocess.image_size
    backbone.train()
    image = backbone.encode_image(torch.randn(2, 3, size, size))
    assert tuple(image.shape) == (2, backbone.embed_dim) and torch.isfinite(image).all(), tuple(image.shape)
    loss = image.float().square().mean()
    if backbone.is_clip:
        text = backbone.encode_text(backbone.tokenize(["a photo of a cat.", "a photo of a dog."]))
        assert tuple(text.shape) == (2, backbone.embed_dim) and torch.isfinite(text).all(), tuple(text.shape)
        loss = loss + text.float().square().mean() + backbone.logit_scale.float()
    loss.backward()
    missing = [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing[:5]} ({len(missing)} in all)"


# ------------------------------------------------------------------------- cases from the registries
def objective_cases() -> list:
    """One case per registered objective (all plugins loaded), in registration order."""
    return [pytest.param(name, id=name) for name in registered()]


def backbone_cases() -> list:
    """One case per registered backbone; one that needs a download is skipped, with the reason."""
    return [pytest.param(name, id=name, marks=() if entry.offline else
                         pytest.mark.skip(reason=f"{name} needs a download (not offline)"))
            for name, entry in bb.registered().items()]


@pytest.mark.parametrize("name", objective_cases())
def test_objective_contract(name):
    objective_contract(name)


@pytest.mark.parametrize("name", backbone_cases())
def test_backbone_contract(name):
    backbone_contract(name)


# ------------------------------------------------------------------- a new entry gets the contract
class _Dummy(Method):
    """A tiny new objective: a linear head and a squared loss to one-hot targets."""

    def __init__(self, backbone, encoder, num_classes, *, broken: bool = False, **_):
        super().__init__(backbone, encoder, num_classes)
        self.head = nn.Linear(backbone.embed_dim, num_classes)
        self.spare = nn.Linear(backbone.embed_dim, num_classes)  # trained, but used only when not broken
        self.broken = broken

    def stages(self):
        return [Stage("dummy", 1.0, head_params=[*self.head.parameters(), *self.spare.parameters()])]

    def loss(self, stage, batch):
        emb = self.encode(batch.views[0])
        out = self.head(emb) + (0 if self.broken else self.spare(emb))
        return (out.float() - F.one_hot(batch.labels, self.num_classes).float()).square().mean()

    def classify(self, emb, stage=None):
        return self.head(emb)


@pytest.fixture
def dummy_objectives():
    """Register two new objectives for one test: a sound one, and one whose `spare` head gets no gradient."""
    traits = dict(label="Dummy", colour="#000000", trained_space="encoder", stages=("dummy",))
    register_objective("dummy", "a test objective", **traits)(_Dummy)
    register_objective("dummy-broken", "a test objective that leaves a head untrained",
                       options=lambda cfg: {"broken": True}, **traits)(_Dummy)
    yield
    for name in ("dummy", "dummy-broken"):
        registered().remove(name)


def test_a_new_objective_is_a_contract_case_without_editing_this_file(dummy_objectives):
    assert "dummy" in [p.values[0] for p in objective_cases()]  # what the parametrisation is built from
    objective_contract("dummy")
    with pytest.raises(AssertionError, match="no \\(finite\\) gradient reaches.*spare"):
        objective_contract("dummy-broken")  # the contract is a real check, not a formality


def test_the_registries_hold_the_built_in_entries():
    assert list(registered())[:4] == ["ce", "lacvit", "flyp", "content-style"]
    assert {"test_vit", "test_clip", "efficientnet_lite0", "lite0-minilm"} <= set(bb.registered())
