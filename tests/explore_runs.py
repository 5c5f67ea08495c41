"""Tiny finished runs for the Explore / Compare / analysis tests, trained once per test session.

Not a test module: imported by tests/test_analysis_cli.py, tests/test_explore_compare_app.py and
tests/e2e/test_explore.py. Runs are real (core.train.train on the 8x8 `digits` set, a few steps)
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
