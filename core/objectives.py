"""Fine-tuning objectives: the losses (small nn.Modules, shapes in the docstrings) and the
methods that wire a backbone, heads and losses into training stages.

    ce       cross-entropy with a linear head on the embedding
    lacvit   seed 000: stage 1 label-aware contrastive loss on an MLP projection head (two
             augmented views), stage 2 a CE linear head on the encoder embedding (the encoder fine-tuned
             with it on a GPU, frozen on a CPU by default; see TrainConfig.resolved)
    flyp     seed 004: CLIP loss between image embeddings and class-prompt text embeddings, both
             towers updated, zero-shot initialisation; WiSE-FT interpolation afterwards

Methods never see where inputs come from: `encoder` maps whatever the data source yields (images,
or cached features of a frozen prefix) to the `[B, D]` embedding.

Each objective registers itself with `@register_objective(name, description, **traits)`: its label,
colour, help text, the output space it trains, its stages, whether it needs a text tower, is
semi-supervised, has a zero-shot head and a WiSE-FT sweep, its config check and its own settings.
The loop (core/train.py) and the pages ask these traits, never the name. This module imports no
plugin (content-style lives in core/content_style.py); core/plugins.py imports them all.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import parse_trainable
from .errors import InvalidConfig
from .registry import Registry

PROMPT_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "an image of a {}.")  # zero-shot head: mean over these
TRAIN_TEMPLATE = PROMPT_TEMPLATES[0]  # FLYP trains on one template (its Fig. 4: more do not help)


# ------------------------------------------------------------------------------------- losses
class SupConLoss(nn.Module):
    """Label-aware (supervised) contrastive loss of LaCViT (seed 000, Khosla et al. 2020 L_out).

        L = mean_{i with P(i) != {}}  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/tau) / sum_{a != i} exp(z_i.z_a/tau) )

    P(i) are the other samples of i's label in the batch. The seed sums over anchors; we average
    over anchors that have a positive (same minimiser, batch-size independent scale). An anchor
    with no positive contributes nothing; a batch with none gives 0 (with a graph), never NaN.

    Args (forward):
        features: [N, D] L2-normalised embeddings (N = views x batch).
        labels: [N] int64 class ids.
    Returns: scalar loss.
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if not temperature > 0:
            raise InvalidConfig(f"temperature must be > 0, not {temperature}")
        self.temperature = temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = features.float()
        n = features.shape[0]
        self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
        logits = (features @ features.T / self.temperature).masked_fill(self_mask, float("-inf"))  # [N, N]
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # denominator over all a != i
        positives = (labels[:, None] == labels[None, :]) & ~self_mask  # [N, N]
        n_pos = positives.sum(1)
        per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1) / n_pos.clamp(min=1)  # [N]
        has_pos = n_pos > 0
        if not has_pos.any():
            return features.sum() * 0.0
        return per_anchor[has_pos].mean()


