"""core/cli/ end to end: `python -m core ...` in subprocesses (started together, since each one
spends seconds importing torch), plus the cheap commands and argument errors in-process."""
import json
from pathlib import Path

import pytest

from core.cli import main

from helpers import finish, start_cli

DATA = ["--dataset", "mnist5k", "--steps", "20", "--n-per-class", "20", "--eval-per-class", "10", "--batch-size", "32"]
COMMANDS = {
    "ce": ["train", "--backbone", "test_vit", "--objective", "ce", *DATA],
    "lacvit": ["train", "--backbone", "test_vit", "--objective", "lacvit", *DATA],
    "flyp": ["train", "--backbone", "test_clip", "--objective", "flyp", *DATA],
    "nope": ["train", "--backbone", "test_vit", "--objective", "ce", "--dataset", "nope"],
}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-runs")


@pytest.fixture(scope="module")
def cli(runs_dir):
    """Every subprocess of this module, started at once and then collected."""
    procs = {name: start_cli(*args, runs_dir=runs_dir) for name, args in COMMANDS.items()}
    try:
        return {name: finish(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


@pytest.mark.slow  # the `cli` fixture trains three runs in subprocesses (~27 s of CPU): not in make test-fast
@pytest.mark.parametrize("objective", ["ce", "lacvit", "flyp"])
def test_train_prints_one_json_summary_last(cli, objective):
    done = cli[objective]
    assert done.rc == 0, done.stderr[-2000:]
    result = done.last_json()
    assert result["status"] == "finished" and result["error"] is None
    assert result["objective"] == objective and result["dataset"] == "mnist5k" and result["steps"] == 20
    assert isinstance(result["run_id"], str) and objective in result["run_id"]
    assert 0.0 <= result["val_acc"] <= 1.0 and result["seconds"] > 0
    assert "Traceback" not in done.stderr
    assert f"[{objective}] finished: val_acc=" in done.stderr  # the closing line of the progress output
    if objective == "flyp":
        assert 0.0 <= result["zeroshot_acc"] <= 1.0
        assert [p["alpha"] for p in result["wise_ft"]] == [round(a / 10, 3) for a in range(11)]
    else:
        assert "zeroshot_acc" not in result and "wise_ft" not in result


@pytest.mark.slow  # shares the `cli` fixture
def test_unknown_dataset_is_one_line_and_exit_2(cli):
    done = cli["nope"]
    assert done.rc == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown dataset 'nope'; choose from:"), done.stderr
    assert "Traceback" not in done.stderr


def _json_out(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_backbones_and_datasets_lists(tmp_path, capsys):
    # in-process: these are pure listings, a subprocess each would only add torch's import time
    assert main(["backbones", "--json", "--runs-dir", str(tmp_path)]) == 0
    backbones = {row["name"]: row for row in _json_out(capsys)}
    assert {"test_vit", "test_clip", "efficientnet_lite0", "lite0-minilm"} <= set(backbones)
    assert backbones["test_clip"]["clip"] is True and backbones["test_vit"]["offline"] is True
    assert backbones["ViT-B-32/laion2b_s34b_b79k"]["offline"] is False
    assert main(["backbones", "--runs-dir", str(tmp_path)]) == 0
    assert any(line.startswith("efficientnet_lite0") and "offline" in line for line in capsys.readouterr().out.splitlines())

    (tmp_path / "datasets" / "my-photos").mkdir(parents=True)  # an imported dataset shows up by folder
    assert main(["datasets", "--json", "--runs-dir", str(tmp_path)]) == 0
    datasets = {row["name"]: row for row in _json_out(capsys)}
    assert {"mnist5k", "digits", "mnist-stripes", "fashion-mnist"} <= set(datasets)
    assert datasets["digits"]["offline"] is True and datasets["cifar10"]["kind"] == "online"
    assert datasets["my-photos"]["kind"] == "imported"
    assert main(["datasets", "--runs-dir", str(tmp_path)]) == 0
    assert any(line.startswith("mnist5k") for line in capsys.readouterr().out.splitlines())


@pytest.mark.slow  # shares the `cli` fixture
def test_runs_and_show(cli, runs_dir, capsys):
    ids = {name: cli[name].last_json()["run_id"] for name in ("ce", "lacvit", "flyp")}
    capsys.readouterr()
    assert main(["runs", "--json", "--runs-dir", str(runs_dir)]) == 0
    rows = {row["run_id"]: row for row in _json_out(capsys)}
    assert set(rows) == set(ids.values())  # the failed `--dataset nope` never created a run
    for objective, run_id in ids.items():
        assert rows[run_id]["status"] == "finished" and rows[run_id]["objective"] == objective
        assert rows[run_id]["val_acc"] == cli[objective].last_json()["val_acc"]

    assert main(["show", ids["flyp"], "--json", "--runs-dir", str(runs_dir)]) == 0
    info = _json_out(capsys)
    assert info["run_id"] == ids["flyp"] and info["status"] == "finished"
    assert info["config"]["backbone"] == "test_clip" and info["config"]["steps"] == 20
    assert info["summary"]["zeroshot_acc"] == cli["flyp"].last_json()["zeroshot_acc"]
    assert "loss" in info["last_metrics"] and "val_acc" in info["last_metrics"]

    assert main(["runs", "--runs-dir", str(runs_dir)]) == 0  # the human-readable table
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run_id", "status", "objective"] and len(table) == 4

    assert main(["show", "no-such-run", "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no run 'no-such-run'")


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "learning rate must be a finite number"),
    (["--batch-size", "1"], "batch size must be at least 2"),
    (["--temperature", "0"], "temperature must be > 0"),
    (["--steps", "0"], "steps must be a positive whole number"),
    (["--objective", "flyp"], "needs a CLIP-style backbone"),
])
def test_bad_train_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
    rc = main(["train", "--backbone", "test_vit", "--objective", "ce", "--dataset", "digits", *args, "--runs-dir", str(tmp_path)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err
    assert captured.out == "" and not (tmp_path / "runs").exists()


def test_argparse_errors_are_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--steps", "many"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and "invalid int value: 'many'" in lines[0]


def test_train_seeds_runs_s_to_s_plus_n_per_objective(tmp_path, monkeypatch, capsys):
    """--seeds 3: three runs per objective, seeds s, s+1, s+2, and mean ± spread in the JSON line."""
    import json

    from core import cli as cli_mod
    from core.cli import runs as cli_runs  # the train command's module (core/cli/runs.py)

    seen = []

    def fake(cfg, store, root, *, quiet, train):
        seen.append((cfg.objective, cfg.seed))
        return {"run_id": f"{cfg.objective}-{cfg.seed}", "status": "finished", "val_acc": 0.8 + 0.01 * cfg.seed}

    monkeypatch.setattr(cli_runs, "_train_with_bar", fake)
    assert cli_mod.main(["train", "--objective", "ce,lacvit", "--seeds", "3", "--seed", "5", "--runs-dir", str(tmp_path),
                         "--backbone", "test_vit", "--dataset", "digits", "--steps", "2"]) == 0
    assert seen == [("ce", 5), ("ce", 6), ("ce", 7), ("lacvit", 5), ("lacvit", 6), ("lacvit", 7)]
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    groups = out["seed_groups"]
    assert [g["seeds"] for g in groups] == [[5, 6, 7], [5, 6, 7]]
    assert groups[0]["val_acc_mean"] == pytest.approx(0.86) and groups[0]["val_acc_std"] == pytest.approx(0.01)
    assert cli_mod.main(["train", "--seeds", "0", "--runs-dir", str(tmp_path)]) == 2


def test_the_command_table_names_every_sub_command():
    """core/cli/__init__.py's COMMAND_GROUPS is the one list of commands: each group registers exactly its own."""
    import argparse

    from core import cli as cli_mod

    common = argparse.ArgumentParser(add_help=False)
    listed = []
    for group, names in cli_mod.COMMAND_GROUPS:
        sub = argparse.ArgumentParser().add_subparsers()
        group.register(sub, common)
        assert tuple(sub.choices) == names, group.__name__
        listed += names
    parsed = cli_mod.build_parser()._subparsers._group_actions[0].choices
    assert list(parsed) == listed and len(set(listed)) == len(listed) == 17


def test_listing_commands_never_import_torch(tmp_path):
    """`runs`, `show`, `cancel` and `datasets` answer in a fraction of a second: the parser's defaults come
    from core/config.py, and only the commands that train or embed import torch."""
    import subprocess
    import sys

    from core.config import TrainConfig
    from core.store import RunStore

    run_id = RunStore(tmp_path).create_run(TrainConfig(objective="ce").to_dict())
    probe = ("import sys; from core.cli import main; codes = [main(a + ['--runs-dir', sys.argv[1]]) for a in "
             f"(['runs'], ['show', {run_id!r}], ['datasets'], ['cancel', {run_id!r}])]; "
             "print(codes, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[0, 0, 0, 0] False", out.stdout
    assert RunStore(tmp_path).cancel_requested(run_id)  # the cancel reached the store (its worker ends the run)
