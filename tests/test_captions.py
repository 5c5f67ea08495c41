"""VeCAF's CEA captions (core/captions.py): caption files, label-free pseudo-captions, the attention formula."""
import json

import numpy as np
import pytest

from core import captions as cap
from core import selection as sel
from core.errors import DatasetError


def _images(folder, classes=("cat", "dog"), n=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / c / f"img{i}.png")


def test_caption_files_parse_and_reject(tmp_path):
    (tmp_path / "captions.csv").write_text("path,caption\ncat/img1.png,a cat  on\ta sofa\n./dog/img0.png,a dog\n")
    assert cap.read_caption_file(tmp_path) == {"cat/img1.png": "a cat on a sofa", "dog/img0.png": "a dog"}
    (tmp_path / "captions.csv").write_text("file,text\ncat/img1.png,x\n")
    with pytest.raises(DatasetError, match="path,caption"):
        cap.read_caption_file(tmp_path)
    (tmp_path / "captions.csv").unlink()
    (tmp_path / "captions.jsonl").write_text(json.dumps({"path": "cat/img0.png", "caption": "<b>hi</b>"}) + "\n\nnot json\n")
    with pytest.raises(DatasetError, match="line 3"):
        cap.read_caption_file(tmp_path)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"path": "cat/img0.png", "caption": "<b>hi</b>"}) + "\n")
    assert cap.read_caption_file(tmp_path) == {"cat/img0.png": "<b>hi</b>"}  # kept as inert text
    assert cap.read_caption_file(tmp_path / "nothing") is None


def test_imported_dataset_keeps_its_captions_in_image_order(home, tmp_path):
    from core.dataset_import import import_dataset
    from core.datasets import load_dataset

    src = tmp_path / "pets"
    _images(src)
    (src / "captions.csv").write_text("path,caption\ncat/img2.png,a sleepy cat\ndog/img1.png,a wet dog\n")
    report = import_dataset(src, "pets", root=home)
    assert not any("captions" in path for path, _ in report.skipped)
    assert (home / "datasets" / "pets" / "captions.csv").exists()
    data = load_dataset("pets", home)
    caps = cap.dataset_captions("pets", home, len(data.labels))
    paths = cap.dataset_image_paths("pets", home)
    assert caps[paths.index("cat/img2.png")] == "a sleepy cat" and caps[paths.index("dog/img1.png")] == "a wet dog"
    assert sum(c is not None for c in caps) == 2
    assert cap.dataset_captions("digits", home, 10) is None  # built-in datasets carry none


def test_cea_formula_and_label_informed_equivalence():
    rng = np.random.default_rng(0)
    f = sel.normalise(rng.normal(size=(40, 6)))
    t = sel.normalise(rng.normal(size=(4, 6)))
    y = np.arange(40) % 4
    aug, alpha = cap.cross_attentive_augment(f, t[y], eta=0.5, scale=10.0)
    logits = 10.0 * f @ t.T
    attn = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert alpha == pytest.approx(attn[np.arange(40), y])  # distinct captions = the class prompts: the softmax over them
    assert aug == pytest.approx(f - 0.5 * alpha[:, None] * (f - t[y]))
    assert sel.language_augment(f, y, t, 0.5, 10.0)[1] == pytest.approx(alpha)
    assert cap.with_target(["a photo of a cat."], "It is a  snowy day!") == ["a photo of a cat. It is a snowy day!"]


def test_pseudo_captions_use_no_label_and_differ_within_a_class(home):
    """The Lite0 ImageNet head's top-2 classes per image: two images of one class get different caption embeddings."""
    pool = sel.load_pool("test_clip", "digits", n_per_class=12, root=home, device="cpu", captions="pseudo")
    assert pool.caption_source == "pseudo" and pool.captions.shape[0] == len(pool.ids)
    assert all(t.startswith("a photo of a ") and ", or a " in t for t in pool.caption_texts)
    names = set(cap.imagenet_names())
    assert all(t[len("a photo of a "):-1].split(", or a ")[0] in names for t in pool.caption_texts)
    differs = []
    for c in np.unique(pool.labels):
        rows = np.flatnonzero(pool.labels == c)
        differs.append(len(np.unique(pool.captions[rows].round(5), axis=0)) > 1)
    assert sum(differs) >= 5  # within most classes the captions are not one shared text point
    # computed from the images alone (the ImageNet head, cached per image set): a second load gives the same texts
    again = sel.load_pool("test_clip", "digits", n_per_class=12, root=home, device="cpu", captions="pseudo")
    assert again.caption_texts == pool.caption_texts
    rec = sel.select_from_pool(pool, "vecaf", 15, seed=0, steps=40)
    assert rec["language"] and rec["captions"] == "pseudo" and len(set(rec["selected"])) == 15
    assert all(e.startswith("a photo of a ") for e in rec["caption_examples"])
    informed = sel.load_pool("test_clip", "digits", n_per_class=12, root=home, device="cpu", captions="label-informed",
                             target_caption="It is a snowy day!")
    assert informed.caption_source == "label-informed" and informed.caption_texts[0].endswith("It is a snowy day!")
    with pytest.raises(Exception, match="CLIP-style"):
        sel.load_pool("test_vit", "digits", n_per_class=5, root=home, device="cpu", captions="pseudo")
