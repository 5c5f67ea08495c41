"""core/train.py: every objective trains for real (tiny runs), and the loop's reliability paths:
cancel, divergence, injected faults, checkpoints and resume.

The runs use test_vit / test_clip on `digits` (8x8 images), a fixed seed and per-step logging, so
the losses they log are deterministic on a given machine.
"""
import dataclasses
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import core.train as train_mod
from core.embeddings import compute_embeddings, embeddings_dir, load_embeddings
from core.errors import InvalidConfig, UnknownName
from core.store import RunStore
from core.train import CHECKPOINT, TRAINER_STATE, TrainConfig, build_session, load_method_weights, train, validate

from helpers import TINY, Recorded, first_last_mean, one_torch_thread, run_train


@pytest.fixture(scope="module")
def env(_session_home, tmp_path_factory):
    """(store, root): runs go to a private store; datasets and caches are shared with the session."""
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        # every logged step reaches the store at once: the curves below compare individual early and late steps
        mp.setattr(train_mod, "DB_FLUSH_INTERVAL_S", 0.0, raising=False)
        store = RunStore(tmp_path_factory.mktemp("train-runs"))
        yield store, _session_home


def _cfg(**overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, **overrides})


def _checkpoint_step(run_dir) -> int:
    with safe_open(str(run_dir / CHECKPOINT), framework="pt") as f:
        return int(f.metadata()["step"])


# ------------------------------------------------------------------------------ the runs
CE = dict(objective="ce", n_per_class=None, steps=60, batch_size=64, lr=3e-3, backbone_lr=3e-3)


@pytest.fixture(scope="module")
def ce_run(env) -> Recorded:
    store, root = env
    return run_train(_cfg(**CE), store, root)


@pytest.fixture(scope="module")
def lacvit_run(env) -> Recorded:
    store, root = env
    return run_train(_cfg(objective="lacvit", steps=40, lr=1e-2, backbone_lr=1e-3), store, root)


@pytest.fixture(scope="module")
def flyp_run(env) -> Recorded:
    """Without colour jitter: a random-init tiny CLIP on 8x8 digits learns its first 40 steps from intensity cues
    that SupCon's jitter takes away (loss -1 % with it, -14 % without); this run checks the loop, not the views."""
    import dataclasses as dc

    from core.transforms import Preprocess

    store, root = env
    real = Preprocess.train
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Preprocess, "train", lambda self, images, g=None: real(dc.replace(self, jitter_p=0.0), images, g))
        return run_train(_cfg(objective="flyp", backbone="test_clip", steps=40, lr=1e-2), store, root)


def test_ce_trains_and_the_loss_falls(ce_run):
    r = ce_run.result
    assert r["status"] == "finished", r["error"]
    assert [e["stage"] for e in ce_run.of("stage")] == ["ce"]
    assert [e["step"] for e in ce_run.steps] == list(range(1, 61))
    first, last = first_last_mean(ce_run.losses())
    assert last < 0.8 * first, (first, last)
    assert ce_run.events[-1]["type"] == "done" and ce_run.events[-1]["status"] == "finished"


def test_a_short_real_run_beats_chance(ce_run):
    """10 classes: chance is 0.1. All of test_vit trains on the 1,259 digits training images."""
    r = ce_run.result
    assert r["val_acc"] >= 0.5 and r["test_acc"] >= 0.4, r
    assert (r["steps"], r["train_images"], r["objective"], r["backbone"], r["dataset"]) == (60, 1259, "ce", "test_vit", "digits")
    assert r["seconds"] > 0


