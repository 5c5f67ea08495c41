"""Bad settings are refused before anything is queued: one st.error on the Train page, one line and exit 2 in
the CLI, and no run row in the store either way."""
from __future__ import annotations

from pathlib import Path

import pytest
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
@pytest.mark.parametrize("key, value, message", [
    ("lr", -1.0, "learning rate must be > 0, not -1.0"),
    ("lr", 0.0, "learning rate must be > 0, not 0.0"),
    ("temperature", 0.0, "temperature must be > 0, not 0.0"),
    ("temperature", -0.5, "temperature must be > 0, not -0.5"),
    ("steps", 0, "steps must be a positive whole number, not 0"),
    ("batch_size", 500, "batch size 500 is larger than the 100 training images; lower it to at most 100"),
])
def test_train_page_shows_the_error_and_queues_nothing(manager, key, value, message):
    at = _train_page()
    at.number_input(key=key).set_value(value).run()
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [message]
    assert manager.store.list() == [] and manager.queued() == [] and manager._train_fn.configs == []


def test_train_page_refuses_an_unknown_model_name(manager):
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state["backbone"] = "vit_nonexistent_model"  # typed into the searchable select
    at.run()
    assert any(e.value.startswith("unknown backbone 'vit_nonexistent_model'") for e in at.error)
    assert at.button(key="start").disabled
    assert manager.store.list() == []


def test_nan_cannot_reach_a_run_from_the_page(manager):
    """A browser number field cannot hold NaN; Streamlit drops it and keeps the last valid value."""
    at = _train_page()
    at.number_input(key="lr").set_value(float("nan")).run()
    assert at.number_input(key="lr").value == 1e-3
    at.button(key="start").click().run()
    ids = at.session_state["train_batches"][0]
    assert all(manager.wait(r, 30) for r in ids)
    assert [manager.store.get(r).config["lr"] for r in ids] == [1e-3, 1e-3]  # the runs never see NaN


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
