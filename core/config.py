"""What defines a run: `TrainConfig` and its sections, plain dataclasses that serialise to JSON.

Importable without torch (only `resolved()` imports the backbones and devices it asks about), so the
command line builds its parser and lists runs in a fraction of a second; core/train.py validates and runs
a config.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import asdict, dataclass, field

from .errors import InvalidConfig

CS_PREFIX = "cs_"  # this section's settings are `cs_<field>` in TrainConfig's JSON, on the CLI and in method kwargs


@dataclass
class ContentStyleConfig:
    """content-style's own settings: the `content_style` section of TrainConfig (flat `cs_*` keys in its JSON)."""

    style_dim: int = 8  # size of the style vector S
    ce_weight: float = 1.0  # weight of CE on the labelled samples
    prior_weight: float = 1.0  # weight of the content -> class-prior term (all samples)
    entropy_weight: float = 1.0  # share of mean per-sample entropy inside the prior term (moments)
    style_weight: float = 1.0  # weight of the style -> N(0, I) term (all samples)
    recon_weight: float = 1.0  # weight of reconstructing the embedding (the latent token)
    regulariser: str = "adversarial"  # priors: adversarial (the paper's discriminators) | moments
    recon_detach: bool = False  # detach the reconstruction target (False: the paper's)

    def flat(self) -> dict:
        """{cs_<field>: value}: the keys stored runs, the CLI and ContentStyleMethod use."""
        return {CS_PREFIX + k: v for k, v in dataclasses.asdict(self).items()}


# An objective's own settings: TrainConfig field -> (flat key prefix, dataclass). Stored runs, the CLI and the
# methods spell them flat (cs_style_dim); in memory they are one section (cfg.content_style.style_dim).
SECTIONS: dict[str, tuple[str, type]] = {"content_style": (CS_PREFIX, ContentStyleConfig)}


def _nest(kwargs: dict) -> dict:
    """TrainConfig kwargs with flat section keys (cs_style_dim=4) folded into their section (a fresh copy,
    never shared between configs); a section given as a dict (nested JSON) becomes its dataclass."""
    out = dict(kwargs)
    for name, (prefix, cls) in SECTIONS.items():
        flat = {k.removeprefix(prefix): out.pop(k) for k in list(out) if k.startswith(prefix)}
        section = out.get(name)
        if isinstance(section, dict):
            unknown = set(section) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise InvalidConfig(f"unknown setting(s): {', '.join(sorted(prefix + k for k in unknown))}")
            section = cls(**section)
        if section is not None or flat:
            out[name] = dataclasses.replace(section or cls(), **flat)  # TypeError for an unknown flat key, as before
    return out


