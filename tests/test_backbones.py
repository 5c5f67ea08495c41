"""core/backbones.py and core/lite0_minilm.py: one contract for every offline backbone, freezing,
prefix/suffix splits, name checks, weights files and the packaged EfficientNet-Lite0 weights."""
import time

import pytest
import torch
import torch.nn as nn

from core import backbones as bb
from core.errors import InvalidConfig, UnknownName, WeightsUnavailable
from core.lite0_minilm import create_lite0_model, lite0_weights_path, translate_lite0_key

from helpers import one_torch_thread

OFFLINE = ["test_vit", "test_clip", "efficientnet_lite0", "lite0-minilm"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def built(_session_home):
    """One instance per backbone name for the module (lite0-minilm takes seconds to build)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = bb.create_backbone(name)
        backbone = cache[name]
        backbone.zero_grad(set_to_none=True)
        return backbone

    return get


def _batch(backbone, n=2, seed=0):
    s = backbone.preprocess.image_size
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def _bn_layers(module):
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# ------------------------------------------------------------------------------- contract
def test_offline_registry_entries():
    entries = bb.list_backbones()
    assert set(OFFLINE) <= set(entries)
    assert all(entries[n].offline for n in OFFLINE)
    assert [n for n in OFFLINE if entries[n].is_clip] == ["test_clip", "lite0-minilm"]


@pytest.mark.parametrize("name", OFFLINE)
def test_backbone_contract(built, name):
    backbone = built(name).set_trainable("all")
    assert backbone.name == name and backbone.is_clip == bb.BACKBONES[name].is_clip
    backbone.train()
    x = _batch(backbone)
    emb = backbone.encode_image(x)
    assert emb.shape == (2, backbone.embed_dim)
    assert torch.isfinite(emb).all()
    emb.float().pow(2).sum().backward()
    tower = backbone.image_tower()
    trainable = [(n, p) for n, p in tower.named_parameters() if p.requires_grad]
    assert trainable, "set_trainable('all') left nothing to train"
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"no gradient reached {no_grad[:5]}"
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)
    # eval mode is deterministic and the fingerprint names architecture + weights + transform
    backbone.eval()
    with torch.no_grad():
        assert torch.equal(backbone.encode_image(x), backbone.encode_image(x))
    assert len(backbone.fingerprint) == 16
    if backbone.is_clip:
        tokens = backbone.tokenize(["a photo of a cat.", "a photo of a dog."])
        with torch.no_grad():
            text = backbone.encode_text(tokens)
        assert text.shape == (2, backbone.embed_dim) and torch.isfinite(text).all()
        assert backbone.logit_scale.ndim == 0
    else:
        with pytest.raises(InvalidConfig, match="no text tower"):
            backbone.tokenize(["x"])


@pytest.mark.parametrize("name", ["test_vit", "test_clip", "efficientnet_lite0"])
def test_set_trainable_semantics(built, name):
    backbone = built(name)
    tower = backbone.image_tower()
    blocks = backbone.image_block_names()
    n_params = len(list(tower.parameters()))

    backbone.set_trainable("frozen")
    assert backbone.trainable == "frozen" and backbone.frozen_blocks() == len(blocks)
    assert not any(p.requires_grad for p in backbone.parameters())

    backbone.set_trainable("all")
    assert backbone.trainable == "all" and backbone.frozen_blocks() == 0
    assert all(p.requires_grad for p in backbone.parameters())

    counts = []
    for k in (1, 2):
        backbone.set_trainable(k)
        assert backbone.trainable == str(k) and backbone.frozen_blocks() == len(blocks) - k
        trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
        last_k = tuple(b + "." for b in blocks[-k:])
        frozen_blocks = tuple(b + "." for b in blocks[:-k])
        assert {n for n in trainable if n.startswith(last_k)} == {n for n, _ in tower.named_parameters() if n.startswith(last_k)}
        assert not any(n.startswith(frozen_blocks) for n in trainable)
        assert 0 < len(trainable) < n_params
        counts.append(len(trainable))
    assert counts[0] < counts[1]
    if name == "test_vit":  # the layers after the blocks train with them; the stem stays frozen
        backbone.set_trainable(2)
        assert {n for n, p in tower.named_parameters() if p.requires_grad and not n.startswith("blocks.")} == {"norm.weight", "norm.bias"}
    if name == "test_clip":  # the text tower follows the same k; logit_scale trains unless frozen
        backbone.set_trainable(1)
        text = {n for n, p in backbone.model.named_parameters() if p.requires_grad and not n.startswith("visual.")}
        assert "transformer.resblocks.1.attn.in_proj_weight" in text and "ln_final.weight" in text
        assert not any(n.startswith("transformer.resblocks.0.") for n in text) and "token_embedding.weight" not in text
        assert backbone.logit_scale.requires_grad
    backbone.set_trainable("all")


@pytest.mark.parametrize("bad", ["some", -1, "1.5"])
def test_set_trainable_rejects_bad_values(built, bad):
    with pytest.raises(InvalidConfig, match="trainable"):
        built("test_vit").set_trainable(bad)


def test_frozen_batchnorm_stays_in_eval_mode(built):
    backbone = built("efficientnet_lite0")
    blocks = backbone.image_block_names()
    backbone.set_trainable(2).train()
    for n, m in _bn_layers(backbone.image_tower()):
        in_trainable_part = n.startswith((blocks[-2] + ".", blocks[-1] + ".")) or n == "bn2"
        assert m.training == in_trainable_part, n
    # and the running statistics of a frozen BN really do not move
    frozen = dict(backbone.image_tower().named_modules())["blocks.0.0.bn1"]
    before = frozen.running_mean.clone()
    backbone.encode_image(_batch(backbone, n=4))
    assert torch.equal(frozen.running_mean, before)
    backbone.set_trainable("frozen").train()
    assert not any(m.training for _, m in _bn_layers(backbone))
    backbone.set_trainable("all").train()
    assert all(m.training for _, m in _bn_layers(backbone))


@pytest.mark.parametrize("name", ["test_vit", "efficientnet_lite0", "lite0-minilm"])
@pytest.mark.parametrize("k", [1, 2])
def test_split_image_reproduces_encode_image(built, name, k):
    backbone = built(name).set_trainable(k).eval()
    prefix, suffix, key = backbone.split_image()
    x = _batch(backbone, n=3, seed=k)
    with torch.no_grad():
        full = backbone.encode_image(x)
        split = suffix(prefix(x))
    assert torch.equal(split, full)
    # the prefix is frozen, and training through the suffix reaches every trainable tower parameter
    assert not any(p.requires_grad for p in prefix.parameters())
    with torch.no_grad():
        cached = prefix(x)
    suffix(cached).float().pow(2).sum().backward()
    trainable = [(n, p) for n, p in backbone.image_tower().named_parameters() if p.requires_grad]
    assert trainable and not [n for n, p in trainable if p.grad is None]
    backbone.zero_grad(set_to_none=True)
    other_key = backbone.set_trainable(3 - k).split_image()[2]
    assert key != other_key  # the cached prefix depends on how many blocks it covers
    backbone.set_trainable("all")


def test_split_image_when_fully_frozen_and_when_not_splittable(built):
    vit = built("test_vit").set_trainable("frozen").eval()
    prefix, suffix, key = vit.split_image()
    x = _batch(vit)
    with torch.no_grad():
        assert torch.equal(suffix(prefix(x)), vit.encode_image(x))
    assert key.startswith("full|")
    assert vit.set_trainable("all").split_image() is None
    assert built("test_clip").set_trainable(1).split_image() is None  # open_clip towers: no partial split
    built("test_clip").set_trainable("all")


# ------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["test_vit", "lite0-minilm", "resnet18.a1_in1k", "resnet18", "vit_small_patch16_224",
                                  "ViT-B-32/laion2b_s34b_b79k", "ViT-B-32/", " test_clip "])
def test_check_name_accepts(name):
    assert bb.check_name(name) is None


@pytest.mark.parametrize("name, message", [
    ("", "enter a backbone name"),
    ("resnet18x", "unknown backbone 'resnet18x'"),
    ("not_a_model_at_all", "not an EmbedLab, timm or open_clip"),
    ("ViT-B-32/nope", "has no pretrained tag 'nope'"),
    ("NoSuchModel/x", "unknown open_clip model 'NoSuchModel'"),
])
def test_check_name_rejects(name, message):
    problem = bb.check_name(name)
    assert problem is not None and message in problem
    with pytest.raises(UnknownName, match=message):
        bb.create_backbone(name)


def test_check_name_suggests_close_names():
    assert "did you mean" in bb.check_name("resnet18x") and "resnet18" in bb.check_name("resnet18x")


def test_offline_hub_weights_fail_fast_with_a_clear_message(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache, whatever the machine has
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as info:
        bb.create_backbone("resnet18.a1_in1k")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "'resnet18.a1_in1k'" in message and "--weights" in message and "offline" in message


def test_invalid_image_size():
    with pytest.raises(InvalidConfig, match="image size"):
        bb.create_backbone("test_vit", image_size=4)


# ------------------------------------------------------------------------- weights files
def _perturbed_state(seed=1):
    torch.manual_seed(seed)
    donor = bb.create_backbone("test_vit", weights="random")
    return {k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in donor.model.state_dict().items()}


@pytest.mark.parametrize("fmt", ["safetensors", "torch", "wrapped"])
def test_local_weights_file_loads(tmp_path, fmt):
    state = _perturbed_state()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "torch":
        path = tmp_path / "w.pt"
        torch.save(state, path)
    else:  # a training checkpoint: {"state_dict": {"module.<key>": ...}}
        path = tmp_path / "ckpt.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    default = bb.create_backbone("test_vit")
    loaded = bb.create_backbone("test_vit", weights=str(path))
    assert loaded.weights_id == f"file:{bb._file_sha1(path)}" and loaded.weights_id != default.weights_id
    assert loaded.fingerprint != default.fingerprint
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, state[k]), k
        if v.is_floating_point() and v.numel() > 1:
            assert not torch.equal(v, default.model.state_dict()[k]), k


def test_open_clip_name_with_a_weights_file(tmp_path):
    """`MODEL/` (no pretrained tag) + a file goes through open_clip's own loader; the weights id must
    still name the file, or the file-loaded model would share cache keys with random init."""
    donor = bb.create_backbone("test_clip")
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in donor.model.state_dict().items()}
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    loaded = bb.create_backbone("test_clip/", weights=str(path))
    random = bb.create_backbone("test_clip/", weights="random")
    assert loaded.is_clip and torch.equal(loaded.model.visual.proj, state["visual.proj"])
    assert loaded.weights_id == f"file:{bb._file_sha1(path)}" and random.weights_id == "random"
    assert loaded.fingerprint != random.fingerprint


def test_weights_file_problems(tmp_path):
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        bb.create_backbone("test_vit", weights=str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="is refused: only safetensors files and plain tensor state dicts"):
        bb.create_backbone("test_vit", weights=str(junk))
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsUnavailable, match="does not fit"):
        bb.create_backbone("test_vit", weights=str(other))
    # a pickle with code in it is refused by the weights_only loader
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": _Evil()}, evil)
    with pytest.raises(WeightsUnavailable, match="is refused: only safetensors files and plain tensor state dicts"):
        bb.read_state_dict(evil)


class _Evil:
    pass


# ------------------------------------------------------------------ EfficientNet-Lite0 weights
def test_lite0_packaged_weights_load_strictly_and_are_not_random():
    pretrained = create_lite0_model("pretrained")
    random = create_lite0_model("random")
    raw = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    translated = {translate_lite0_key(k): v for k, v in raw.items()}
    own = pretrained.state_dict()
    assert len(translated) == len(raw) and set(translated) == set(own)  # one-to-one, nothing missing
    for k, v in translated.items():
        assert torch.equal(own[k], v), k
    floats = [k for k, v in own.items() if v.is_floating_point()]  # all but BN's num_batches_tracked
    assert [k for k in floats if torch.equal(own[k], random.state_dict()[k])] == []
    # the BN statistics came from ImageNet, not the init (mean 0 / var 1)
    assert not torch.equal(pretrained.bn1.running_var, torch.ones_like(pretrained.bn1.running_var))


@pytest.mark.parametrize("lukemelas, timm_key", [
    ("_conv_stem.weight", "conv_stem.weight"),
    ("_bn0.running_mean", "bn1.running_mean"),
    ("_conv_head.weight", "conv_head.weight"),
    ("_bn1.bias", "bn2.bias"),
    ("_fc.weight", "classifier.weight"),
    ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
    ("_blocks.0._project_conv.weight", "blocks.0.0.conv_pw.weight"),
    ("_blocks.0._bn2.running_var", "blocks.0.0.bn2.running_var"),
    ("_blocks.1._expand_conv.weight", "blocks.1.0.conv_pw.weight"),
    ("_blocks.3._bn0.weight", "blocks.2.0.bn1.weight"),
    ("_blocks.4._bn1.weight", "blocks.2.1.bn2.weight"),
    ("_blocks.14._project_conv.weight", "blocks.5.3.conv_pwl.weight"),
    ("_blocks.15._bn2.num_batches_tracked", "blocks.6.0.bn3.num_batches_tracked"),
])
def test_translate_lite0_key(lukemelas, timm_key):
    assert translate_lite0_key(lukemelas) == timm_key


def test_translate_lite0_key_rejects_unknown():
    with pytest.raises(KeyError):
        translate_lite0_key("_something.weight")


def test_default_backbone_offline():
    assert bb.default_backbone("ce", online=False) == "efficientnet_lite0"
    assert bb.default_backbone("flyp", online=False) == "lite0-minilm"
