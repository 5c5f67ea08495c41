"""Text search in a run's image embedding space (issue 17.6): type a phrase, see the nearest images
and where the phrase lands in the projection.

    reason = unavailable_reason(config)            # None when the run has a text tower that speaks to its images
    tower = load_text_tower(run_dir, config, "after")   # the fine-tuned text tower (cached per run)
    q = embed_phrase(tower, "a photo of a sandal")      # [D] unit vector, prompts as the objective uses them
    near = nearest_images(vectors, ids, labels, q, k=12)  # [{"id", "label", "cos"}], cosine, best first
    xy, exact = place_in_projection(q, vectors, points, "pca")

Which runs: FLYP (both towers trained against each other with the CLIP loss) and CE with the zero-shot
head (its head *is* the text tower's class prompts, so the image embedding stays in the joint space).
Other objectives on a CLIP backbone train the image tower through a fresh head or projection, so the
untouched text tower no longer describes the image space; a search there would look precise and mean
little, and the page says why it is absent instead.

The text tower after fine-tuning is the run's checkpoint loaded the way resuming and WiSE-FT load it
(`core.train.load_method_weights` into the run's method); before fine-tuning it is the backbone as
created from the run's settings. Both run on the CPU: one phrase is a few milliseconds of a small text
tower, and the accelerator belongs to the training queue.

Prompt handling follows the zero-shot head (`core.objectives.prompt_embeddings`): a bare name
("sandal", "ankle boot") is put through the same templates as the class prompts and averaged, so
searching a class name gives exactly that class's prompt embedding; a phrase that already reads as a
caption ("a photo of a sandal", "red shoes on grass") is embedded as typed.

Where the phrase lands: PCA places it exactly (the pane's PCA refitted on the same rows, then the same
similarity transform that aligned the pane). UMAP and t-SNE layouts are not kept as fitted models, so
the phrase is put at the similarity-weighted mean position of its 10 most similar images
(`core.projections` places FLYP's anchors under t-SNE the same way) and reported as approximate.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import EmbedLabError, InvalidConfig
from .metrics import l2_normalize

MAX_PHRASE_CHARS = 200  # CLIP tokenisers cut at 77 tokens anyway; a longer text is a paste accident
ARTICLES = ("a", "an", "the")  # a phrase starting with one of these reads as a caption, not a bare name
NEAREST_K = 12  # images shown per pane
PLACE_K = 10  # images whose positions place the phrase in UMAP / t-SNE
_CACHE_SIZE = 2  # towers kept in memory: one run's before + after (a whole CLIP model each: ~600 MB for ViT-B/32)


def unavailable_reason(config: dict) -> str | None:
    """None when text search applies to a run with `config`, else the one-line reason it does not."""
    from . import backbones as bb
    from .objectives import registered

    backbone, objective = config.get("backbone", ""), config.get("objective", "")
    if not backbone or not bb.is_clip_name(backbone):
        return (f"Text search needs a backbone with a text tower; this run's {backbone or 'backbone'} has none "
                "(FLYP or CE with the zero-shot head on test_clip, lite0-minilm or an open_clip model have one).")
    entry = registered().get(objective)
    if entry is not None and entry.has_zero_shot(config):
        return None  # the run started from its text tower's zero-shot classifier and trains against it
    return (f"This run's objective ({objective or 'unknown'}) trains the image tower through its own head, so the "
            "untouched text tower no longer describes its image space. Text search is offered for FLYP runs and "
            "CE runs started from the zero-shot head.")


def check_phrase(phrase: str) -> str:
    """The phrase stripped, or InvalidConfig with a one-line message."""
    text = " ".join(str(phrase).split())
    if not text:
        raise InvalidConfig("type a phrase to search for, e.g. 'a photo of a sandal'")
    if len(text) > MAX_PHRASE_CHARS:
        raise InvalidConfig(f"the phrase is {len(text)} characters long; keep it to {MAX_PHRASE_CHARS}")
    return text


def prompts_for(phrase: str, templates: str = "auto") -> list[str]:
    """The texts the phrase is embedded as. templates: 'auto' (templates for a bare name of at most
    three words that does not start with an article), 'always' or 'never'."""
    from .objectives import PROMPT_TEMPLATES

    if templates not in ("auto", "always", "never"):
        raise InvalidConfig(f"templates must be auto, always or never, not {templates!r}")
    words = phrase.split()
    bare = len(words) <= 3 and words[0].lower() not in ARTICLES
    if templates == "always" or (templates == "auto" and bare):
        return [t.format(phrase) for t in PROMPT_TEMPLATES]
    return [phrase]


# ------------------------------------------------------------------------------------ text towers
@dataclass
class TextTower:
    """A backbone whose text tower embeds phrases for one phase ('before' or 'after') of a run."""

    backbone: object  # core.backbones.Backbone, on the CPU, eval mode
    phase: str
    dim: int


_TOWERS: OrderedDict[tuple, TextTower] = OrderedDict()
_TOWERS_LOCK = threading.Lock()


def load_text_tower(run_dir: Path, config: dict, phase: str = "after") -> TextTower:
    """The run's text tower as it is `phase` fine-tuning, cached per (run folder, phase, checkpoint
    time): a page rerun or another session reuses it; a resumed run's newer checkpoint is reloaded."""
    from .paths import CHECKPOINT

    if phase not in ("before", "after"):
        raise InvalidConfig(f"phase must be before or after, not {phase!r}")
    if reason := unavailable_reason(config):
        raise InvalidConfig(reason)
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT
    stamp = ckpt.stat().st_mtime_ns if phase == "after" and ckpt.exists() else 0
    key = (str(run_dir.resolve()), phase, stamp)
    with _TOWERS_LOCK:  # one build at a time: two sessions asking at once share the first one's result
        tower = _TOWERS.get(key)
        if tower is None:
            tower = _TOWERS[key] = _build_tower(run_dir, config, phase)
            while len(_TOWERS) > _CACHE_SIZE:
                _TOWERS.popitem(last=False)
        _TOWERS.move_to_end(key)
        return tower