def _flat_names(cls):
    """Let TrainConfig(cs_style_dim=4), cfg.cs_style_dim and dataclasses.replace(cfg, cs_style_dim=4) work."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **_nest(kwargs))

    cls.__init__ = __init__
    return cls


@_flat_names
@dataclass
class TrainConfig:
    """Everything that defines a run; serialises to JSON and back (an objective's own settings in its section)."""

    # what
    objective: str = "ce"  # a name in core.objectives.OBJECTIVES: ce | lacvit | flyp | content-style
    backbone: str = ""  # "" = the default for the objective (offline: efficientnet_lite0 / lite0-minilm)
    weights: str = "pretrained"  # pretrained | random | path to a safetensors / state-dict file
    dataset: str = "fashion-mnist"  # any name from `python -m core datasets`
    # data
    n_per_class: int | None = 80  # training images per class (None = all)
    eval_per_class: int | None = 100  # val and test images per class (None = all); 100, not 30: on 10 classes an 80 % accuracy is ±2.5 pts (95 %), not ±4.5
    labels: int | None = None  # semi-supervised: labelled training images (None = all labelled)
    selection: str | None = None  # a data-selection id (python -m core select) restricting the train set
    image_size: int | None = None  # input resolution (None = the backbone's default)
    # budget
    steps: int | None = 60  # optimizer steps over all stages; or
    epochs: float | None = None  # passes over the training set (steps wins if both are set)
    batch_size: int = 64
    # optimisation
    lr: float = 1e-3  # heads (linear / projection)
    backbone_lr: float | None = None  # trainable backbone layers (None = lr / 10)
    weight_decay: float = 0.05
    warmup: float = 0.1  # fraction of each stage's steps spent warming up linearly
    optimizer: str = "adamw"  # adamw | sgd
    grad_clip: float = 1.0  # max gradient norm
    # fine-tuning depth: all = full fine-tuning | frozen = heads only | k = last k blocks (+ the layers after
    # them) | auto = "all" on a GPU, "1" on a CPU (where the frozen rest is cached); resolved() stores which
    trainable: str = "auto"
    # objective knobs
    temperature: float = 0.1  # LaCViT tau
    stage1_fraction: float = 0.7  # LaCViT: share of steps in the contrastive stage
    stage2_train_encoder: bool | None = None  # LaCViT stage 2 fine-tunes the encoder too (the paper); None = auto: on a GPU yes, on a CPU frozen
    probe_lr: float = 1e-2  # heads of stages with a frozen encoder (LaCViT stage 2): a linear probe takes larger steps
    content_style: ContentStyleConfig = field(default_factory=ContentStyleConfig)  # content-style's own settings (cs_* keys)
    # machinery
    seed: int = 0
    eval_every: int | None = None  # steps between evaluations (None = about 10 per run)
    snapshots: int = 30  # val-embedding snapshots along the way (trajectory view; ~2.7 MB each on the default comparison, BENCHMARKS.md)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA
    cache_features: bool = True  # cache the frozen prefix's features (see core/features.py)
    feature_views: int = 2  # augmented views per training image in the cached bank (+ the clean eval view); K measured in BENCHMARKS.md
    wise_alphas: int = 11  # FLYP WiSE-FT: alphas 0, 0.1, ..., 1
    ce_zero_shot_head: bool = False  # CE on a backbone with a text tower: start from the zero-shot head (+ a WiSE-FT sweep)
    shift: str = "default"  # the OOD split: a shift of the test split (core/shifts.py; default: natural, else mix:3)
    ddp: bool = False  # data-parallel over torchrun processes (see core/distributed.py)
    experiment: str | None = None  # tag shared by the runs of one label / budget curve (core/curves.py)
    eval_test: bool = False  # also log test accuracy at every evaluation (label curves: best-on-val error)

    def to_dict(self) -> dict:
        """JSON-ready settings; a section's settings appear as flat `cs_*` keys (the stored layout)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECTIONS:
                out.update({SECTIONS[f.name][0] + k: v for k, v in asdict(value).items()})
            else:
                out[f.name] = value
        return out

    @classmethod
    def setting_names(cls) -> list[str]:
        """Every setting by the name to_dict(), the CLI's dests and TrainConfig(**kw) use (sections flat)."""
        return [n for f in dataclasses.fields(cls)
                for n in ([SECTIONS[f.name][0] + g.name for g in dataclasses.fields(SECTIONS[f.name][1])]
                          if f.name in SECTIONS else [f.name])]

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From to_dict()'s flat keys (every stored run) or with a section nested as a dict."""
        known = set(cls.setting_names()) | set(SECTIONS)
        unknown = set(d) - known
        if unknown:
            raise InvalidConfig(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def __getattr__(self, name: str):  # only for names that are not attributes: cfg.cs_style_dim
        for section, (prefix, _) in SECTIONS.items():
            if name.startswith(prefix) and section in self.__dict__:
                return getattr(self.__dict__[section], name.removeprefix(prefix))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        for section, (prefix, _) in SECTIONS.items():
            if name.startswith(prefix) and section in self.__dict__:
                return setattr(self.__dict__[section], name.removeprefix(prefix), value)
        object.__setattr__(self, name, value)

    def resolved(self) -> TrainConfig:
        """Fill in defaults that depend on the environment: the backbone, and the fine-tuning depth (full
        fine-tuning on a GPU; on a CPU the last block over cached features and a frozen LaCViT stage 2)."""
        from .backbones import default_backbone

        changes = {}
        if not self.backbone:
            changes["backbone"] = default_backbone(self.objective)
        if self.trainable == "auto" or self.stage2_train_encoder is None:
            gpu = _on_gpu(self.device)
            if self.trainable == "auto":
                changes["trainable"] = "all" if gpu else "1"
            if self.stage2_train_encoder is None:
                changes["stage2_train_encoder"] = gpu
        return dataclasses.replace(self, **changes) if changes else self


def _on_gpu(device: str) -> bool:
    from .device import pick_device

    try:
        return pick_device(device).type == "cuda"
    except (InvalidConfig, RuntimeError):  # a bad device string: validate() reports it
        return False
