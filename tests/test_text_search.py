"""core/text_search.py: which runs can be searched, prompt handling, the run's own text towers, the
nearest images and the phrase's place in a projection, on a real tiny FLYP run."""
import sys
from pathlib import Path

import numpy as np
import pytest

from core import text_search as ts
from core.errors import InvalidConfig

sys.path.insert(0, str(Path(__file__).parent))
from explore_runs import tiny_runs  # noqa: E402


@pytest.fixture(scope="module")
def flyp(tmp_path_factory):
    """(RunView of a finished tiny FLYP run on digits, the dataset's prompt names)."""
    from core import report
    from core.datasets import load_dataset
    from core.store import RunStore

    home, ids = tiny_runs(tmp_path_factory.getbasetemp(), ("flyp",))
    view = report.load_run_view(RunStore(home), ids["flyp"], "val")
    return view, load_dataset(view.dataset, home).prompt_names


def test_which_runs_have_text_search():
    assert ts.unavailable_reason({"objective": "flyp", "backbone": "test_clip"}) is None
    assert ts.unavailable_reason({"objective": "ce", "backbone": "test_clip", "ce_zero_shot_head": True}) is None
    no_tower = ts.unavailable_reason({"objective": "ce", "backbone": "test_vit"})
    assert "text tower" in no_tower and "test_vit" in no_tower
    fresh_head = ts.unavailable_reason({"objective": "lacvit", "backbone": "test_clip"})
    assert "lacvit" in fresh_head and "own head" in fresh_head
    assert ts.unavailable_reason({"objective": "ce", "backbone": "test_clip"}) is not None  # a fresh linear head


def test_prompts_follow_the_zero_shot_templates():
    from core.objectives import PROMPT_TEMPLATES

    assert ts.prompts_for("ankle boot") == [t.format("ankle boot") for t in PROMPT_TEMPLATES]
    assert ts.prompts_for("a photo of a sandal") == ["a photo of a sandal"]
    assert ts.prompts_for("red shoes on wet grass") == ["red shoes on wet grass"]  # four words: a caption
    assert ts.prompts_for("sandal", "never") == ["sandal"]
    assert len(ts.prompts_for("a sandal", "always")) == len(PROMPT_TEMPLATES)
    with pytest.raises(InvalidConfig, match="auto, always or never"):
        ts.prompts_for("sandal", "sometimes")
    for bad, match in (("   ", "type a phrase"), ("x" * 201, "keep it to 200")):
        with pytest.raises(InvalidConfig, match=match):
            ts.check_phrase(bad)
    assert ts.check_phrase("  a \n photo ") == "a photo"


def test_text_towers_are_the_runs_own_before_and_after(flyp):
    view, names = flyp
    after = ts.load_text_tower(view.dir, view.config, "after")
    before = ts.load_text_tower(view.dir, view.config, "before")
    assert ts.load_text_tower(view.dir, view.config, "after") is after  # cached: not reloaded per keystroke
    got_after = np.stack([ts.embed_phrase(after, n) for n in names])
    got_before = np.stack([ts.embed_phrase(before, n) for n in names])
    # a class name searches exactly as the run's class prompt: FLYP's stored anchors, before and after
    np.testing.assert_allclose(got_after, view.after.anchors.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(got_before, view.before.anchors.astype(np.float32), atol=2e-3)
    assert np.abs(got_after - got_before).max() > 1e-2  # the checkpoint's fine-tuned text tower, not the loaded one
    with pytest.raises(InvalidConfig, match="own head"):
        ts.load_text_tower(view.dir, {**view.config, "objective": "lacvit"}, "after")


def test_nearest_images_of_a_class_prompt_rank_by_cosine_to_the_runs_class_prompt(flyp):
    view, names = flyp
    tower = ts.load_text_tower(view.dir, view.config, "after")
    es = view.after
    vectors = es.vectors["image"].astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    row = {int(i): k for k, i in enumerate(es.ids)}
    for c, name in enumerate(names):
        near = ts.nearest_images(es.vectors["image"], es.ids, es.labels, ts.embed_phrase(tower, name), k=5)
        assert len(near) == 5 and [n["cos"] for n in near] == sorted((n["cos"] for n in near), reverse=True)
        assert all(es.labels[row[n["id"]]] == n["label"] for n in near)
        # the same images FLYP's own class prompt (the stored anchor, i.e. its classifier's row c) ranks first
        by_anchor = np.argsort(-(unit @ es.anchors[c].astype(np.float32)))[:5]
        assert len({n["id"] for n in near} & set(es.ids[by_anchor].tolist())) >= 4  # float16 anchors: a near tie may swap


def test_pca_places_the_phrase_exactly_and_tsne_approximately(flyp):
    from core import report

    view, _ = flyp
    data = report.explore_data(view, output="image", method="pca", dims=2)
    for phase, pts in zip(data["phases"], data["points"]):  # the before pane is Procrustes-aligned onto after
        es = view.before if phase == "before" else view.after
        rows = report.positions(es.ids, data["ids"])
        vectors = es.vectors["image"][rows]
        for i in (0, 7, len(rows) - 1):  # an image's own vector lands on that image's drawn point
            xy, exact = ts.place_in_projection(vectors[i], vectors, pts, "pca")
            assert exact
            np.testing.assert_allclose(xy, pts[i], atol=1e-3 * (1 + np.abs(pts).max()))
    pts = data["points"][-1]
    xy, exact = ts.place_in_projection(vectors[3], vectors, pts, "tsne")
    assert not exact and np.all(xy >= pts.min(0)) and np.all(xy <= pts.max(0))


def test_search_covers_both_phases_and_refuses_runs_without_a_tower(flyp):
    from core import report

    view, names = flyp
    data = report.explore_data(view, output="image", method="pca", dims=2)
    res = ts.search(view, names[2], output="image", ids=data["ids"], panes=dict(zip(data["phases"], data["points"])),
                    method="pca", k=4)
    assert set(res["phases"]) == {"before", "after"} and len(res["prompts"]) == 3
    assert all(len(p["nearest"]) == 4 and p["exact"] and len(p["xy"]) == 2 for p in res["phases"].values())
    lacvit = report.RunView("x", {**view.config, "objective": "lacvit"}, {}, view.dir, "val", view.after)
    with pytest.raises(InvalidConfig, match="own head"):
        ts.search(lacvit, "a photo", output="image", ids=data["ids"], panes={}, method="pca")


def test_a_ce_run_from_the_zero_shot_head_is_searched_in_its_encoder_space(tmp_path):
    from core import report
    from core.store import RunStore
    from core.train import TrainConfig, train

    store = RunStore(tmp_path)
    r = train(TrainConfig(objective="ce", ce_zero_shot_head=True, backbone="test_clip", dataset="digits", n_per_class=8,
                          eval_per_class=6, steps=4, batch_size=16, snapshots=0, wise_alphas=0), store=store, root=tmp_path)
    assert r["status"] == "finished", r
    view = report.load_run_view(store, r["run_id"], "val")
    data = report.explore_data(view, output="encoder", method="pca", dims=2)
    res = ts.search(view, "a photo of a handwritten digit one", output="encoder", ids=data["ids"],
                    panes=dict(zip(data["phases"], data["points"])), method="pca")
    assert res["prompts"] == ["a photo of a handwritten digit one"]
    assert set(res["phases"]) == {"before", "after"}
    assert all(len(p["nearest"]) == ts.NEAREST_K and p["exact"] for p in res["phases"].values())
