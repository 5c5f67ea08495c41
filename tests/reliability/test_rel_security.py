"""Security: only safe loaders touch weights and checkpoints; every user-supplied name or id stays inside
EMBEDLAB_HOME; the server binds to localhost with XSRF protection on by default."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tomllib

import pytest

from core import datasets as ds
from core.cli import main
from core.errors import UnknownName, UnsafePath
from core.jobs import JobManager
from core.store import RunStore
from core.train import TrainConfig, validate

from helpers import REPO

from .kit import TINY_RUN, snapshot


# torch warns about the pickle protocol of the hostile files before refusing them
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")

class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file (a stand-in for os.system)
        return (open, (str(self.marker), "w"))


# ----------------------------------------------------------------------------- weights files
@pytest.mark.parametrize("filename, style", [("evil.pt", "pickle"), ("evil.pth", "torch.save"),
                                             ("evil.safetensors", "pickle")])
def test_a_malicious_weights_pickle_is_refused_and_never_executed(tmp_path, capsys, filename, style):
    import torch

    marker, evil = tmp_path / "pwned", tmp_path / filename
    payload = {"patch_embed.proj.weight": torch.zeros(1), "x": _Payload(marker)}
    if style == "pickle":
        evil.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, evil)
    runs = tmp_path / "runs-home"
    rc = main(["train", "--backbone", "test_vit", "--objective", "ce", "--dataset", "digits", "--n-per-class", "10",
               "--weights", str(evil), "--runs-dir", str(runs)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    if filename.endswith(".safetensors"):
        assert err[0].startswith(f"error: cannot read weights file {evil}: ")
    else:
        assert err[0].startswith(f"error: weights file {evil} is refused: only safetensors files and plain tensor "
                                 "state dicts are loaded (torch.load with weights_only=True)")
    assert "weights_only=False" not in err[0]  # never the advice to turn the safe loader off
    assert not marker.exists()  # the payload never ran
    assert not (runs / "runs").exists() and RunStore(runs).list() == []  # refused before any run existed


def test_a_good_weights_file_still_validates(tmp_path):
    import torch
    from safetensors.torch import save_file

    from core.backbones import create_backbone

    state = {k: v.contiguous() for k, v in create_backbone("test_vit", weights="random").image_tower().state_dict().items()}
    path = tmp_path / "ok.safetensors"
    save_file(state, str(path))
    cfg = validate(TrainConfig(objective="ce", steps=2, weights=str(path), **TINY_RUN))
    assert cfg.weights == str(path)
    torch.save(state, tmp_path / "ok.pt")
    assert validate(TrainConfig(objective="ce", steps=2, weights=str(tmp_path / "ok.pt"), **TINY_RUN))


def test_an_uploaded_weights_file_is_kept_only_after_a_safe_load(tmp_path):
    import torch

    from core.backbones import create_backbone, import_weights_file
    from core.errors import WeightsUnavailable

    home_dir = tmp_path / "home"
    marker, evil = tmp_path / "pwned", tmp_path / "upload"
    evil.write_bytes(pickle.dumps({"x": _Payload(marker)}))
    with pytest.raises(WeightsUnavailable, match="is refused: only safetensors files and plain tensor state dicts"):
        import_weights_file(evil, "evil.pt", home_dir)
    assert not marker.exists() and not any((home_dir / "weights").glob("*"))  # nothing ran, nothing kept
    with pytest.raises(UnsafePath):
        import_weights_file(evil, "evil\n.pt", home_dir)
    with pytest.raises(WeightsUnavailable, match="must be a .safetensors, .pt, .pth, .bin file"):
        import_weights_file(evil, "evil.exe", home_dir)

    good = tmp_path / "upload2"
    torch.save(create_backbone("test_vit", weights="random").image_tower().state_dict(), good)
    kept = import_weights_file(good, "mine.pt", home_dir)
    assert kept.parent == (home_dir / "weights").resolve() and kept.name.endswith("-mine.pt")
    assert kept.read_bytes() == good.read_bytes()


def test_the_job_manager_only_takes_weights_files_imported_into_home(home):
    import torch

    from core.backbones import create_backbone, import_weights_file
    from core.errors import InvalidConfig

    outside = home.parent / "outside.pt"
    torch.save(create_backbone("test_vit", weights="random").image_tower().state_dict(), outside)
    store = RunStore(home)
    manager = JobManager(store)
    try:
        with pytest.raises(InvalidConfig, match="not an imported weights file"):
            manager.submit(TrainConfig(objective="ce", steps=2, weights=str(outside), **TINY_RUN))
        with pytest.raises(InvalidConfig, match="not an imported weights file"):
            manager.submit(TrainConfig(objective="ce", steps=2, weights=str(home / "weights" / ".." / "x.pt"), **TINY_RUN))
        assert store.list() == []  # refused before any run existed
        kept = import_weights_file(outside, "outside.pt", home)
        run_id = manager.submit(TrainConfig(objective="ce", steps=2, weights=str(kept), **TINY_RUN))
        assert manager.wait(run_id, 120) and store.get(run_id).status == "finished"
    finally:
        manager.shutdown(timeout=30)


# --------------------------------------------------------------------- names and ids confined
@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "datasets/../../x", "digits/../digits"])
def test_a_dataset_name_never_reads_outside_home(home, name):
    with pytest.raises(UnknownName) as info:
        validate(TrainConfig(objective="ce", steps=2, **{**TINY_RUN, "dataset": name}))
    assert str(info.value).startswith(f"unknown dataset {name!r}; choose from: ")
    with pytest.raises(UnknownName):
        ds.load_dataset(name, home)


@pytest.mark.parametrize("selection", ["../../etc/passwd", "/etc/passwd", "x/../../y"])
def test_a_selection_id_never_reads_outside_home(home, selection):
    with pytest.raises(UnsafePath) as info:
        validate(TrainConfig(objective="ce", steps=2, selection=selection, **TINY_RUN))
    assert str(info.value).startswith(f"selection id {selection!r} is not allowed")


def test_run_ids_are_confined_in_store_manager_and_cli(tmp_path, capsys):
    home = tmp_path / "home"
    store = RunStore(home)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    rel = os.path.relpath(victim, home / "runs")
    for bad in (rel, str(victim), "../runs.db", "a/b"):
        with pytest.raises(UnsafePath):
            store.run_dir(bad)
        with pytest.raises(UnsafePath):
            store.delete(bad)
        with pytest.raises(UnsafePath):
            store.create_run({"objective": "ce"}, run_id=bad)
        with pytest.raises(UnknownName) as info:
            JobManager(store, train_fn=lambda *a, **k: None).delete(bad)
        assert str(info.value) == f"no run {bad!r} in {home}"
        assert main(["show", bad, "--runs-dir", str(home)]) == 2
        assert capsys.readouterr().err.strip() == f"error: no run {bad!r} in {home}"
    # a link planted inside runs/ is not followed either
    (home / "runs").mkdir(exist_ok=True)
    (home / "runs" / "planted").symlink_to(victim, target_is_directory=True)
    with pytest.raises(UnsafePath) as info:
        store.run_dir("planted")
    assert str(info.value) == f"path 'runs/planted' points outside {home.resolve()}"
    with pytest.raises(UnsafePath):
        store.delete("planted")
    assert (victim / "keep.txt").read_text() == "precious" and (home / "runs.db").exists()


def test_cli_analysis_commands_refuse_path_like_run_ids(home, capsys):
    RunStore(home).create_run({"objective": "ce"}, status="finished", run_id="real-run")
    for cmd in (["analyze", "../../etc/passwd"], ["export", "/etc/passwd", "--format", "tsv"]):
        rc = main([*cmd, "--runs-dir", str(home)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: no run {cmd[1]!r} in {home}"), err


def test_the_cli_import_name_is_confined(tmp_path, capsys):
    before = snapshot(tmp_path)
    rc = main(["import-dataset", str(tmp_path / "nothing.zip"), "--name", "../../evil", "--data-dir", str(tmp_path / "d")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "error: dataset name '../../evil' is not allowed: use letters, digits, spaces, '.', '_', '+' or '-' "
        "(at most 100 characters, no '..' and no path separators)")
    assert set(snapshot(tmp_path)) - set(before) <= {"d"}  # at most the (empty) data dir itself


# ----------------------------------------------------------------------------- server config
def test_streamlit_config_binds_localhost_with_xsrf_on():
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    server = cfg["server"]
    assert server["address"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True
    assert server.get("enableCORS", True) is True  # CORS off would make Streamlit drop XSRF protection
    assert server["maxUploadSize"] == 200
    assert cfg["browser"]["gatherUsageStats"] is False


def test_streamlit_reads_those_settings():
    """Streamlit itself, started from the repo root as `make run` does, sees localhost and XSRF on."""
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.get_option('server.address'), config.get_option('server.enableXsrfProtection'), "
            "config.get_option('server.maxUploadSize'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout.split() == ["127.0.0.1", "True", "200"], out.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_binds_localhost_unless_host_is_given():
    text = (REPO / "Makefile").read_text()
    assert any(line.split("#")[0].split() == ["HOST", "?=", "127.0.0.1"] for line in text.splitlines())
    assert "make run HOST=0.0.0.0" in text  # the documented LAN option

    def dry_run(*extra):
        out = subprocess.run(["make", "-n", "-o", ".venv/.stamp-requirements", "run", *extra], cwd=REPO,
                             capture_output=True, text=True, timeout=30, check=False)
        return next(line for line in out.stdout.splitlines() if "streamlit run" in line)

    assert "--server.address 127.0.0.1 " in dry_run()
    assert "--server.address 0.0.0.0 " in dry_run("HOST=0.0.0.0")
