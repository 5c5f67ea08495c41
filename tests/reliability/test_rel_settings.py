"""Bad settings are refused before anything is queued: one st.error on the Train page, one line and exit 2 in
the CLI, and no run row in the store either way."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.cli import main
from core.store import RunStore
from helpers import app_manager

from .kit import InstantTrain

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def manager(home, monkeypatch):
    with app_manager(home, monkeypatch, InstantTrain()) as m:
        yield m


def _train_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90).run()
    assert not at.exception, at.exception
    at.selectbox(key="dataset").select("digits")
    at.selectbox(key="backbone").select("test_vit")
    at.multiselect(key="objectives").set_value(["ce", "lacvit"])
    at.number_input(key="n_per_class").set_value(10)
    return at.run()


# ---------------------------------------------------------------------------------- Train page
@pytest.mark.parametrize("key, value, message", [  # refused in the form, named by its control (issue 17.7)
    ("lr", -1.0, "**Learning rate (heads)**: must be a number in (0, 100], not -1.0."),
    ("lr", 0.0, "**Learning rate (heads)**: must be a number in (0, 100], not 0.0."),
    ("temperature", 0.0, "**Temperature τ (LaCViT)**: must be a number in [0.0001, 100], not 0.0."),
    ("temperature", -0.5, "**Temperature τ (LaCViT)**: must be a number in [0.0001, 100], not -0.5."),
    ("steps", 0, "**Steps**: must be a whole number in [1, 10000000], not 0."),
])
def test_train_page_refuses_an_out_of_range_number_and_queues_nothing(manager, key, value, message):
    at = _train_page()
    at.number_input(key=key).set_value(value).run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [message]
    assert at.button(key="start").disabled  # never replaced by a valid value behind the user's back
    assert manager.store.list() == [] and manager.queued() == [] and manager._train_fn.configs == []


def test_train_page_shows_the_core_error_and_queues_nothing(manager):
    """In range for the form, refused by the run's validation: the core's message, nothing queued."""
    at = _train_page()
    at.number_input(key="batch_size").set_value(500).run()
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["batch size 500 is larger than the 100 training images; lower it to at most 100"]
    assert manager.store.list() == [] and manager.queued() == [] and manager._train_fn.configs == []


def test_train_page_refuses_an_unknown_model_name(manager):
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state["backbone"] = "vit_nonexistent_model"  # typed into the searchable select
    at.run()
    assert any(e.value.startswith("unknown backbone 'vit_nonexistent_model'") for e in at.error)
    assert at.button(key="start").disabled
    assert manager.store.list() == []


def test_nan_cannot_reach_a_run_from_the_page(manager):
    """A NaN in a number field is refused by name and Start stays off: no run ever sees it."""
    at = _train_page()
    at.number_input(key="lr").set_value(float("nan")).run()
    assert [e.value for e in at.error] == ["**Learning rate (heads)**: type a number."]
    assert at.button(key="start").disabled
    assert manager.store.list() == [] and manager._train_fn.configs == []


# ---------------------------------------------------------------------------------------- CLI
BASE = ["train", "--backbone", "test_vit", "--objective", "ce", "--dataset", "digits", "--n-per-class", "10"]


@pytest.mark.parametrize("args, message", [
    (["--lr", "-0.5"], "error: learning rate must be > 0, not -0.5"),
    (["--lr", "inf"], "error: learning rate must be a finite number, not inf"),
    (["--backbone-lr", "nan"], "error: backbone learning rate must be a finite number, not nan"),
    (["--batch-size", "5000"], "error: batch size 5000 is larger than the 100 training images; lower it to at most 100"),
    (["--temperature", "-1"], "error: temperature must be > 0, not -1.0"),
    (["--epochs", "0"], "error: epochs must be > 0, not 0.0"),
    (["--backbone", "vit_nonexistent_model"], "error: unknown backbone 'vit_nonexistent_model'"),
    (["--objective", "ce,simclr"], "error: unknown objective 'simclr'"),
    (["--dataset", "../../etc"], "error: unknown dataset '../../etc'; choose from: "),
])
def test_cli_bad_settings_exit_2_with_one_line_and_no_run(tmp_path, capsys, args, message):
    rc = main([*BASE, *args, "--runs-dir", str(tmp_path)])
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(message), out.err
    assert out.out == ""
    assert not (tmp_path / "runs").exists() and (not (tmp_path / "runs.db").exists() or RunStore(tmp_path).list() == [])


def test_cli_bad_disk_budget_setting_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMBEDLAB_RUN_DISK_MB", "lots")
    rc = main([*BASE, "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: EMBEDLAB_RUN_DISK_MB must be a number of megabytes, not 'lots'"]
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------ upload cap note
def test_the_upload_note_states_the_server_cap(manager):
    import tomllib

    cap = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    at = AppTest.from_file(APP, default_timeout=90).run()
    notes = [c.value for c in at.caption if "upload limit" in c.value]
    note = (":material/info: At least 2 class folders with 2 images each; up to {} MB per {} (the server's upload "
            "limit). Corrupt, empty and non-image files are skipped and listed.")
    assert notes == [note.format(cap, "zip")]
    at.segmented_control(key="import_source").set_value("folder").run()  # a folder: the cap is per file
    assert [c.value for c in at.caption if "upload limit" in c.value] == [note.format(cap, "image")]


# ------------------------------------------------- issue 15: every number, device and weights file
def _weights(tmp_path, kind: str) -> str:
    from safetensors.torch import save_file

    if kind == "directory":
        (tmp_path / "weights-dir").mkdir()
        return str(tmp_path / "weights-dir")
    path = tmp_path / f"{kind}.safetensors"
    if kind == "empty":
        path.write_bytes(b"")
    else:  # the right names, the wrong shape: refused naming the tensor, before a run exists
        import timm
        state = timm.create_model("test_vit", pretrained=False, num_classes=0).state_dict()
        state["blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
        save_file(state, str(path))
    return str(path)


@pytest.mark.parametrize("args, message", [
    (["--steps", "99999999999999999999999"], "error: steps must be a whole number in [1, 10000000], not 1e+23"),
    (["--steps", "10000001"], "error: steps must be a whole number in [1, 10000000], not 10000001"),
    (["--seed", "-1"], "error: seed must be a whole number in [0, 4294967295], not -1"),
    (["--seed", "4294967296"], "error: seed must be a whole number in [0, 4294967295], not 4294967296"),
    (["--device", "foo"], "error: device 'foo' is not one EmbedLab runs on: use auto, cpu, cuda or cuda:N"),
    (["--device", "meta"], "error: device 'meta' is not one EmbedLab runs on: use auto, cpu, cuda or cuda:N"),
    (["--device", "cuda"], "error: device 'cuda' was asked for but no CUDA GPU is available; use --device cpu"),
    (["--device", "cuda:7"], "error: device 'cuda:7' was asked for but no CUDA GPU is available; use --device cpu"),
    (["--image-size", "0"], "error: image size must be a whole number in [16, 1024], not 0"),
    (["--image-size", "4096"], "error: image size must be a whole number in [16, 1024], not 4096"),
    (["--stage1-fraction", "2"], "error: stage 1 fraction must be a number in (0, 1), not 2.0"),
    (["--stage1-fraction", "0"], "error: stage 1 fraction must be a number in (0, 1), not 0.0"),
    (["--batch-size", "99999999999999"], "error: batch size must be a whole number in [2, 65536], not 99999999999999"),
    (["--temperature", "1e-9"], "error: temperature must be a number in [0.0001, 100], not 1e-09"),
    (["--lr", "1e6"], "error: learning rate must be a number in (0, 100], not 1000000.0"),
    (["--eval-every", "0"], "error: eval every must be a whole number in [1, 10000000], not 0"),
    (["--objective", ""], "error: --objective names no objective: give one or a comma list of ce, lacvit, flyp"),
    (["--objective", " , "], "error: --objective names no objective: give one or a comma list of ce, lacvit, flyp"),
    (["--weights", "{empty}"], "error: weights file {empty} is empty (0 bytes)"),
    (["--weights", "{directory}"], "error: weights file {directory} is a directory, not a weights file"),
    (["--weights", "{shape}"], "error: weights file {shape} does not fit backbone 'test_vit': tensor "
                               "'blocks.0.attn.qkv.weight' is [3, 3] in the file but [192, 64] in the model"),
])
def test_cli_every_bad_argument_exits_2_with_one_line_before_any_run(tmp_path, capsys, args, message):
    files = {k: _weights(tmp_path, k) for k in ("empty", "directory", "shape") if any(f"{{{k}}}" in a for a in args)}
    args, message = [a.format(**files) for a in args], message.format(**files)
    home = tmp_path / "home"
    rc = main([*BASE, "--steps", "4", *args, "--runs-dir", str(home)])
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(message), out.err
    assert "internal error" not in out.err and "Traceback" not in out.err and out.out == ""
    assert not (home / "runs").exists() and (not (home / "runs.db").exists() or RunStore(home).list() == [])


@pytest.mark.parametrize("kind", ["a file", "unwritable"])
def test_cli_runs_dir_that_is_a_file_or_unwritable_is_one_line(tmp_path, capsys, monkeypatch, kind):
    target = tmp_path / "passwd"
    if kind == "a file":
        target.write_text("root:x:0:0\n")
        message = f"error: EmbedLab home {target} is a file, not a folder; use another --runs-dir or EMBEDLAB_HOME"
    else:  # as root chmod does not stop a write, so the permission check itself is made to say no
        target.mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **kw: False if Path(p) == target else real_access(p, m, **kw))
        message = (f"error: EmbedLab home {target} is read-only: runs cannot be saved there (listing them still works); "
                   "use a writable --runs-dir or EMBEDLAB_HOME")
    rc = main([*BASE, "--steps", "4", "--runs-dir", str(target)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [message]
    assert kind == "a file" and target.read_text() == "root:x:0:0\n" or not (target / "runs").exists()


def test_cli_a_huge_steps_value_is_one_line_in_a_real_process(tmp_path):
    """The case that printed a numpy traceback from the training process and left a failed run."""
    from helpers import start_cli

    proc = start_cli(*BASE, "--steps", "99999999999999999999999", runs_dir=tmp_path)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 2 and out == ""
    assert err.strip().splitlines() == ["error: steps must be a whole number in [1, 10000000], not 1e+23"], err
    assert not (tmp_path / "runs").exists()


def test_a_missing_gpu_index_is_refused_where_cuda_exists(monkeypatch):
    import torch as _torch

    from core.device import pick_device
    from core.errors import InvalidConfig

    monkeypatch.setattr(_torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == _torch.device("cuda", 0)
    with pytest.raises(InvalidConfig, match=r"^device 'cuda:7' does not exist: this machine has 1 CUDA GPU\(s\), cuda:0..cuda:0$"):
        pick_device("cuda:7")


def test_the_range_table_covers_every_numeric_setting():
    """A numeric TrainConfig field added without a RANGES row would go unchecked: this names it."""
    import dataclasses

    from core.train import RANGES, TrainConfig

    numeric = {f.name for f in dataclasses.fields(TrainConfig) if any(t in str(f.type) for t in ("int", "float"))}
    checked_elsewhere = {"warmup"} | {n for n in numeric if n.startswith("cs_")}  # validate() / content_style
    assert numeric - checked_elsewhere - set(RANGES) == set()


def test_train_page_refuses_an_out_of_range_temperature(manager):
    at = _train_page()
    at.number_input(key="temperature").set_value(1e-5).run()
    assert not at.exception, at.exception
    assert at.button(key="start").disabled
    # the range is shown as literal text, named by the control (core/safe_text.md_text escapes the brackets)
    assert [e.value.replace("\\", "") for e in at.error] == ["**Temperature τ (LaCViT)**: must be a number in [0.0001, 100], not 1e-05."]
    assert manager.store.list() == [] and manager.queued() == []


@pytest.mark.parametrize("args, message", [
    (["select", "--backbone", "test_vit", "--dataset", "digits", "--strategy", "random", "--budget", "10", "--seed", "-1"],
     "error: seed must be a whole number in [0, 4294967295], not -1"),
    (["select", "--backbone", "test_vit", "--dataset", "digits", "--strategy", "random", "--budget", "10", "--device", "foo"],
     "error: device 'foo' is not one EmbedLab runs on"),
    (["label-curve", "--backbone", "test_vit", "--dataset", "digits", "--steps", "99999999999999999999", "--labels", "10"],
     "error: steps must be a whole number in [1, 10000000], not 1e+20"),
    (["label-curve", "--backbone", "test_vit", "--dataset", "digits", "--steps", "5", "--objectives", ""],
     "error: objectives names no objective: give a comma list such as ce,content-style"),
    (["runs"], "error: EmbedLab home {file} is a file, not a folder"),
])
def test_other_commands_refuse_bad_arguments_with_one_line(tmp_path, capsys, args, message):
    (tmp_path / "file").write_text("x")
    home = tmp_path / ("file" if "{file}" in message else "home")
    rc = main([*args, "--runs-dir", str(home)])
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(message.format(file=tmp_path / "file")), out.err
    assert "internal error" not in out.err and not (tmp_path / "home" / "runs").exists()


def test_feature_views_has_one_range_the_clean_only_cache_included(tmp_path):
    """0 (the clean view only, what selection pools use) up to 32 pass; one check, one message."""
    from core.errors import InvalidConfig
    from core.train import TrainConfig, validate

    base = dict(backbone="test_vit", dataset="digits", objective="ce", steps=2, batch_size=8)
    for k in (0, 32):
        assert validate(TrainConfig(**base, feature_views=k), tmp_path).feature_views == k
    with pytest.raises(InvalidConfig, match=r"feature views .* in \[0, 32\], not 33"):
        validate(TrainConfig(**base, feature_views=33), tmp_path)
