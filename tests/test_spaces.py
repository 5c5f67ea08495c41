"""core/spaces.py and the stored spaces of real tiny runs: before has every space, the before model's own
predictions (nearest class mean / zero-shot) with their source recorded."""
import numpy as np
import pytest

from core import spaces
from core.embeddings import EmbeddingSet, embeddings_dir, load_embeddings, save_embeddings

from explore_runs import tiny_runs


# ------------------------------------------------------------------------------ pure functions
def test_trained_space_of_each_objective():
    assert [spaces.trained_space(o) for o in ("ce", "lacvit", "flyp", "content-style")] == \
        ["encoder", "projection", "image", "content"]
    assert spaces.trained_space("not-an-objective") == "encoder"


def test_default_space_falls_back_when_the_trained_space_is_missing():
    assert spaces.default_space("lacvit", ["encoder", "projection", "logits"]) == "projection"
    assert spaces.default_space("lacvit", ["encoder"]) == "encoder"  # an old LaCViT run
    assert spaces.default_space("flyp", ["image", "logits"]) == "image"
    assert spaces.default_space("ce", ["weird"]) == "weird"


def test_shared_spaces_are_those_every_run_stored():
    assert spaces.shared_spaces([["encoder", "projection", "logits"], ["encoder", "logits"], ["image", "encoder", "logits"]]) \
        == ["encoder", "logits"]
    assert spaces.shared_spaces([["image", "logits"], ["encoder"]]) == []


def test_nearest_class_mean_picks_the_closest_mean_by_cosine():
    means = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    x = np.array([[5.0, 0.1], [0.2, 3.0], [-0.1, -0.01], [0.0, -1.0]])
    preds, scores = spaces.nearest_class_mean(x, means * 7)  # the means' norm does not matter
    assert preds.tolist()[:3] == [0, 1, 2]
    assert scores.shape == (4, 3) and np.abs(scores).max() <= 1 + 1e-6
    assert scores[0, 0] == pytest.approx(5 / np.hypot(5, 0.1), rel=1e-5)


def test_pred_source_round_trips_and_old_sets_load_without_it(tmp_path):
    es = EmbeddingSet("val", np.arange(3), np.array([0, 1, 0]), {"encoder": np.eye(3, dtype=np.float16)}, ["a", "b"],
                      preds=np.array([0, 1, 1]), pred_source="nearest class mean")
    save_embeddings(tmp_path / "s", es)
    assert load_embeddings(tmp_path / "s").pred_source == "nearest class mean"
    meta = tmp_path / "s" / "meta.json"
    meta.write_text(meta.read_text().replace(', "pred_source": "nearest class mean"', ""))  # a set from before the field
    assert load_embeddings(tmp_path / "s").pred_source is None
    assert spaces.pred_source_text(None) == "no predictions stored"


# ------------------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("objective, trained, source", [("ce", "encoder", "nearest class mean"),
                                                        ("lacvit", "projection", "nearest class mean"),
                                                        ("flyp", "image", "zero-shot")])
def test_before_stores_every_space_after_has_with_the_before_models_own_predictions(runs, objective, trained, source):
    home, ids = runs
    run_dir = home / "runs" / ids[objective]
    for split in ("val", "test", "ood"):
        before = load_embeddings(embeddings_dir(run_dir, "before", split))
        after = load_embeddings(embeddings_dir(run_dir, "after", split))
        assert set(before.vectors) == set(after.vectors) and {trained, "logits"} <= set(before.vectors)
        assert before.pred_source == source and after.pred_source == "head"
        n_classes = len(after.classes)
        assert before.vectors["logits"].shape == after.vectors["logits"].shape == (len(after), n_classes)
        # the stored predictions are the argmax of the stored class scores, before and after (float16 storage
        # may flip a near tie: random-init test models give close scores)
        for es in (before, after):
            assert (es.vectors["logits"].astype(np.float32).argmax(1) == es.preds).mean() >= 0.9


@pytest.mark.parametrize("objective", ["ce", "lacvit"])
def test_before_predictions_are_the_nearest_train_class_mean_in_the_encoder_space(runs, objective):
    """Recompute the class means from the run's own training split and pretrained backbone: same predictions."""
    import json

    from core.train import TrainConfig, _class_means, build_session, validate

    home, ids = runs
    run_dir = home / "runs" / ids[objective]
    cfg = validate(TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())), home)
    s = build_session(cfg, home)  # the pretrained model: what 'before' embedded
    means = _class_means(s, per_class=spaces.NCM_PER_CLASS)[0].cpu().numpy()
    before = load_embeddings(embeddings_dir(run_dir, "before", "val"))
    preds, _ = spaces.nearest_class_mean(before.vectors["encoder"], means)
    agree = (preds == before.preds).mean()
    assert agree >= 0.98, agree  # float16 storage may flip a near tie
    assert 0.2 < before.accuracy < 1.0  # a real classifier on digits, not chance (0.1) and not the after model
