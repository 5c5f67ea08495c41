"""Tiny finished runs for the Explore / Compare / analysis tests, trained once per test session.

Not a test module: imported by tests/test_analysis_cli.py, tests/test_explore_compare_app.py,
tests/test_compare_settings_app.py and tests/e2e/test_explore.py, test_compare_settings.py. Runs are real (core.train.train on the 8x8 `digits` set, a few steps)
and live in one EMBEDLAB_HOME under the session's temp folder, so the three files share them.
"""
from __future__ import annotations

import json
from pathlib import Path

TINY = dict(dataset="digits", n_per_class=8, eval_per_class=12, steps=6, batch_size=16, snapshots=3, wise_alphas=3,
            eval_every=3)  # ~120 val samples, 3 snapshots, a 3-point WiSE-FT curve
BACKBONES = {"ce": "test_vit", "lacvit": "test_vit", "flyp": "test_clip"}  # offline test backbones


def tiny_runs(base: Path, objectives=("ce", "lacvit", "flyp")) -> tuple[Path, dict[str, str]]:
    """(EMBEDLAB_HOME, {objective: run_id}) with one finished tiny run per objective."""
    from core.store import RunStore
    from core.train import TrainConfig, train

    home = Path(base) / "explore-runs"
    home.mkdir(parents=True, exist_ok=True)
    index = home / "tiny-runs.json"
    known = json.loads(index.read_text()) if index.exists() else {}
    store = RunStore(home)
    for objective in objectives:
        if objective in known and store.exists(known[objective]) and store.get(known[objective]).status == "finished":
            continue
        result = train(TrainConfig(objective=objective, backbone=BACKBONES[objective], **TINY), store=store, root=home)
        assert result["status"] == "finished", result
        known[objective] = result["run_id"]
        index.write_text(json.dumps(known))
    return home, {o: known[o] for o in objectives}


def _copy_run(src, run_id: str, dst, **changes) -> str:
    """A finished run in store `dst` with run_id's stored embeddings and summary, its config changed by `changes`
    (as if trained with those settings: what Compare reads of a run's settings is its stored config)."""
    import shutil

    rec = src.get(run_id)
    config = {**rec.config, **changes}
    new = dst.create_run(config, status="finished")
    shutil.copytree(src.run_dir(run_id), dst.run_dir(new), dirs_exist_ok=True)
    (dst.run_dir(new) / "config.json").write_text(json.dumps(config))
    dst.update_summary(new, {**rec.summary, "steps": config["steps"]})
    dst.set_status(new, "finished")
    return new


def mixed_step_runs(base: Path) -> tuple[Path, dict[str, str]]:
    """(EMBEDLAB_HOME, ids) of a home holding CE at 6 steps, then LaCViT and CE at 20 steps (the last two: one
    comparison batch), copied from the tiny runs: {"ce6", "lacvit20", "ce20"}."""
    from core.store import RunStore

    home = Path(base) / "mixed-step-runs"
    index = home / "mixed-runs.json"
    if index.exists():
        return home, json.loads(index.read_text())
    tiny_home, ids = tiny_runs(base, objectives=("ce", "lacvit"))
    src, dst = RunStore(tiny_home), RunStore(home)
    made = {"ce6": _copy_run(src, ids["ce"], dst), "lacvit20": _copy_run(src, ids["lacvit"], dst, steps=20),
            "ce20": _copy_run(src, ids["ce"], dst, steps=20)}
    index.write_text(json.dumps(made))
    return home, made