def _build_tower(run_dir: Path, config: dict, phase: str) -> TextTower:
    import torch

    from . import backbones as bb
    from .embeddings import load_run_embeddings

    backbone = bb.create_backbone(config["backbone"], weights=config.get("weights", "pretrained"),
                                  image_size=config.get("image_size"), trainable="frozen")
    if phase == "after":
        from .objectives import create_method
        from .train import load_method_weights

        after = load_run_embeddings(run_dir, "after", "val")
        if after is None:
            raise EmbedLabError(f"run folder {run_dir.name} has no stored embeddings yet")
        # the run's method around the backbone, so the checkpoint's names (backbone.*, head.*) match as saved
        method = create_method(config["objective"], backbone, bb.ImageEncoder(backbone), len(after.classes),
                               class_names=list(after.classes), zero_shot_head=bool(config.get("ce_zero_shot_head")))
        load_method_weights(method, run_dir)
    backbone.to(torch.device("cpu")).eval()
    with torch.inference_mode():
        dim = int(backbone.encode_text(backbone.tokenize(["a photo"])).shape[-1])
    return TextTower(backbone, phase, dim)


def embed_phrase(tower: TextTower, phrase: str, templates: str = "auto") -> np.ndarray:
    """[D] unit vector: the phrase under the tower, as `prompt_embeddings` embeds a class prompt
    (per-prompt L2-normalised, averaged over the prompts, re-normalised)."""
    import torch

    from .objectives import prompt_embeddings

    prompts = prompts_for(check_phrase(phrase), templates)
    model = tower.backbone
    with torch.inference_mode():
        vec = prompt_embeddings(model, [model.tokenize([p]) for p in prompts])[0]
    return vec.float().cpu().numpy()


# ------------------------------------------------------------------------- search and placement
def nearest_images(vectors: np.ndarray, ids: np.ndarray, labels: np.ndarray, query: np.ndarray,
                   k: int = NEAREST_K) -> list[dict]:
    """The k rows most similar to `query` (cosine), best first: [{"id", "label", "cos"}]."""
    v = l2_normalize(np.asarray(vectors, np.float32))
    q = np.asarray(query, np.float32).reshape(-1)
    if v.shape[1] != q.shape[0]:
        raise EmbedLabError(f"the text tower's {q.shape[0]}-d space is not this output's {v.shape[1]}-d space")
    sims = v @ (q / max(float(np.linalg.norm(q)), 1e-12))
    k = min(int(k), len(v))
    top = np.argsort(-sims, kind="stable")[:k]
    return [{"id": int(ids[i]), "label": int(labels[i]), "cos": float(sims[i])} for i in top]


def place_in_projection(query: np.ndarray, vectors: np.ndarray, points: np.ndarray, method: str, *,
                        seed: int = 0, k: int = PLACE_K) -> tuple[np.ndarray, bool]:
    """Where `query` lands in a drawn pane: (position [dims], exact).

    vectors: the pane's rows (the ones projected, in the drawn order); points: their drawn positions
    (after any alignment). PCA: the PCA refitted on the same rows as the projection fitted it, mapped by
    the similarity transform that takes the refitted rows onto the drawn ones (exact). UMAP / t-SNE: the
    similarity-weighted mean position of the k most similar rows (approximate).
    """
    from . import projections as pj

    x = l2_normalize(np.asarray(vectors, np.float32))
    q = l2_normalize(np.asarray(query, np.float32).reshape(1, -1))
    pts = np.asarray(points, np.float32)
    if method == "pca" and len(x) > pts.shape[1]:
        fitted, placed = pj._pca(x, pts.shape[1], seed, q)
        t = pj.procrustes(np.asarray(fitted, np.float64), pts.astype(np.float64))
        return pj.apply_transform(np.asarray(placed, np.float64), t)[0], True
    return pj._nearest_place(x, pts, q, k=k)[0].astype(np.float32), False


def search(view, phrase: str, *, output: str, ids: np.ndarray, panes: dict[str, np.ndarray], method: str,
           templates: str = "auto", k: int = NEAREST_K, seed: int = 0) -> dict:
    """Text search in every phase of a run view (core.report.RunView) that has `output`.

    ids: the drawn sample ids; panes: phase -> drawn positions [N, dims] of those ids.
    Returns {"phrase", "prompts", "phases": {phase: {"nearest": [...], "xy": [dims] or None, "exact": bool}}}.
    """
    from .report import positions

    text = check_phrase(phrase)
    if reason := unavailable_reason(view.config):
        raise InvalidConfig(reason)
    out = {"phrase": text, "prompts": prompts_for(text, templates), "phases": {}}
    for phase, es in (("before", view.before), ("after", view.after)):
        if es is None or output not in es.vectors:
            continue
        q = embed_phrase(load_text_tower(view.dir, view.config, phase), text, templates)
        if q.shape[0] != es.vectors[output].shape[1]:
            continue  # an output outside the joint space (none today for FLYP / zero-shot CE)
        entry = {"nearest": nearest_images(es.vectors[output], es.ids, es.labels, q, k), "xy": None, "exact": False}
        if phase in panes and len(ids):
            rows = positions(es.ids, ids)
            entry["xy"], entry["exact"] = place_in_projection(q, es.vectors[output][rows], panes[phase], method, seed=seed)
        out["phases"][phase] = entry
    return out