def test_ce_run_is_stored(env, ce_run):
    store, _ = env
    run_id = ce_run.result["run_id"]
    rec = store.get(run_id)
    assert rec.status == "finished" and rec.error is None
    assert rec.summary["val_acc"] == ce_run.result["val_acc"]
    assert rec.progress["step"] == 60
    metrics = store.metrics(run_id)
    assert [s for s, _ in metrics["loss"]] == list(range(1, 61))
    assert [v for _, v in metrics["loss"]] == pytest.approx(ce_run.losses())
    evals = ce_run.of("eval")
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert [s for s, _ in metrics["val_acc"]] == [e["step"] for e in evals]
    run_dir = store.run_dir(run_id)
    for phase in ("before", "after"):
        for split in ("val", "test"):
            es = load_embeddings(embeddings_dir(run_dir, phase, split))
            assert es.vectors["encoder"].shape == (100, 64) and len(es.labels) == 100
    before = load_embeddings(embeddings_dir(run_dir, "before", "val"))
    assert before.pred_source == "nearest class mean" and before.preds is not None  # not the untrained head's noise
    assert set(before.vectors) == {"encoder", "logits"} and before.vectors["logits"].shape == (100, 10)
    assert load_embeddings(embeddings_dir(run_dir, "after", "val")).accuracy == ce_run.result["val_acc"]
    assert _checkpoint_step(run_dir) == 60 and (run_dir / TRAINER_STATE).exists()


def test_checkpoint_reproduces_the_stored_predictions(env, ce_run):
    store, root = env
    run_dir = store.run_dir(ce_run.result["run_id"])
    s = build_session(validate(_cfg(**CE), root), root)
    fresh = compute_embeddings(s.method, s.sources["val"], s.parts["val"], s.device)
    meta = load_method_weights(s.method, run_dir)
    assert meta["step"] == "60"
    loaded = compute_embeddings(s.method, s.sources["val"], s.parts["val"], s.device)
    stored = load_embeddings(embeddings_dir(run_dir, "after", "val"))
    assert np.array_equal(loaded.preds, stored.preds)
    assert not np.array_equal(fresh.vectors["encoder"], stored.vectors["encoder"])


def test_lacvit_runs_both_stages_and_each_loss_falls(lacvit_run):
    r = lacvit_run.result
    assert r["status"] == "finished", r["error"]
    stages = lacvit_run.of("stage")
    assert [(e["stage"], e["steps"]) for e in stages] == [("contrastive", 28), ("head", 12)]  # 70% / 30% of 40
    assert [e["step"] for e in lacvit_run.steps] == list(range(1, 41))
    assert {e["stage"] for e in lacvit_run.steps if e["step"] <= 28} == {"contrastive"}
    contrastive_first, contrastive_last = first_last_mean(lacvit_run.losses("contrastive"))
    assert contrastive_last < 0.97 * contrastive_first, (contrastive_first, contrastive_last)
    head_first, head_last = first_last_mean(lacvit_run.losses("head"))
    assert head_last < 0.97 * head_first, (head_first, head_last)
    # no classifier during the contrastive stage: evaluation falls back to nearest class means
    evals = lacvit_run.of("eval")
    assert all("val_centroid_acc" in e and "val_acc" not in e for e in evals if e["step"] <= 28)
    assert "val_acc" in evals[-1] and r["val_acc"] is not None


