"""core.settings_diff: the settings table of compared runs, its warnings, comparison batches and label suffixes."""
import dataclasses

from core.settings_diff import comparison_batches, differing_labels, settings_table
from core.train import TrainConfig


def _run(run_id, **changes):
    """(run_id, stored config, summary) as finished_runs gives them: the config as the store keeps it (resolved)."""
    cfg = dataclasses.replace(TrainConfig(dataset="digits", backbone="test_vit", trainable="1", stage2_train_encoder=False), **changes)
    return run_id, cfg.to_dict(), {"steps": cfg.steps, "objective": cfg.objective}


def _row(table, key):
    return next(r for r in table.rows if r.key == key)


def test_different_steps_and_lr_are_marked_and_warned_by_name():
    table = settings_table([_run("a-ce", objective="ce", steps=1500), _run("b-lac", objective="lacvit", steps=20, lr=10.0)],
                           ["CE", "LaCViT"])
    steps = _row(table, "steps")
    assert steps.values == [1500, 20] and steps.differs and steps.warns
    assert "steps: 1500 vs 20" in table.warnings
    assert "lr: 0.001 vs 10" in table.warnings
    assert not any(w.startswith("objective") for w in table.warnings)  # the objective is what is compared
    assert _row(table, "objective").differs and not _row(table, "objective").warns
    assert not _row(table, "batch_size").differs
    records = {r["setting"]: r for r in table.records()}
    assert records["steps"]["CE"] == "1500" and records["steps"]["LaCViT"] == "20" and records["steps"]["differs"]
    assert records["batch size"]["differs"] is False  # a main setting shown even when equal


def test_the_default_comparison_is_like_with_like():
    trio = [_run("1-ce", objective="ce"), _run("2-lacvit", objective="lacvit"), _run("3-flyp", objective="flyp", backbone="test_clip")]
    table = settings_table(trio)
    assert [w.split(":")[0] for w in table.warnings] == ["backbone"]  # test_clip is no twin of test_vit: a real difference
    twins = [_run("1-ce", objective="ce", backbone="efficientnet_lite0"), _run("3-flyp", objective="flyp", backbone="lite0-minilm")]
    table = settings_table(twins)
    assert table.warnings == []  # FLYP's lite0-minilm shares efficientnet_lite0's image tower
    assert _row(table, "backbone").differs and "twin" in _row(table, "backbone").note


def test_objective_knobs_count_only_among_the_objectives_that_read_them():
    table = settings_table([_run("a", objective="ce", temperature=0.5), _run("b", objective="lacvit", temperature=0.1)])
    temp = _row(table, "temperature")
    assert temp.used == [False, True] and temp.values == [None, 0.1] and not temp.differs
    assert table.warnings == []
    assert table.records(everything=True)[[r["setting"] for r in table.records(everything=True)].index("temperature τ")]["a"] == "n/a"
    assert "temperature τ" not in {r["setting"] for r in settings_table([_run("a", objective="ce"), _run("b")]).records(everything=True)}
    table = settings_table([_run("a", objective="lacvit", temperature=0.5), _run("b", objective="lacvit", temperature=0.1)])
    assert table.warnings == ["temperature τ: 0.5 vs 0.1"]
    cs = settings_table([_run("a", objective="ce", cs_style_dim=4), _run("b", objective="content-style", cs_style_dim=8)])
    assert cs.warnings == [] and _row(cs, "cs_style_dim").used == [False, True]


def test_seeds_warn_unless_every_objective_ran_on_the_same_seeds():
    assert settings_table([_run("a", objective="ce", seed=0), _run("b", objective="lacvit", seed=1)]).warnings == ["seed: 0 vs 1"]
    multi = [_run(f"{o}{s}", objective=o, seed=s) for o in ("ce", "lacvit") for s in (0, 1)]
    table = settings_table(multi)
    assert table.warnings == [] and _row(table, "seed").differs


def test_watch_only_settings_are_highlighted_not_warned_and_new_settings_get_a_row():
    a, b = _run("a", eval_every=3), _run("b", eval_every=50, snapshots=20)
    b[1]["brand_new_knob"] = 7
    table = settings_table([a, b])
    assert _row(table, "eval_every").differs and not _row(table, "eval_every").warns
    assert table.warnings == ["brand_new_knob: – vs 7"]


def test_the_runs_resolved_settings_come_from_the_summary():
    a = _run("a", steps=None, epochs=2.0)
    a[2].update(steps=48, ood_shift="mix:3", train_images=240)
    b = _run("b", steps=48)
    b[2].update(ood_shift="mix:3", train_images=240)
    table = settings_table([a, b])
    assert _row(table, "steps").values == [48, 48] and _row(table, "shift").values == ["mix:3", "mix:3"]
    assert table.warnings == ["epochs: 2 vs –"]
    cfg = TrainConfig(dataset="digits", steps=5)  # a TrainConfig is read as its dict
    assert _row(settings_table([("x", cfg, None), ("y", cfg, None)]), "steps").values == [5, 5]


def test_batches_group_same_settings_but_objective_newest_first():
    old = [_run("01-ce", objective="ce", steps=20), _run("02-lacvit", objective="lacvit", steps=20, temperature=0.2),
           _run("03-flyp", objective="flyp", steps=20, wise_alphas=5)]
    long = [_run("04-ce", objective="ce", steps=1500)]
    again = [_run("05-ce", objective="ce", steps=20), _run("06-lacvit", objective="lacvit", steps=20)]
    runs = list(reversed(old + long + again))  # newest first, as finished_runs lists them
    batches = comparison_batches(runs)
    assert [b.run_ids for b in batches] == [["05-ce", "06-lacvit"], ["04-ce"], ["01-ce", "02-lacvit", "03-flyp"]]
    assert all(settings_table([r for r in runs if r[0] in b.run_ids]).warnings == [] for b in batches)
    label = batches[2].label({"ce": "CE", "lacvit": "LaCViT", "flyp": "FLYP"}.get)
    assert label.startswith("CE, LaCViT, FLYP · digits · steps 20 · lr 0.001 · batch 64")
    seeds = [_run(f"{o}-{s}", objective=o, seed=s) for s in (0, 1) for o in ("ce", "lacvit")]
    assert [len(b.run_ids) for b in comparison_batches(list(reversed(seeds)))] == [4]  # one multi-seed batch


def test_labels_carry_the_settings_that_differ():
    runs = [_run("a", objective="ce", steps=1500), _run("b", objective="lacvit", steps=20)]
    assert differing_labels(runs) == {"a": "steps 1500", "b": "steps 20"}
    runs = [_run("a", objective="ce", backbone="test_vit"), _run("b", objective="flyp", backbone="test_clip")]
    assert differing_labels(runs) == {"a": "", "b": ""}  # the backbone is in run_label already
    assert differing_labels([_run("a"), _run("b", lr=0.1, batch_size=8)]) == {"a": "batch size 64 · lr 0.001",
                                                                              "b": "batch size 8 · lr 0.1"}
