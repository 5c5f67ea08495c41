"""Resource faults end one run, never the process: a full disk under the feature cache or the run folder,
a file-size limit, a read-only home. The real full disk is a tiny tmpfs (needs root to mount; skipped
otherwise); the free-space probe's test hook (EMBEDLAB_TEST_FREE_BYTES) covers the same paths anywhere."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.diskio import FREE_ENV
from core.store import RunStore
from core.train import CHECKPOINT, TrainConfig, train

from helpers import REPO, cli_env, finish, start_cli

from .kit import TINY_RUN

CLI_RUN = ["--objective", "ce", "--backbone", "test_vit", "--dataset", "digits", "--steps", "2", "--n-per-class", "10",
           "--eval-per-class", "4", "--batch-size", "8", "--quiet"]


@contextlib.contextmanager
def mounted(target: Path, *options: str, source: str = "tmpfs", fstype: str | None = "tmpfs"):
    """Mount something at `target` for the test (a tiny tmpfs, a read-only bind); skip where mounting is refused."""
    target.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", *(["-t", fstype] if fstype else []), *options, source, str(target)]
    if os.geteuid() != 0 or subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("mounting needs root (a tmpfs or a read-only bind mount)")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def read_only(folder: Path):
    view = folder.with_name(folder.name + "-ro")
    with mounted(view, "--bind", source=str(folder), fstype=None):
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only")
        yield view


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob("*") if "tmp" in p.name)


# ------------------------------------------------------------------------------ full disk
def test_a_full_disk_under_the_feature_cache_fails_the_run_not_the_process(tmp_path):
    """Was: SIGBUS from the memory-mapped cache write, exit 135 with no message, a .tmp.npy left behind;
    in the app the whole Streamlit server died."""
    home = tmp_path / "home"
    with mounted(home / "cache" / "features", "-o", "size=16k"):
        env = {FREE_ENV: str(10**12)}  # the probe lies: the real ENOSPC of the write itself is what is tested
        proc = subprocess.Popen([sys.executable, "-m", "core", "train", *CLI_RUN, "--trainable", "frozen", "--runs-dir", str(home)],
                                cwd=REPO, env={**cli_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = finish(proc)
        left = _leftovers(home / "cache" / "features")
    assert done.rc == 1, (done.rc, done.stderr)  # a failed run, not a signal (135 = SIGBUS)
    result = done.last_json()
    assert result["status"] == "failed"
    assert result["error"].startswith(f"not enough free space in {home / 'cache' / 'features'} for cached features: need ")
    assert "Traceback" not in done.stderr
    assert left == []
    assert RunStore(home).get(result["run_id"]).status == "failed"


def test_the_free_space_probe_refuses_a_feature_cache_that_does_not_fit(tmp_path, monkeypatch):
    store, root = RunStore(tmp_path / "runs"), tmp_path
    monkeypatch.setenv(FREE_ENV, "1000")
    r = train(TrainConfig(objective="ce", steps=2, **{**TINY_RUN, "trainable": "frozen"}), store=store, root=root)
    assert r["status"] == "failed"
    features = root / "cache" / "features"
    assert r["error"].startswith(f"not enough free space in {features} for cached features: need ")
    assert r["error"].endswith(", 1.0 kB free")
    assert list(features.iterdir()) == []
    monkeypatch.delenv(FREE_ENV)  # space freed: the same process goes on and the same run now works
    assert train(TrainConfig(objective="ce", steps=2, **{**TINY_RUN, "trainable": "frozen"}), store=store, root=root)["status"] == "finished"


def test_a_checkpoint_that_does_not_fit_fails_the_run_with_the_folder_named(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    monkeypatch.setenv(FREE_ENV, "2000")
    r = train(TrainConfig(objective="ce", steps=2, **TINY_RUN), store=store, root=tmp_path)
    run_dir = store.run_dir(r["run_id"])
    assert r["status"] == "failed"
    assert r["error"].startswith(f"not enough free space in {run_dir} for the checkpoint: need ")
    assert not (run_dir / CHECKPOINT).exists() and _leftovers(run_dir) == []


_FSIZE_SCRIPT = r"""
import json, resource, signal, sys, numpy as np, torch
from pathlib import Path
from core.diskio import NpyWriter, write_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process: EFBIG is what a full quota looks like
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
out, folder = {}, Path(sys.argv[1])
try:
    with NpyWriter(folder / "big.npy", (64, 4096), np.float16) as w:
        for _ in range(64):
            w.write(np.ones((1, 4096), np.float16))
except OSError as exc:
    out["npy"] = f"{type(exc).__name__}: {exc}"
try:
    write_atomic(folder / "state.pt", lambda tmp: torch.save({"x": torch.zeros(1 << 18)}, open(tmp, "wb")), need=1 << 20)
except OSError as exc:
    out["torch"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def test_writes_past_a_file_size_limit_raise_instead_of_killing_the_process(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    proc = subprocess.run([sys.executable, "-c", _FSIZE_SCRIPT, str(folder)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["npy"] == (f"DiskFull: not enough free space in {folder}: need 528 kB (a file-size limit)")
    assert out["torch"].startswith(f"DiskFull: not enough free space in {folder}: need 1.0 MB, ")
    assert list(folder.iterdir()) == []  # no temp file left by either


# ---------------------------------------------------------------------------- read-only home
def test_a_read_only_home_still_lists_runs(tmp_path):
    home = tmp_path / "home"
    done = finish(start_cli("train", *CLI_RUN, runs_dir=home))
    run_id = done.last_json()["run_id"]
    with read_only(home) as view:
        runs = finish(start_cli("runs", "--json", runs_dir=view))
        show = finish(start_cli("show", run_id, "--json", runs_dir=view))
        datasets = finish(start_cli("datasets", runs_dir=view))
        empty = finish(start_cli("runs", runs_dir=view / "runs"))  # a read-only folder with no runs.db yet
    assert runs.rc == 0, runs.stderr
    assert [r["run_id"] for r in runs.last_json()] == [run_id] and runs.last_json()[0]["status"] == "finished"
    assert show.rc == 0 and show.last_json()["status"] == "finished"
    assert datasets.rc == 0 and "digits" in datasets.stdout
    assert empty.rc == 0 and empty.stdout.strip() == f"no runs in {view / 'runs'}"
    assert "Traceback" not in runs.stderr + show.stderr + datasets.stderr + empty.stderr


def test_the_runs_page_on_a_read_only_home(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    home = tmp_path / "home"
    store = RunStore(home)
    run_id = store.create_run(TrainConfig(objective="ce", **TINY_RUN).to_dict())
    store.set_status(run_id, "running")
    store.set_status(run_id, "finished")
    with read_only(home) as view:
        monkeypatch.setenv("EMBEDLAB_HOME", str(view))
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
        at.switch_page("pages/runs.py").run()
        assert not at.exception, at.exception
        assert list(at.dataframe[0].value["run"]) == [run_id]