def test_lacvit_stores_projection_embeddings(env, lacvit_run):
    store, _ = env
    es = load_embeddings(embeddings_dir(store.run_dir(lacvit_run.result["run_id"]), "after", "val"))
    assert set(es.vectors) == {"encoder", "projection", "logits"}  # logits: the class scores of its head
    assert es.vectors["projection"].shape == (100, 128)
    np.testing.assert_allclose(np.linalg.norm(es.vectors["projection"].astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_flyp_trains_and_reports_zero_shot_and_wise_ft(flyp_run):
    r = flyp_run.result
    assert r["status"] == "finished", r["error"]
    assert [e["stage"] for e in flyp_run.of("stage")] == ["flyp"]
    first, last = first_last_mean(flyp_run.losses())
    assert last < 0.97 * first, (first, last)
    assert 0.0 <= r["zeroshot_acc"] <= 1.0
    curve = r["wise_ft"]
    assert [p["alpha"] for p in curve] == [round(a / 10, 3) for a in range(11)]
    # alpha = 0 puts back exactly the zero-shot weights (1 * theta0 + 0 * theta1 is theta0 bit for
    # bit) and alpha = 1 exactly the fine-tuned ones; evaluation is deterministic on the CPU, so the
    # two ends must reproduce zeroshot_acc and val_acc. The tolerance is one val image (of 100),
    # room for a non-deterministic GPU kernel, not for a wrong interpolation.
    one_image = 1 / 100 + 1e-9
    assert curve[0]["val_acc"] == pytest.approx(r["zeroshot_acc"], abs=one_image)
    assert curve[-1]["val_acc"] == pytest.approx(r["val_acc"], abs=one_image)
    assert r["val_acc"] > r["zeroshot_acc"]  # random-init test_clip: fine-tuning must help


def test_every_run_records_val_test_and_ood_accuracy_and_its_shift(env, ce_run):
    """The OOD split is the test split under the default shift (mix:3 on digits), through the same input
    path; the trained model loses accuracy on it."""
    store, _ = env
    r = ce_run.result
    assert r["ood_shift"] == "mix:3" and store.get(r["run_id"]).summary["ood_acc"] == r["ood_acc"]
    run_dir = store.run_dir(r["run_id"])
    test = load_embeddings(embeddings_dir(run_dir, "after", "test"))
    for phase in ("before", "after"):
        ood = load_embeddings(embeddings_dir(run_dir, phase, "ood"))
        assert ood.split == "ood" and np.array_equal(ood.ids, test.ids) and np.array_equal(ood.labels, test.labels)
        assert not np.array_equal(ood.vectors["encoder"], load_embeddings(embeddings_dir(run_dir, phase, "test")).vectors["encoder"])
    assert load_embeddings(embeddings_dir(run_dir, "after", "ood")).accuracy == r["ood_acc"]
    assert r["ood_acc"] < r["test_acc"] - 0.1, r  # really shifted: the fine-tuned model drops on it


def test_wise_ft_endpoints_are_the_zero_shot_and_fine_tuned_models_on_both_axes(env, flyp_run):
    """Every alpha is scored in distribution (val) and under the shift (ood) on the interpolated weights;
    alpha 0 must reproduce the zero-shot model's stored 'before' embeddings and alpha 1 the fine-tuned one's."""
    store, _ = env
    r = flyp_run.result
    run_dir = store.run_dir(r["run_id"])
    curve = r["wise_ft"]
    assert all(p["val_acc"] is not None and p["ood_acc"] is not None for p in curve)
    n_ood = len(load_embeddings(embeddings_dir(run_dir, "after", "ood")))
    one_image = 1 / n_ood + 1e-9  # room for a non-deterministic GPU kernel, as above
    before_ood = load_embeddings(embeddings_dir(run_dir, "before", "ood")).accuracy
    assert r["zeroshot_ood_acc"] == before_ood
    assert curve[0]["ood_acc"] == pytest.approx(before_ood, abs=one_image)
    assert curve[0]["val_acc"] == pytest.approx(load_embeddings(embeddings_dir(run_dir, "before", "val")).accuracy, abs=one_image)
    assert curve[-1]["ood_acc"] == pytest.approx(load_embeddings(embeddings_dir(run_dir, "after", "ood")).accuracy, abs=one_image)
    assert curve[-1]["ood_acc"] == pytest.approx(r["ood_acc"], abs=one_image)
    assert curve[-1]["val_acc"] == pytest.approx(r["val_acc"], abs=one_image)
    assert len({p["ood_acc"] for p in curve}) > 1  # the sweep really moves the weights


def test_ce_from_the_zero_shot_head_gets_a_frontier_of_its_own(env, flyp_run):
    """CE on a backbone with a text tower may start from the zero-shot head (the WiSE-FT paper's setup): its
    model before any update is FLYP's zero-shot classifier, and its WiSE-FT sweep runs from there."""
    store, root = env
    r = run_train(_cfg(objective="ce", backbone="test_clip", steps=20, lr=1e-2, ce_zero_shot_head=True), store, root).result
    assert r["status"] == "finished", r["error"]
    assert r["zeroshot_acc"] == flyp_run.result["zeroshot_acc"]  # the same classifier: class prompts x logit scale
    assert r["zeroshot_ood_acc"] == flyp_run.result["zeroshot_ood_acc"]
    curve = r["wise_ft"]
    one_image = 1 / 100 + 1e-9
    assert curve[0]["val_acc"] == pytest.approx(r["zeroshot_acc"], abs=one_image)
    assert curve[0]["ood_acc"] == pytest.approx(r["zeroshot_ood_acc"], abs=one_image)
    assert curve[-1]["val_acc"] == pytest.approx(r["val_acc"], abs=one_image)
    assert curve[-1]["ood_acc"] == pytest.approx(r["ood_acc"], abs=one_image)
    with pytest.raises(InvalidConfig, match="zero-shot CE head needs"):
        validate(_cfg(objective="ce", ce_zero_shot_head=True), root)  # test_vit has no text tower


def test_flyp_stores_image_embeddings_and_prompt_anchors(env, flyp_run):
    store, _ = env
    es = load_embeddings(embeddings_dir(store.run_dir(flyp_run.result["run_id"]), "after", "val"))
    assert set(es.vectors) == {"image", "encoder", "logits"} and es.anchors.shape == (10, 32)
    assert store.get(flyp_run.result["run_id"]).summary["zeroshot_acc"] == flyp_run.result["zeroshot_acc"]


# ------------------------------------------------------------------------- cancel, resume
N_BEFORE_CANCEL = 6
CANCEL = dict(objective="ce", steps=40, lr=3e-3)  # eval (and checkpoint) every 4 steps


@pytest.fixture(scope="module")
def cancelled(env):
    """A run whose should_stop() flips once N step events have been seen; snapshot of its state."""
    store, root = env
    events = []
    flipped_at = []

    def should_stop():
        steps = [e for e in events if e["type"] == "step"]
        if len(steps) >= N_BEFORE_CANCEL and not flipped_at:
            flipped_at.append(steps[-1]["step"])
        return bool(flipped_at)

    result = train(_cfg(**CANCEL), store=store, root=root, on_event=events.append, should_stop=should_stop)
    rec = store.get(result["run_id"])
    return Recorded(result, events), rec, flipped_at[0], _checkpoint_step(store.run_dir(result["run_id"]))


def test_cancel_stops_within_one_step(cancelled):
    run, rec, flipped_at, _ = cancelled
    assert run.result["status"] == "cancelled" and run.result["error"] == "cancelled by the user"
    assert (rec.status, rec.error) == ("cancelled", "cancelled by the user") and rec.finished is not None
    assert flipped_at == N_BEFORE_CANCEL  # every step is logged here
    assert run.steps[-1]["step"] <= flipped_at + 1
    assert len(run.steps) <= N_BEFORE_CANCEL + 1
    assert run.events[-1]["type"] == "done" and run.events[-1]["status"] == "cancelled"
    assert "val_acc" not in run.result  # no summary for a cancelled run


def test_resume_continues_from_the_checkpoint(env, cancelled):
    store, root = env
    run, _, flipped_at, saved = cancelled
    assert saved == flipped_at and saved % 4 != 0  # checkpointed at the cancel, not at the last evaluation
    run_id = run.result["run_id"]
    resumed = run_train(_cfg(**CANCEL), store, root, run_id=run_id, resume=True)
    assert resumed.result["status"] == "finished", resumed.result["error"]
    steps = [e["step"] for e in resumed.steps]
    assert steps[0] == saved + 1 and steps[-1] == 40 and steps == list(range(saved + 1, 41))
    assert resumed.result["steps"] == 40 and resumed.result["run_id"] == run_id
    assert store.get(run_id).status == "finished" and store.get(run_id).error is None
    assert _checkpoint_step(store.run_dir(run_id)) == 40
    logged = [s for s, _ in store.metrics(run_id, ["loss"])["loss"]]
    assert logged == list(range(1, 41))  # every step once: the cancel lost none


def test_lacvit_resumes_inside_its_second_stage(env):
    """20 steps = 14 contrastive + 6 head; cancelled after step 17 and checkpointed there (stage 1)."""
    store, root = env
    cfg = _cfg(objective="lacvit", steps=20, lr=1e-2, backbone_lr=1e-3)  # eval / checkpoint every 2 steps
    events = []
    first = train(cfg, store=store, root=root, on_event=events.append,
                  should_stop=lambda: any(e["type"] == "step" and e["step"] >= 17 for e in events))
    assert first["status"] == "cancelled"
    run_dir = store.run_dir(first["run_id"])
    assert _checkpoint_step(run_dir) == 17  # evaluations checkpoint every 2 steps; the cancel itself at 17
    assert torch.load(run_dir / TRAINER_STATE, weights_only=True)["stage"] == 1
    resumed = run_train(cfg, store, root, run_id=first["run_id"], resume=True)
    assert resumed.result["status"] == "finished", resumed.result["error"]
    assert [(e["stage"], e["index"], e["steps"]) for e in resumed.of("stage")] == [("head", 1, 6)]
    assert [(e["step"], e["stage"]) for e in resumed.steps] == [(s, "head") for s in range(18, 21)]


def test_resume_without_a_checkpoint_fails_cleanly(env):
    store, root = env
    cfg = _cfg(objective="ce", steps=4)
    run_id = store.create_run(cfg.to_dict())
    r = train(cfg, store=store, root=root, run_id=run_id, resume=True)
    assert r["status"] == "failed" and "no checkpoint yet" in r["error"]
    assert store.get(run_id).status == "failed"


def test_injected_nan_fails_with_the_step_and_keeps_the_last_good_checkpoint(env, monkeypatch):
    store, root = env
    monkeypatch.setenv("EMBEDLAB_FAULT", "nan:5")
    cfg = _cfg(objective="ce", steps=20)  # evaluates and checkpoints every 2 steps
    run = run_train(cfg, store, root)
    r = run.result
    assert r["status"] == "failed" and r["error"].startswith("diverged at step 5:"), r["error"]
    assert "lower the learning rate" in r["error"]
    assert max(e["step"] for e in run.steps) == 4
    rec = store.get(r["run_id"])
    assert (rec.status, rec.error) == ("failed", r["error"])
    run_dir = store.run_dir(r["run_id"])
    assert _checkpoint_step(run_dir) == 4
    assert all(torch.isfinite(t).all() for t in load_file(str(run_dir / CHECKPOINT)).values())
    monkeypatch.delenv("EMBEDLAB_FAULT")
    s = build_session(validate(cfg, root), root)
    assert load_method_weights(s.method, run_dir)["step"] == "4"


@pytest.mark.parametrize("fault, message", [("oom:2", "out of memory at batch size 32"),
                                            ("raise:2", "RuntimeError: simulated crash")])
def test_other_faults_end_the_run_not_the_caller(env, monkeypatch, fault, message):
    store, root = env
    monkeypatch.setenv("EMBEDLAB_FAULT", fault)
    r = run_train(_cfg(objective="ce", steps=4), store, root).result
    assert r["status"] == "failed" and message in r["error"]
    assert store.get(r["run_id"]).status == "failed"


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("overrides, error, message", [
    (dict(lr=float("nan")), InvalidConfig, "learning rate must be a finite number"),
    (dict(lr=-1.0), InvalidConfig, "learning rate must be > 0"),
    (dict(batch_size=1), InvalidConfig, "batch size must be at least 2"),
    (dict(steps=0), InvalidConfig, "steps must be a positive whole number"),
    (dict(steps=None, epochs=None), InvalidConfig, "set a budget"),
    (dict(temperature=0.0), InvalidConfig, "temperature must be > 0"),
    (dict(warmup=1.0), InvalidConfig, "warmup"),
    (dict(optimizer="adam"), InvalidConfig, "optimizer"),
    (dict(trainable="some"), InvalidConfig, "trainable"),
    (dict(n_per_class=2), InvalidConfig, "larger than the 20 training images"),
    (dict(objective="nope"), UnknownName, "unknown objective 'nope'"),
    (dict(dataset="nope"), UnknownName, "unknown dataset 'nope'"),
    (dict(backbone="nope_net"), UnknownName, "unknown backbone 'nope_net'"),
    (dict(objective="flyp"), InvalidConfig, "needs a CLIP-style backbone"),
    (dict(objective="flyp", backbone="test_clip", trainable="frozen"), InvalidConfig, "FLYP fine-tunes the encoders"),
])
def test_validate_rejects_bad_settings_before_any_run_exists(env, overrides, error, message):
    store, root = env
    before = len(store.list())
    cfg = _cfg(**overrides)
    with pytest.raises(error, match=message):
        validate(cfg, root)
    with pytest.raises(error, match=message):
        train(cfg, store=store, root=root)
    assert len(store.list()) == before


def test_config_round_trips_and_rejects_unknown_settings():
    cfg = _cfg(objective="lacvit", lr=0.01)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InvalidConfig, match="unknown setting"):
        TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": 1})
    assert dataclasses.replace(cfg, backbone="").resolved().backbone in ("efficientnet_lite0", "lite0-minilm", "test_clip")


def test_stage_budgets_and_schedule():
    assert train_mod._stage_budgets([0.7, 0.3], 40) == [28, 12]
    assert train_mod._stage_budgets([0.7, 0.3], 2) == [1, 1]
    assert sum(train_mod._stage_budgets([0.33, 0.67], 7)) == 7
    with pytest.raises(InvalidConfig, match="too small"):
        train_mod._stage_budgets([0.7, 0.3], 1)
    scale = [train_mod._lr_scale(i, 10, 0.2) for i in range(10)]
    assert scale[:3] == [0.5, 1.0, 1.0] and scale[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(scale[1:], scale[2:]))  # cosine decay after the warm-up


@pytest.mark.parametrize("fractions, total, expected", [([0.7, 0.3], 60, [42, 18]), ([0.95, 0.05], 3, [2, 1]),
                                                        ([0.5, 0.5], 3, [2, 1]), ([1.0], 5, [5]), ([0.7, 0.3], 2, [1, 1])])
def test_stage_budgets_split_every_step_and_give_each_stage_one(fractions, total, expected):
    from core.train import _stage_budgets

    assert _stage_budgets(fractions, total) == expected


def test_stop_signal_reads_the_store_at_most_once_per_poll_interval(monkeypatch):
    from core.train import _StopSignal

    class Store:
        reads = 0
        requested = False

        def cancel_requested(self, run_id):
            Store.reads += 1
            return Store.requested

    clock = [100.0]
    monkeypatch.setattr("core.train.time.monotonic", lambda: clock[0])
    local = []
    stop = _StopSignal(lambda: bool(local), Store(), "run", poll_s=1.0)
    assert not any(stop() for _ in range(1000)) and Store.reads == 1  # 1000 steps within one second: one read
    Store.requested = True
    assert not stop()  # not read again yet
    clock[0] += 1.0
    assert stop() and Store.reads == 2
    assert stop() and Store.reads == 2  # once asked, it stays stopped without reading again
    local.append(1)
    fresh = _StopSignal(lambda: bool(local), Store(), "run")
    assert fresh() and Store.reads == 2  # the caller's own flag needs no store read


@pytest.mark.parametrize("how", ["own flag", "store request"])
def test_a_cancel_during_feature_caching_stops_before_the_first_step(env, how):
    """The prepare phase (caching a frozen prefix's features) can take minutes: a cancel must not wait for it."""
    store, root = env
    run_id = store.create_run(_cfg(trainable="frozen").to_dict())
    events, asked = [], []

    def on_event(e):
        events.append(e)
        if e["type"] == "prepare" and not asked:
            asked.append(e)
            if how == "store request":  # what `python -m core cancel` or another server's Runs page does
                assert store.request_cancel(run_id)

    result = train(_cfg(trainable="frozen"), store=store, root=root, run_id=run_id, on_event=on_event,
                   should_stop=lambda: how == "own flag" and bool(asked))
    assert (result["status"], result["error"]) == ("cancelled", "cancelled by the user")
    assert asked and asked[0]["what"].startswith("caching")
    assert not [e for e in events if e["type"] in ("step", "stage")]
    assert store.get(run_id).status == "cancelled" and not store.cancel_requested(run_id)
    assert not list((root / "cache" / "features").glob("*tmp*"))  # no half-written feature file left behind


# ------------------------------------------------------------------ views under caching, fine-tuning depth
CACHED_LACVIT = dict(objective="lacvit", trainable="1", n_per_class=3, batch_size=10, steps=10, feature_views=4,
                     eval_every=100, snapshots=2)  # 30 images, 3 batches an epoch: stage 1 (7 steps) spans 2+ epochs


_REAL_BATCH = train_mod._batch


def _drawn_views(env, monkeypatch, **overrides) -> list[tuple[list[int], list[int]]]:
    """(rows, views) of every stage-1 batch of a cached LaCViT run."""
    store, root = env
    drawn = []
    real = _REAL_BATCH  # not train_mod._batch: a second call would wrap the first spy

    def spy(s, rows, views, gen):
        assert isinstance(s.sources["train"], train_mod.CachedSource)  # the run really trains on cached features
        if len(views) == 2:
            drawn.append((rows.tolist(), list(views)))
        return real(s, rows, views, gen)

    monkeypatch.setattr(train_mod, "_batch", spy)
    result = run_train(_cfg(**{**CACHED_LACVIT, **overrides}), store, root).result
    assert result["status"] == "finished", result["error"]
    return drawn


def test_cached_stage1_draws_fresh_view_pairs_every_epoch_reproducibly(env, monkeypatch):
    drawn = _drawn_views(env, monkeypatch)
    assert len(drawn) == 7
    assert all(len(set(v)) == 2 and 0 not in v for _, v in drawn)  # two distinct bank views, never the clean one
    epoch = {1: {}, 2: {}}  # batches 1-3 are epoch 1, 4-6 epoch 2
    for i, (rows, views) in enumerate(drawn[:6]):
        for r in rows:
            epoch[1 + i // 3][r] = frozenset(views)
    assert set(epoch[1]) == set(epoch[2]) == set(range(30))
    changed = sum(epoch[1][r] != epoch[2][r] for r in range(30))
    assert changed >= 15, changed  # most images see another pair of views in their second epoch
    assert _drawn_views(env, monkeypatch) == drawn  # the same seed draws the same views
    assert _drawn_views(env, monkeypatch, seed=1) != drawn  # another seed, other views (and another bank)


def test_fine_tuning_depth_defaults_follow_the_device(env, monkeypatch):
    _, root = env
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = validate(_cfg(objective="lacvit", trainable="auto"), root)
    assert (cpu.trainable, cpu.stage2_train_encoder) == ("1", False)  # last block on cached features, frozen stage 2
    assert TrainConfig().trainable == "auto" and TrainConfig().stage2_train_encoder is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the device resolves to cuda
    gpu = _cfg(objective="lacvit", trainable="auto").resolved()
    assert (gpu.trainable, gpu.stage2_train_encoder) == ("all", True)  # full fine-tuning, the paper's stage 2
    explicit = _cfg(objective="lacvit", trainable="2", stage2_train_encoder=False).resolved()
    assert (explicit.trainable, explicit.stage2_train_encoder) == ("2", False)  # a choice is kept


@pytest.mark.parametrize("train_encoder", [True, False])
def test_lacvit_stage2_updates_the_encoder_only_when_asked(env, monkeypatch, train_encoder):
    store, root = env
    at_stage2 = {}
    real = train_mod._make_optimizer

    def spy(cfg, method, stage):
        if stage.name == "head":
            at_stage2.update({n: p.detach().clone() for n, p in method.named_parameters() if n.startswith("backbone.")
                              and p.requires_grad})
        return real(cfg, method, stage)

    monkeypatch.setattr(train_mod, "_make_optimizer", spy)
    result = run_train(_cfg(**CACHED_LACVIT, stage2_train_encoder=train_encoder), store, root).result
    assert result["status"] == "finished", result["error"]
    assert store.get(result["run_id"]).config["stage2_train_encoder"] is train_encoder
    final = load_file(str(store.run_dir(result["run_id"]) / CHECKPOINT))
    assert at_stage2  # the last block is trainable
    moved = [n for n, before in at_stage2.items() if not torch.equal(final[n], before)]
    assert bool(moved) is train_encoder, moved