class ClipLoss(nn.Module):
    """Symmetric image-text InfoNCE of CLIP, as FLYP uses it: open_clip's `ClipLoss`.

    Args (forward):
        image_features: [B, D] L2-normalised; text_features: [B, D] L2-normalised, row i the
        prompt of image i's class; logit_scale: scalar, already exponentiated.
    Returns: scalar loss.
    """

    def __init__(self):
        super().__init__()
        from open_clip.loss import ClipLoss as OpenClipLoss

        rank, world = dist_info()
        # under DDP, open_clip gathers features so the loss sees the global batch
        self.loss = OpenClipLoss(rank=rank, world_size=world)

    def forward(self, image_features, text_features, logit_scale):
        return self.loss(image_features.float(), text_features.float(), logit_scale.float())


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_local_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of `x` concatenated, keeping the gradient of this rank's rows (as open_clip does)."""
    import torch.distributed as dist

    rank, world = dist_info()
    if world == 1:
        return x
    parts = [torch.zeros_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x  # gathered copies carry no gradient; the local one does
    return torch.cat(parts)


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class ObjectiveEntry:
    """An objective and its traits: what the loop, the pages and the reports ask of it, so none of them
    branches on its name."""

    build: Callable[..., Method]  # (backbone, encoder, num_classes, **options) -> Method
    description: str  # one line for `python -m core objectives` and the CLI's help
    label: str = ""  # short name for legends, tables and run labels ("LaCViT")
    colour: str = "#888888"  # one colour per objective in every figure (pages, curves, reports)
    help: str = ""  # one line for the Train page's objective picker
    trained_space: str = "encoder"  # the Method.outputs() name this objective shapes
    stages: tuple[str, ...] = ()  # names of its training stages, in order (Method.stages() builds them)
    needs_text_tower: bool = False  # needs a backbone with a text tower (class prompts)
    semi_supervised: bool = False  # trains on unlabelled images too (with --labels N); else on the labelled only
    zero_shot: str = "never"  # "always" | "option" (ce_zero_shot_head) | "never": the untrained model is a classifier
    wise_ft: bool = False  # a WiSE-FT sweep from the zero-shot weights after training (when zero-shot)
    check: Callable[[Any], None] | None = None  # (TrainConfig) -> None, raises InvalidConfig: its own settings
    options: Callable[[Any], dict] | None = None  # (TrainConfig) -> extra build kwargs (its config section)

    @property
    def needs_clip(self) -> bool:  # the name this trait had before
        return self.needs_text_tower

    def has_zero_shot(self, cfg) -> bool:
        """Whether this run's model before any update is a classifier (FLYP; CE from the zero-shot head):
        then it is scored (zeroshot_acc) and WiSE-FT interpolates from it. `cfg`: a TrainConfig, or a
        stored run's config dict."""
        option = cfg.get("ce_zero_shot_head") if isinstance(cfg, Mapping) else cfg.ce_zero_shot_head
        return self.zero_shot == "always" or (self.zero_shot == "option" and bool(option))


OBJECTIVES: Registry[ObjectiveEntry] = Registry("objective")  # objective name -> entry (core/plugins.py fills it)


def register_objective(name: str, description: str, **traits):
    """Decorator: register a `Method` class (or a factory with its signature) as objective `name`.

    Args:
        name: the objective's name (`--objective NAME`, stored in every run's config).
        description: one line saying what it trains.
        **traits: the other ObjectiveEntry fields (label, colour, help, trained_space, stages, ...).
    """
    return OBJECTIVES.register(name, lambda build: ObjectiveEntry(build, description, **traits))


def registered() -> Registry[ObjectiveEntry]:
    """OBJECTIVES with every plugin loaded. core/plugins.py imports this module, so the plugin list is loaded at the
    first look-up (as timm's list_models relies on timm.models being imported), not imported here: the import
    graph stays one-way (plugins -> registry)."""
    importlib.import_module(f"{__package__}.plugins")

    return OBJECTIVES


def objective_entry(name: str) -> ObjectiveEntry:
    """The entry of objective `name`, or UnknownName with the known names."""
    return registered().get_entry(name)


def objective_label(name: str) -> str:
    """Short display name ("LaCViT"); an unknown name (a run of a removed objective) shows as itself."""
    entry = registered().get(name)
    return entry.label or name if entry else name


def objective_colour(name: str) -> str | None:
    """The objective's colour in every figure; None for an unknown name (the plotting default)."""
    entry = registered().get(name)
    return entry.colour if entry else None


def objective_labels() -> dict[str, str]:
    """name -> label for every registered objective."""
    return {n: e.label or n for n, e in registered().items()}


def objective_colours() -> dict[str, str]:
    """name -> colour for every registered objective."""
    return {n: e.colour for n, e in registered().items()}


def trained_space(name: str) -> str:
    """The name of the embedding output (Method.outputs()) objective `name` shapes: "encoder" for an unknown one."""
    entry = registered().get(name)
    return entry.trained_space if entry else "encoder"


def create_method(objective: str, backbone, encoder: nn.Module, num_classes: int, **kwargs) -> Method:
    return objective_entry(objective).build(backbone, encoder, num_classes, **kwargs)


def method_options(cfg) -> dict:
    """The build kwargs of `cfg.objective` from a TrainConfig: the shared knobs (each method takes what it uses)
    plus the objective's own config section (its `options` trait)."""
    entry = objective_entry(cfg.objective)
    common = dict(temperature=cfg.temperature, stage1_fraction=cfg.stage1_fraction,
                  stage2_train_encoder=cfg.stage2_train_encoder, zero_shot_head=cfg.ce_zero_shot_head)
    return {**common, **(entry.options(cfg) if entry.options else {})}


# ------------------------------------------------------------------------------------- methods
@dataclass
class Batch:
    """One training batch as the method sees it."""

    views: list[torch.Tensor]  # 1 or 2 encoder inputs [B, ...] (two augmented views for LaCViT)
    labels: torch.Tensor  # [B] int64
    labelled: torch.Tensor | None = None  # [B] bool, semi-supervised runs only


@dataclass
class Stage:
    """A phase of training with its own loss and trainable parameters."""

    name: str
    fraction: float  # share of the step budget
    views: int = 1  # augmented views per sample
    train_encoder: bool = True  # False: the encoder runs frozen (no grad, eval mode) in this stage
    global_loss: bool = False  # under DDP the loss is computed on features gathered from all ranks
    init_head_from_class_means: bool = False  # start the head as a nearest-class-mean classifier
    head_params: list[nn.Parameter] = field(default_factory=list)  # trained at the head learning rate


class Method(nn.Module):
    """Base: an encoder plus objective-specific heads."""

    name = ""

    def __init__(self, backbone, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        # inputs -> [B, D]; a view onto the backbone's modules, kept unregistered so parameters
        # are owned (and saved) once, under `backbone.`
        object.__setattr__(self, "encoder", encoder)
        self.num_classes = num_classes

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def loss(self, stage: Stage, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, stage: Stage, batch: Batch) -> torch.Tensor:
        """The training loss; a forward so DistributedDataParallel can wrap the method."""
        return self.loss(stage, batch)

    def classify(self, emb: torch.Tensor, stage: Stage | None = None) -> torch.Tensor | None:
        """[B, D] encoder embedding -> [B, C] logits, or None if this stage has no classifier yet."""
        raise NotImplementedError

    def outputs(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named embeddings to store and explore, from the encoder embedding."""
        return {"encoder": emb}

    def anchors(self) -> torch.Tensor | None:
        """[C, D] class anchors drawn with the embeddings (FLYP's class-prompt embeddings)."""
        return None

    def refresh(self) -> None:
        """Recompute anything derived from trainable weights (FLYP's class-text matrix) before eval."""

    def step_metrics(self) -> dict[str, torch.Tensor]:
        """Extra scalars of the last loss() call (detached, on device), logged as metrics next to the loss."""
        return {}

    def encode(self, x: torch.Tensor, train_encoder: bool = True) -> torch.Tensor:
        if train_encoder:
            return self.encoder(x)
        with torch.no_grad():
            was = self.encoder.training
            self.encoder.eval()
            out = self.encoder(x)
            self.encoder.train(was)
        return out


@register_objective("ce", "cross-entropy with a linear head", label="CE", colour="#4C78A8",
                    help="CE: cross-entropy with a linear head", trained_space="encoder", stages=("ce",),
                    zero_shot="option", wise_ft=True)
class CrossEntropyMethod(Method):
    """`ce`: a linear head on the embedding, cross-entropy on labelled samples.

    With `zero_shot_head` (a backbone with a text tower) the head starts as the zero-shot classifier, the
    class-prompt embeddings times the logit scale on the L2-normalised image embedding (the WiSE-FT paper's
    fine-tuning setup), so CE too has a zero-shot end to interpolate from."""

    name = "ce"

    def __init__(self, backbone, encoder, num_classes, *, zero_shot_head: bool = False, class_names=None, **_):
        super().__init__(backbone, encoder, num_classes)
        self.head = nn.Linear(backbone.embed_dim, num_classes)
        self.zero_shot_head = bool(zero_shot_head)
        if self.zero_shot_head:
            if not backbone.is_clip:
                raise InvalidConfig(f"a zero-shot CE head needs a backbone with a text tower; {backbone.name!r} has none "
                                    "(try lite0-minilm, test_clip or an open_clip MODEL/PRETRAINED name)")
            tokens = [backbone.tokenize([t.format(c) for c in class_names]) for t in PROMPT_TEMPLATES]
            with torch.no_grad():
                self.head.weight.copy_(backbone.logit_scale.exp().float() * prompt_embeddings(backbone, tokens))
                self.head.bias.zero_()

    def stages(self):
        return [Stage("ce", 1.0, head_params=list(self.head.parameters()))]

    def loss(self, stage, batch):
        return labelled_ce(self.classify(self.encode(batch.views[0])), batch)

    def classify(self, emb, stage=None):
        return self.head(F.normalize(emb, dim=-1) if self.zero_shot_head else emb)


@register_objective("lacvit", "label-aware contrastive (LaCViT): SupCon on a projection head, then a CE head",
                    label="LaCViT", colour="#F58518", help="LaCViT: label-aware contrastive, then a linear head",
                    trained_space="projection", stages=("contrastive", "head"))
class LaCViTMethod(Method):
    """`lacvit`: label-aware contrastive stage on an MLP projection, then a CE head stage."""

    name = "lacvit"

    def __init__(self, backbone, encoder, num_classes, *, temperature: float = 0.1, stage1_fraction: float = 0.7,
                 stage2_train_encoder: bool = False, proj_dim: int = 128, **_):
        super().__init__(backbone, encoder, num_classes)
        d = backbone.embed_dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim))  # D -> D -> 128
        self.head = nn.Linear(d, num_classes)
        self.supcon = SupConLoss(temperature)
        if not 0.0 < stage1_fraction < 1.0:
            raise InvalidConfig(f"LaCViT stage-1 fraction must be in (0, 1), not {stage1_fraction}")
        self.stage1_fraction = stage1_fraction
        self.stage2_train_encoder = stage2_train_encoder

    def stages(self):
        return [Stage("contrastive", self.stage1_fraction, views=2, global_loss=True, head_params=list(self.projection.parameters())),
                Stage("head", 1.0 - self.stage1_fraction, train_encoder=self.stage2_train_encoder,
                      head_params=list(self.head.parameters()), init_head_from_class_means=True)]

    def loss(self, stage, batch):
        if stage.name == "contrastive":
            z = torch.cat([F.normalize(self.projection(self.encode(v)), dim=-1) for v in batch.views])  # [2B, 128]
            labels = batch.labels.repeat(len(batch.views))
            if batch.labelled is not None:
                keep = batch.labelled.repeat(len(batch.views))
                z, labels = z[keep], labels[keep]
            return self.supcon(gather_with_local_grad(z), gather_with_local_grad(labels))
        logits = self.head(self.encode(batch.views[0], stage.train_encoder))
        return labelled_ce(logits, batch)

    def classify(self, emb, stage=None):
        return None if stage is not None and stage.name == "contrastive" else self.head(emb)

    @torch.no_grad()
    def init_head_from_class_means(self, means: torch.Tensor, mean_norm: float, temperature: float = 0.1) -> None:
        """head(e) = cos(e, mean_c) * |e| / (temperature * mean |e|): argmax is the nearest class mean.

        means: [C, D] L2-normalised class means of the encoder embedding.
        """
        self.head.weight.copy_(means / (temperature * max(mean_norm, 1e-6)))
        self.head.bias.zero_()

    def outputs(self, emb):
        return {"encoder": emb, "projection": F.normalize(self.projection(emb), dim=-1)}


def _check_flyp(cfg) -> None:
    if parse_trainable(cfg.trainable) == 0:
        raise InvalidConfig("FLYP fine-tunes the encoders: set trainable to 'all' or a number of last blocks, not 'frozen'")


@register_objective("flyp", "FLYP: CLIP loss against class prompts, both towers updated, WiSE-FT", label="FLYP",
                    colour="#54A24B", help="FLYP: CLIP loss against class prompts (needs a text tower)",
                    trained_space="image", stages=("flyp",), needs_text_tower=True, zero_shot="always", wise_ft=True,
                    check=_check_flyp)
class FLYPMethod(Method):
    """`flyp`: contrastive image / class-prompt fine-tuning of both towers (seed 004)."""

    name = "flyp"

    def __init__(self, backbone, encoder, num_classes, *, class_names: list[str], **_):
        super().__init__(backbone, encoder, num_classes)
        if not backbone.is_clip:
            raise InvalidConfig(f"FLYP needs a CLIP-style backbone with a text tower; {backbone.name!r} has none "
                                "(try lite0-minilm, test_clip or an open_clip MODEL/PRETRAINED name)")
        self.class_names = list(class_names)
        self.clip_loss = ClipLoss()
        self._train_tokens = backbone.tokenize([TRAIN_TEMPLATE.format(c) for c in self.class_names])
        self._eval_tokens = [backbone.tokenize([t.format(c) for c in self.class_names]) for t in PROMPT_TEMPLATES]
        self.register_buffer("class_text", torch.zeros(num_classes, backbone.embed_dim), persistent=False)
        self.refresh()

    def stages(self):
        return [Stage("flyp", 1.0, global_loss=True)]

    def loss(self, stage, batch):
        image = F.normalize(self.encode(batch.views[0]), dim=-1)  # [B, D]
        present = torch.unique(batch.labels)  # encode each class prompt once per batch
        text_all = F.normalize(self.backbone.encode_text(_select(self._train_tokens, present.cpu())), dim=-1)  # [U, D]
        index = torch.searchsorted(present, batch.labels)
        text = text_all[index]  # [B, D], row i = prompt of image i's class
        return self.clip_loss(image, text, self.backbone.logit_scale.exp())

    def classify(self, emb, stage=None):
        return self.backbone.logit_scale.exp().detach() * F.normalize(emb, dim=-1) @ self.class_text.T

    def outputs(self, emb):
        return {"image": F.normalize(emb, dim=-1)}

    def anchors(self):
        return self.class_text

    @torch.no_grad()
    def refresh(self):
        self.class_text = prompt_embeddings(self.backbone, self._eval_tokens).to(self.class_text.device)


@torch.no_grad()
def prompt_embeddings(backbone, tokens_per_template) -> torch.Tensor:
    """[C, D] class-prompt embeddings under the current text tower: mean over templates, re-normalised."""
    was = backbone.training
    backbone.eval()
    per_template = [F.normalize(backbone.encode_text(tokens).float(), dim=-1) for tokens in tokens_per_template]
    backbone.train(was)
    return F.normalize(torch.stack(per_template).mean(0), dim=-1)


def labelled_ce(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Cross-entropy of [B, C] `logits` over the batch's labelled samples (all of them outside semi-supervised
    runs); 0 with a graph when the batch has none. Public: objective plugins (content-style) use it."""
    labels = batch.labels
    if batch.labelled is not None:
        if not batch.labelled.any():
            return logits.sum() * 0.0
        logits, labels = logits[batch.labelled], labels[batch.labelled]
    return F.cross_entropy(logits.float(), labels)


def _select(tokens, index: torch.Tensor):
    """Rows `index` of a token tensor or of a dict of token tensors (HF tokenizers)."""
    if isinstance(tokens, dict):
        return {k: v[index] for k, v in tokens.items()}
    return tokens[index]


