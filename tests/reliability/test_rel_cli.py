"""The real `python -m core` processes (exit codes and stderr as a user sees them). The three commands start
together, so the suite pays the interpreter start-up (torch imports) once on two cores, not three times."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import cli_env

from .kit import classes, make_zip, png, snapshot


def _launch(args, cwd, home):
    env = cli_env()
    env.update(EMBEDLAB_HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    cwd, env_home = base / "cwd", base / "env-home"
    cwd.mkdir()
    good = png(seed=1)
    slip = make_zip(base / "slip.zip", {**classes({"cats": 2, "dogs": 2}), "../../outside.png": png()})
    partial = make_zip(base / "partial.zip", {**classes({"cats": 2, "dogs": 2}), "cats/broken.png": good[: len(good) // 2],
                                              "dogs/notes.jpg": b"plain text"})
    before = snapshot(base)
    procs = {
        "slip": _launch(["import-dataset", str(slip), "--name", "slip", "--data-dir", str(base / "data-slip")], cwd, env_home),
        "partial": _launch(["import-dataset", str(partial), "--name", "partial", "--data-dir", str(base / "data-ok")],
                           cwd, env_home),
        "nan": _launch(["train", "--backbone", "test_vit", "--objective", "ce", "--dataset", "digits", "--lr", "nan",
                        "--runs-dir", str(base / "data-train")], cwd, env_home),
    }
    done = {k: (p.wait(240), *p.communicate()) for k, p in procs.items()}
    return base, before, done


def _new_files(base, before):
    return sorted(set(snapshot(base)) - set(before))


@pytest.mark.slow
def test_cli_hostile_zip_exits_2_with_one_line_and_writes_nothing_outside(ran):
    base, before, done = ran
    rc, out, err = done["slip"]
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == ["error: slip.zip refused: entry '../../outside.png' points outside the archive ('..')"]
    assert "Traceback" not in err
    assert not any(p.endswith("outside.png") for p in _new_files(base, before))
    assert snapshot(base / "data-slip") in ({}, {"datasets": "dir"})  # nothing imported, no staging left
    assert not (base / "env-home").exists() and list((base / "cwd").iterdir()) == []  # DIR was the only place touched


@pytest.mark.slow
def test_cli_partial_zip_imports_the_rest_and_reports_the_skips(ran):
    base, before, done = ran
    rc, out, err = done["partial"]
    assert rc == 0 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("imported 4 images in 2 classes as 'partial'; 2 files skipped: 1 corrupt, "
                                           "1 not images — first: cats/broken.png")
    assert json.loads(out.strip().splitlines()[-1]) == {
        "name": "partial", "images": 4, "classes": {"cats": 2, "dogs": 2}, "skipped": 2,
        "skipped_files": [{"path": "cats/broken.png", "reason": "corrupt"}, {"path": "dogs/notes.jpg", "reason": "not images"}]}
    assert sorted(p for p in _new_files(base, before) if p.endswith(".png")) == \
        [f"data-ok/datasets/partial/{c}/{i}.png" for c in ("cats", "dogs") for i in range(2)]


@pytest.mark.slow
def test_cli_nan_learning_rate_exits_2_before_any_run(ran):
    base, _, done = ran
    rc, out, err = done["nan"]
    assert (rc, out) == (2, "")
    assert err.strip().splitlines() == ["error: learning rate must be a finite number, not nan"]
    assert not (base / "data-train" / "runs").exists() and not (base / "data-train" / "runs.db").exists()


# ----------------------------------------------------------------- issue 15: python -m core resume
TINY = ["--backbone", "test_vit", "--dataset", "digits", "--objective", "ce", "--n-per-class", "10", "--eval-per-class", "4",
        "--batch-size", "8", "--trainable", "all", "--quiet"]


def _main_json(capsys, *args):
    from core.cli import main

    rc = main(list(args))
    out = capsys.readouterr()
    return rc, (json.loads(out.out.strip().splitlines()[-1]) if out.out.strip() else None), out.err


def test_resume_continues_a_failed_run_from_its_checkpoint_under_the_same_id(tmp_path, capsys, monkeypatch):
    from core.store import RunStore
    from core.train import CHECKPOINT

    monkeypatch.setenv("EMBEDLAB_FAULT", "raise:4")  # a crash while computing step 4; checkpoints at steps 1-3
    rc, first, _ = _main_json(capsys, "train", *TINY, "--steps", "6", "--eval-every", "1", "--runs-dir", str(tmp_path))
    assert rc == 1 and first["status"] == "failed", first
    run_id = first["run_id"]
    assert (tmp_path / "runs" / run_id / CHECKPOINT).exists()
    monkeypatch.delenv("EMBEDLAB_FAULT")
    rc, resumed, err = _main_json(capsys, "resume", run_id[:-2], "--runs-dir", str(tmp_path))  # a unique prefix will do
    assert rc == 0 and resumed["status"] == "finished" and resumed["run_id"] == run_id and resumed["steps"] == 6, resumed
    assert err.splitlines()[0] == f"resuming run {run_id} from step 3 (its last checkpoint)"  # says where it goes on
    store = RunStore(tmp_path)
    assert [r.id for r in store.list()] == [run_id] and store.get(run_id).status == "finished"
    assert sorted({s for s, _ in store.metrics(run_id, ["loss"])["loss"]}) == [1, 2, 3, 4, 5, 6]
    rc, _, err = _main_json(capsys, "resume", run_id, "--runs-dir", str(tmp_path))  # finished: nothing to resume
    assert rc == 2 and err.strip().splitlines() == [
        f"error: run {run_id} is finished; only interrupted, failed, cancelled runs can be resumed"]


def test_resume_without_a_checkpoint_refuses_then_starts_over_when_asked(tmp_path, capsys):
    from core.store import RunStore
    from core.train import TrainConfig

    store = RunStore(tmp_path)
    cfg = TrainConfig(objective="ce", backbone="test_vit", dataset="digits", n_per_class=10, eval_per_class=4, batch_size=8,
                      trainable="all", steps=3)
    run_id = store.create_run(cfg.to_dict())
    store.set_status(run_id, "interrupted", error="the process running it stopped")
    rc, out, err = _main_json(capsys, "resume", run_id, "--runs-dir", str(tmp_path))
    assert rc == 2 and out is None and err.strip().splitlines() == [
        f"error: run {run_id} has no checkpoint: resume starts over from step 0; "
        "add --from-start to train it again from step 0 under the same id"]
    assert store.get(run_id).status == "interrupted"  # refused: left as it was
    rc, out, err = _main_json(capsys, "resume", run_id, "--from-start", "--runs-dir", str(tmp_path))
    assert rc == 0 and out["run_id"] == run_id and out["status"] == "finished" and out["steps"] == 3, (out, err)
    assert err.splitlines()[0] == f"resuming run {run_id} - no checkpoint: resume starts over from step 0"
    rc, _, err = _main_json(capsys, "resume", "nosuchrun", "--runs-dir", str(tmp_path))
    assert rc == 2 and err.strip().splitlines() == [f"error: no run 'nosuchrun' in {tmp_path} (see `python -m core runs`)"]
