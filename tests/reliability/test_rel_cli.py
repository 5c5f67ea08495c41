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


def test_cli_hostile_zip_exits_2_with_one_line_and_writes_nothing_outside(ran):
    base, before, done = ran
    rc, out, err = done["slip"]
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == ["error: slip.zip refused: entry '../../outside.png' points outside the archive ('..')"]
    assert "Traceback" not in err
    assert not any(p.endswith("outside.png") for p in _new_files(base, before))
    assert snapshot(base / "data-slip") in ({}, {"datasets": "dir"})  # nothing imported, no staging left
    assert not (base / "env-home").exists() and list((base / "cwd").iterdir()) == []  # DIR was the only place touched


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


def test_cli_nan_learning_rate_exits_2_before_any_run(ran):
    base, _, done = ran
    rc, out, err = done["nan"]
    assert (rc, out) == (2, "")
    assert err.strip().splitlines() == ["error: learning rate must be a finite number, not nan"]
    assert not (base / "data-train" / "runs").exists() and not (base / "data-train" / "runs.db").exists()
