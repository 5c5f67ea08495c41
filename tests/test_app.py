"""The Streamlit app through AppTest: every page renders, the Train form queues runs, Runs acts on them.

The process-wide JobManager is swapped for one with a fake training function (patched getters in
pages/_ui.py); the real `core.train.validate` still checks every config, as in the app.
"""
import io
import socket
import sqlite3
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import pages._ui as ui
from helpers import app_manager, dead_pid
from core.train import TrainConfig

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["pages/train.py", "pages/explore.py", "pages/compare.py", "pages/runs.py", "pages/learn.py"]
TIMEOUT = 60  # the first run imports torch, timm and open_clip


class QuickTrain:
    """A fake train(): finishes at once with a summary, or waits for `gate` (to see runs queued / running)."""

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.configs: list[TrainConfig] = []

    def __call__(self, cfg, *, store, run_id, root, on_event, should_stop, resume):
        self.configs.append(cfg)
        store.set_status(run_id, "running")
        on_event({"type": "step", "step": 1, "total": cfg.steps, "stage": "ce", "loss": 2.0})
        if self.gate is not None:
            while not self.gate.wait(0.01):
                if should_stop():
                    store.set_status(run_id, "cancelled", error="cancelled by the user")
                    return {"run_id": run_id, "status": "cancelled", "error": "cancelled by the user"}
        on_event({"type": "eval", "step": 1, "val_acc": 0.75})
        summary = {"val_acc": 0.75, "test_acc": 0.7, "seconds": 1.5, "steps": cfg.steps}
        if cfg.objective == "flyp":
            summary["zeroshot_acc"] = 0.4
        store.update_summary(run_id, summary)
        store.set_status(run_id, "finished")
        return {"run_id": run_id, "status": "finished", "error": None, **summary}


@pytest.fixture
def manager(home, monkeypatch):
    with app_manager(home, monkeypatch, QuickTrain()) as m:
        yield m


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


def _wait(manager, ids, timeout=30):
    for run_id in ids:
        assert manager.wait(run_id, timeout)


# ------------------------------------------------------------------------------------- shell
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(manager, page):
    at = _app(page)  # no exception on any page
    if page in ("pages/train.py", "pages/runs.py", "pages/learn.py"):
        assert not at.error


def test_sidebar_shows_device_home_and_offline(manager, home):
    at = _app()
    text = " ".join(m.value for m in at.sidebar.markdown) + " ".join(c.value for c in at.sidebar.caption)
    assert "Device" in text and "CPU" in text
    assert "offline" in text
    assert str(home) in text


# ------------------------------------------------------------------------------------- Train
def test_train_defaults_start_a_three_way_comparison(manager):
    """No typing: the default state queues CE, LaCViT and FLYP with per-objective default backbones."""
    at = _app()
    assert at.selectbox(key="backbone").value == "auto"
    assert at.multiselect(key="objectives").value == ["ce", "lacvit", "flyp"]
    assert at.selectbox(key="dataset").value in ("fashion-mnist", "mnist5k")
    at.button(key="start").click().run()
    assert not at.exception and not at.error
    runs = manager.store.list()
    assert sorted(r.objective for r in runs) == ["ce", "flyp", "lacvit"]
    by_objective = {r.objective: r for r in runs}
    assert by_objective["ce"].backbone == by_objective["lacvit"].backbone == "efficientnet_lite0"
    assert by_objective["flyp"].backbone == "lite0-minilm"
    assert len({(r.dataset, r.config["steps"], r.config["seed"]) for r in runs}) == 1
    assert at.session_state["train_batches"][0] == [r.id for r in sorted(runs, key=lambda r: r.created)]
    _wait(manager, [r.id for r in runs])
    at.run()  # the live panel (a fragment) shows the finished runs with their headline numbers
    labels = [m.label for m in at.metric]
    assert labels.count("Val acc") == 3 and "Zero-shot" in labels
    assert {b.label for b in at.button} >= {"Explore", "Compare these"}


def test_train_form_settings_reach_the_configs(manager):
    at = _app()
    at.selectbox(key="backbone").select("test_clip")
    at.selectbox(key="dataset").select("digits")
    at.multiselect(key="objectives").set_value(["ce", "flyp"])
    at.number_input(key="steps").set_value(12)
    at.number_input(key="batch_size").set_value(16)
    at.number_input(key="n_per_class").set_value(10)
    at.number_input(key="seed").set_value(3)
    at.number_input(key="temperature").set_value(0.2)
    at.selectbox(key="trainable").select("all")
    at.run()
    assert at.button(key="start").label == "Start 2 runs"
    at.button(key="start").click().run()
    assert not at.error
    configs = {r.objective: r.config for r in manager.store.list()}
    assert set(configs) == {"ce", "flyp"}
    for cfg in configs.values():
        assert (cfg["backbone"], cfg["dataset"], cfg["steps"], cfg["batch_size"], cfg["n_per_class"], cfg["seed"],
                cfg["temperature"], cfg["trainable"]) == ("test_clip", "digits", 12, 16, 10, 3, 0.2, "all")


def test_train_ood_shift_reaches_the_configs(manager):
    at = _app()
    at.selectbox(key="backbone").select("test_vit")
    at.selectbox(key="dataset").select("digits")
    at.multiselect(key="objectives").set_value(["ce"])
    assert at.number_input(key="shift_severity").disabled  # the default shift has no severity of its own
    at.selectbox(key="shift").select("gaussian_blur").run()
    at.number_input(key="shift_severity").set_value(5)
    at.run()
    at.button(key="start").click().run()
    assert not at.error
    assert [r.config["shift"] for r in manager.store.list()] == ["gaussian_blur:5"]


def test_train_fine_tuning_depth_is_a_visible_choice_stored_resolved(manager, monkeypatch):
    """Outside Advanced settings: trainable depth and LaCViT's stage-2 encoder; 'auto' is stored as what it resolved to."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    at = _app()
    depth = at.selectbox(key="trainable")
    assert depth.value == "auto" and "last block" in depth.format_func(depth.value)
    assert at.selectbox(key="stage2_encoder").value == "auto"
    at.selectbox(key="backbone").select("test_vit")
    at.selectbox(key="dataset").select("digits")
    at.multiselect(key="objectives").set_value(["ce", "lacvit"])
    at.number_input(key="batch_size").set_value(16)
    at.button(key="start").click().run()
    assert not at.error
    stored = {r.objective: r.config for r in manager.store.list()}
    assert {o: (c["trainable"], c["stage2_train_encoder"]) for o, c in stored.items()} == \
        {"ce": ("1", False), "lacvit": ("1", False)}  # the CPU defaults, resolved
    at.selectbox(key="trainable").select("all")
    at.selectbox(key="stage2_encoder").select("fine-tune")
    at.multiselect(key="objectives").set_value(["lacvit"])
    at.run()
    at.button(key="start").click().run()
    assert not at.error
    newest = max(manager.store.list(), key=lambda r: r.created)
    assert (newest.config["trainable"], newest.config["stage2_train_encoder"]) == ("all", True)


def test_train_validation_error_is_shown_and_nothing_is_queued(manager):
    at = _app()
    at.selectbox(key="backbone").select("test_vit").run()
    assert any("text tower" in w.value for w in at.warning)  # said before Start
    at.button(key="start").click().run()
    assert any("CLIP-style" in e.value for e in at.error)
    assert manager.store.list() == []


def test_train_unknown_backbone_name_is_refused(manager):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["backbone"] = "resnet_does_not_exist"  # typed into the searchable select
    at.run()
    assert any("unknown backbone" in e.value for e in at.error)
    assert at.button(key="start").disabled


def test_train_shows_queue_position_and_cancels(manager, monkeypatch):
    gate = threading.Event()
    manager._train_fn = QuickTrain(gate=gate)
    at = _app()
    at.selectbox(key="dataset").select("digits")
    at.button(key="start").click().run()
    first, second, third = at.session_state["train_batches"][0]
    at.run()
    badges = " ".join(m.value for m in at.markdown)
    assert "#1 in line" in badges and "#2 in line" in badges and manager.queue_position(second) == 1
    at.button(key=f"cancel-{third}").click().run()  # the first click asks
    assert manager.store.get(third).status == "queued"
    at.button(key=f"confirm-cancel-{third}").click().run()
    assert manager.store.get(third).status == "cancelled"
    at.button(key=f"cancel-{first}").click().run()
    at.button(key=f"confirm-cancel-{first}").click().run()
    assert manager.wait(first, 10)
    assert manager.store.get(first).status == "cancelled"
    gate.set()
    _wait(manager, [second])
    assert manager.store.get(second).status == "finished"


def test_explore_button_hands_the_run_id_over(manager):
    at = _app()
    at.multiselect(key="objectives").set_value(["ce"])
    at.button(key="start").click().run()
    run_id = at.session_state["train_batches"][0][0]
    _wait(manager, [run_id])
    at.run()
    at.button(key=f"explore-{run_id}").click().run()
    assert not at.exception
    assert at.session_state["explore_run"] == run_id
    assert at.query_params.get("run") in (run_id, [run_id])


def _zip(classes: dict[str, int], extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for cls, n in classes.items():
            for i in range(n):
                png = io.BytesIO()
                Image.fromarray((np.random.default_rng(i).random((12, 12, 3)) * 255).astype(np.uint8)).save(png, "PNG")
                z.writestr(f"{cls}/{i}.png", png.getvalue())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


class _Upload:
    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_zip_upload_import(home):
    kind, message, name = ui.import_uploaded_zip(_Upload("pets.zip", _zip({"cat": 3, "dog": 3})), "", str(home))
    assert (kind, name) == ("success", "pets") and "6 images in 2 classes" in message
    kind, message, name = ui.import_uploaded_zip(_Upload("more.zip", _zip({"a": 2, "b": 2}, {"a/broken.png": b"nope"})),
                                                 "more pets", str(home))
    assert (kind, name) == ("warning", "more pets") and "skipped" in message
    kind, message, name = ui.import_uploaded_zip(_Upload("x.zip", b"not a zip"), "junk", str(home))
    assert kind == "error" and name is None and "zip" in message
    kind, message, _ = ui.import_uploaded_zip(None, "", str(home))
    assert kind == "error"


def test_imported_dataset_is_offered_and_previewed(manager, home):
    ui.import_uploaded_zip(_Upload("pets.zip", _zip({"cat": 4, "dog": 4})), "", str(home))
    at = _app()
    assert any(o.startswith("pets") for o in at.selectbox(key="dataset").options)
    at.selectbox(key="dataset").select("pets").run()
    assert not at.exception
    assert any("8 images" in c.value for c in at.caption)


# -------------------------------------------------------------------------------------- Runs
def _seed_runs(store) -> dict[str, str]:
    ids = {}
    for objective, status in (("ce", "finished"), ("lacvit", "failed"), ("flyp", "interrupted")):
        backbone = "test_clip" if objective == "flyp" else "test_vit"
        run_id = store.create_run(TrainConfig(objective=objective, backbone=backbone, dataset="digits", steps=4,
                                              n_per_class=5, eval_per_class=5, batch_size=8).to_dict())
        store.set_status(run_id, "running")
        if status == "finished":
            store.update_summary(run_id, {"val_acc": 0.5, "test_acc": 0.4})
        store.set_status(run_id, status, error=None if status == "finished" else f"{status} on purpose")
        ids[objective] = run_id
    return ids


def test_runs_table_and_filters(manager):
    ids = _seed_runs(manager.store)
    at = _app("pages/runs.py")
    table = at.dataframe[0].value
    assert set(table["run"]) == set(ids.values())
    assert {"status", "objective", "backbone", "dataset", "val acc", "test acc", "duration", "started"} <= set(table.columns)
    at.multiselect(key="runs_status").set_value(["failed"]).run()
    assert list(at.dataframe[0].value["run"]) == [ids["lacvit"]]
    at.multiselect(key="runs_status").set_value([]).run()
    at.multiselect(key="runs_objective").set_value(["ce", "flyp"]).run()
    assert set(at.dataframe[0].value["run"]) == {ids["ce"], ids["flyp"]}


def _select(at: AppTest, run_ids: list[str]) -> AppTest:
    """Select table rows the way a click does: through the dataframe's selection state."""
    rows = [i for i, r in enumerate(at.dataframe[0].value["run"]) if r in run_ids]
    key = f"runs_table_{at.session_state['runs_table_gen'] if 'runs_table_gen' in at.session_state else 0}"
    at.session_state[key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    return at.run()


def test_runs_resume_and_delete(manager):
    ids = _seed_runs(manager.store)
    at = _app("pages/runs.py")
    _select(at, [ids["lacvit"], ids["flyp"]])
    assert not at.button(key="runs_resume").disabled
    at.button(key="runs_resume").click().run()
    assert not at.exception
    _wait(manager, [ids["lacvit"], ids["flyp"]])
    assert manager.store.get(ids["lacvit"]).status == "finished"
    _select(at, [ids["ce"]])
    at.button(key="runs_delete").click().run()
    assert not at.exception
    assert not manager.store.exists(ids["ce"])
    assert ids["ce"] not in set(at.dataframe[0].value["run"])


def test_runs_cancel_reaches_a_run_of_another_process(manager):
    """A run trained by a CLI (another live process) is asked to stop through the store."""
    ids = _seed_runs(manager.store)
    cli_run = manager.store.create_run(TrainConfig(objective="ce", backbone="test_vit", dataset="digits").to_dict())
    manager.store.set_status(cli_run, "running")
    with sqlite3.connect(manager.store.db_path) as db:  # owned by a live process that is not this server: pid 1
        db.execute("UPDATE runs SET owner=? WHERE id=?", (f"{socket.gethostname()}:1", cli_run))
    at = _app("pages/runs.py")
    _select(at, [cli_run, ids["ce"]])
    assert not at.button(key="runs_cancel").disabled
    at.button(key="runs_cancel").click().run()
    assert not at.exception
    assert manager.store.cancel_requested(cli_run) and manager.store.get(cli_run).status == "running"
    assert at.toast[0].value == ("Cancelled 1 run. 1 of them belongs to another process (a CLI or another server) "
                                 "and stops at its next step.")
    assert not at.error  # the finished run was selected too, but only active runs are cancelled
    dead = manager.store.create_run(TrainConfig(objective="ce", backbone="test_vit", dataset="digits").to_dict())
    manager.store.set_status(dead, "running")
    with sqlite3.connect(manager.store.db_path) as db:  # its process has died since
        db.execute("UPDATE runs SET owner=? WHERE id=?", (f"{socket.gethostname()}:{dead_pid()}", dead))
    _select(at.run(), [dead])  # a rerun lists the new row first
    at.button(key="runs_cancel").click().run()
    assert at.error[0].value == f"{dead}: it is interrupted now, no longer queued or running"
    assert not manager.store.cancel_requested(dead)


def test_runs_open_in_explore_and_compare(manager):
    ids = _seed_runs(manager.store)
    second = manager.store.create_run(TrainConfig(objective="ce", backbone="test_vit", dataset="digits").to_dict())
    manager.store.set_status(second, "finished")
    at = _app("pages/runs.py")
    _select(at, [ids["ce"], second])
    assert at.button(key="runs_explore").disabled  # two selected
    at.button(key="runs_compare").click().run()
    assert not at.exception
    assert sorted(at.session_state["compare_runs"]) == sorted([ids["ce"], second])


# ------------------------------------------------------------------------------------- Learn
def test_learn_shows_the_three_losses_and_the_toy_reacts(manager):
    at = _app("pages/learn.py")
    latex = " ".join(x.value for x in at.latex)
    assert r"\sum_{a \neq i}" in latex and r"\tau" in latex  # LaCViT's label-aware contrastive loss
    assert r"\theta(\alpha)" in latex  # WiSE-FT
    share = {m.label: m.value for m in at.metric}["Hardest negative's share of the push"]
    at.select_slider(key="toy_tau").set_value(0.02).run()
    sharper = {m.label: m.value for m in at.metric}["Hardest negative's share of the push"]
    assert int(sharper.rstrip("%")) > int(share.rstrip("%"))
    differs = " ".join(m.value for m in at.markdown)
    assert "nearest-class-mean" in differs and "EmbedLab's own choice" in differs  # LaCViT's head start, named
    assert "fine-tunes the encoder with a task head" in differs and "CLIP's mild preprocessing" in differs



# --------------------------------------------------------------------------- research seeds
def test_content_style_settings_apply_the_same_labels_to_the_whole_batch(manager):
    """Seed 001 from the Train page: CE and content-style queued on the same 100 labelled images."""
    at = _app()
    at.selectbox(key="backbone").select("test_vit")
    at.selectbox(key="dataset").select("digits")
    at.multiselect(key="objectives").set_value(["ce", "content-style"]).run()
    at.select_slider(key="train_cs_labels").set_value(100)
    at.number_input(key="train_cs_sdim").set_value(4)
    at.number_input(key="steps").set_value(12)
    at.number_input(key="n_per_class").set_value(20).run()
    at.button(key="start").click().run()
    assert not at.exception and not at.error
    configs = {r.objective: r.config for r in manager.store.list()}
    assert set(configs) == {"ce", "content-style"}
    assert configs["ce"]["labels"] == configs["content-style"]["labels"] == 100
    assert configs["content-style"]["cs_style_dim"] == 4


def test_learn_has_the_seed_methods(manager):
    at = _app("pages/learn.py")
    labels = [t.label for t in at.tabs]
    assert any("Content-style" in label for label in labels) and any("VeCAF" in label for label in labels)
    latex = " ".join(x.value for x in at.latex)
    assert r"\mathrm{KL}" in latex and r"e_i^{\mathrm{aug}}" in latex


# ------------------------------------------------------------------------------- the Train form
def test_train_refuses_an_out_of_range_number_by_its_control(manager):
    """Batch 1 was clamped by the browser and trained as 64: now it is refused, naming the control."""
    at = _app()
    at.number_input(key="batch_size").set_value(1).run()
    assert at.number_input(key="batch_size").value == 1  # kept as typed, not replaced
    assert any("Batch size" in e.value and "not 1" in e.value for e in at.error)
    assert at.button(key="start").disabled
    at.number_input(key="batch_size").set_value(16).run()
    assert not any("Batch size" in e.value for e in at.error) and not at.button(key="start").disabled
    at.number_input(key="steps").set_value(None).run()
    assert any("Steps" in e.value and "type a number" in e.value for e in at.error)
    assert not any("--" in e.value for e in at.error)  # the page's words, not the CLI's flags
    assert manager.store.list() == []


def test_train_seeds_control_queues_one_run_per_seed(manager):
    at = _app()
    at.multiselect(key="objectives").set_value(["ce", "lacvit"])
    at.number_input(key="seed").set_value(5)
    at.number_input(key="seeds").set_value(3).run()
    assert at.button(key="start").label == "Start 6 runs"
    at.button(key="start").click().run()
    ids = at.session_state["train_batches"][0]
    _wait(manager, ids)
    seeds = sorted((r.config["objective"], r.config["seed"]) for r in manager.store.list())
    assert seeds == [("ce", 5), ("ce", 6), ("ce", 7), ("lacvit", 5), ("lacvit", 6), ("lacvit", 7)]
    at.number_input(key="seeds").set_value(0).run()
    assert any("Seeds" in e.value for e in at.error) and at.button(key="start").disabled


def test_train_says_where_the_progress_is_after_start(manager):
    at = _app()
    at.multiselect(key="objectives").set_value(["ce"])
    at.button(key="start").click().run()
    assert any("Queued 1 run" in s.value and "below" in s.value for s in at.success)


def test_reload_keeps_the_form_and_your_batch(manager):
    at = _app()
    at.multiselect(key="objectives").set_value(["ce"])
    at.number_input(key="steps").set_value(400)
    at.number_input(key="batch_size").set_value(16).run()
    at.button(key="start").click().run()
    ids = at.session_state["train_batches"][0]
    _wait(manager, ids)
    again = _app()  # a new session: a reload (or a server restart: it is all in EMBEDLAB_HOME)
    assert again.number_input(key="steps").value == 400 and again.number_input(key="batch_size").value == 16
    assert again.multiselect(key="objectives").value == ["ce"]
    assert again.session_state["train_batches"][0] == ids
    assert again.button(key=f"explore-{ids[0]}")  # your run's card, not under "Also on this server"
    assert not any("No runs yet" in i.value for i in again.info)


def test_resume_says_from_which_step_or_that_it_starts_over(manager):
    gate = threading.Event()
    manager._train_fn = QuickTrain(gate=gate)
    at = _app()
    at.multiselect(key="objectives").set_value(["ce"])
    at.button(key="start").click().run()
    run_id = at.session_state["train_batches"][0][0]
    at.button(key=f"cancel-{run_id}").click().run()
    at.button(key=f"confirm-cancel-{run_id}").click().run()
    assert manager.wait(run_id, 10)
    at.run()
    assert at.button(key=f"resume-{run_id}").label == "Start over"  # cancelled before any checkpoint
    assert any("no checkpoint" in c.value for c in at.caption)
    from safetensors.numpy import save_file
    save_file({"w": np.zeros(1, np.float32)}, str(manager.store.run_dir(run_id) / "checkpoint.safetensors"),
              metadata={"step": "37", "stage": "0"})
    at.run()
    assert at.button(key=f"resume-{run_id}").label == "Resume from step 37"
    gate.set()


# ----------------------------------------------------------------------------------- workshop mode
def _as(identity, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["identity"] = identity  # what the browser's cookies give a session (tests/e2e: real cookies)
    at.run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


@pytest.fixture
def workshop(monkeypatch):
    monkeypatch.setenv("EMBEDLAB_WORKSHOP", "1")
    monkeypatch.setenv("EMBEDLAB_INSTRUCTOR_CODE", "owl-42")


def test_workshop_asks_for_a_name_once(manager, workshop):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert "start" not in [b.key for b in at.button]  # no page until a name is given
    at.text_input(key="identity_name").input("   ")
    at.button[0].click().run()
    assert any("Your name" in e.value for e in at.error)
    at.text_input(key="identity_name").input("Ada")
    at.button[0].click().run()
    assert at.session_state["identity"].name == "Ada" and len(at.session_state["identity"].owner_id) == 32
    assert at.button(key="start")
    assert "identity" not in str(at.query_params) and "Ada" not in str(at.query_params)  # never in the URL


def test_outside_workshop_mode_nothing_asks_who_you_are(manager):
    at = _app()
    assert "identity_name" not in [t.key for t in at.text_input] and "instructor_code" not in [t.key for t in at.text_input]
    assert at.button(key="start") and "Class board" not in str(at.sidebar)


def test_a_room_of_runs_draws_a_few_cards_and_counts_the_rest(manager, workshop, monkeypatch):
    """Every session redraws its cards once a second: others' runs are capped at CARDS_SHOWN cards (the rest
    counted, the Runs page lists them), so the server's work does not grow with sessions x runs."""
    from core.workshop import Identity
    from pages._live import CARDS_SHOWN

    gate = threading.Event()
    manager._train_fn = QuickTrain(gate=gate)
    monkeypatch.setenv("EMBEDLAB_QUEUE_CAP", "0")
    bob = Identity("b" * 32, "Bob")
    ids = [manager.submit(TrainConfig(objective="ce", dataset="digits", steps=5), owner=bob) for _ in range(9)]
    at = _as(Identity("a" * 32, "Ada"))
    shown = [c.value for c in at.caption if "Bob" in c.value]
    assert len(shown) == CARDS_SHOWN < len(ids), shown
    more = [c.value for c in at.caption if c.value.startswith(f"and {len(ids) - CARDS_SHOWN} more")]
    assert more and "Runs page" in more[0], [c.value for c in at.caption]
    gate.set()
    for r in ids:
        assert manager.wait(r, 20)


def test_workshop_others_runs_have_no_cancel_and_a_forged_one_is_refused(manager, workshop):
    from core.errors import NotAllowed
    from core.workshop import Identity

    gate = threading.Event()
    manager._train_fn = QuickTrain(gate=gate)
    ada, bob = Identity("a" * 32, "Ada"), Identity("b" * 32, "Bob")
    at = _as(ada)
    at.multiselect(key="objectives").set_value(["ce"])
    at.selectbox(key="dataset").select("digits")
    at.button(key="start").click().run()
    run_id = at.session_state["train_batches"][0][0]
    assert manager.store.get(run_id).owner_name == "Ada"
    other = _as(bob)
    assert not any(b.key == f"cancel-{run_id}" for b in other.button)  # no button for Bob
    assert any("Ada" in c.value for c in other.caption)  # whose run it is
    other.session_state["confirm_cancel"] = run_id  # a forged confirmation: still no confirm button
    other.run()
    assert not any(b.key == f"confirm-cancel-{run_id}" for b in other.button)
    with pytest.raises(NotAllowed):  # and the core refuses a forged call
        manager.request_cancel(run_id, by=bob)
    runs = _as(bob, "pages/runs.py")
    runs.dataframe[0]  # the table renders with the owner column
    assert manager.store.get(run_id).status in ("queued", "running")
    teacher = _as(Identity("c" * 32, "Teacher", instructor=True))
    teacher.button(key=f"cancel-{run_id}").click().run()
    teacher.button(key=f"confirm-cancel-{run_id}").click().run()
    assert manager.wait(run_id, 10)
    record = manager.store.get(run_id)
    assert record.status == "cancelled" and "Teacher" in record.error  # who cancelled it
    gate.set()


def test_workshop_instructor_passcode_unlocks_the_board_and_pins(manager, workshop):
    from core.workshop import Identity

    ada = Identity("a" * 32, "Ada")
    at = _as(ada)
    at.multiselect(key="objectives").set_value(["ce"])
    at.button(key="start").click().run()
    run_id = at.session_state["train_batches"][0][0]
    _wait(manager, [run_id])
    t = _as(Identity("c" * 32, "Teacher"))
    t.text_input(key="instructor_code").input("wrong").run()
    t.button(key="instructor_unlock").click().run()
    assert any("not this server's passcode" in e.value for e in t.error)
    assert not t.session_state["identity"].instructor
    t.text_input(key="instructor_code").input("owl-42").run()
    t.button(key="instructor_unlock").click().run()
    assert t.session_state["identity"].instructor
    cookies = t.session_state["identity_cookies"]
    assert cookies["embedlab_instructor"] and "owl-42" not in cookies["embedlab_instructor"]  # a derived token
    t.switch_page("pages/board.py").run()
    assert not t.exception, t.exception
    assert "Ada" in t.dataframe[0].value["owner"].tolist()
    t.button(key="board_pin_button").click().run()
    room = _as(Identity("d" * 32, "Cy"))
    assert any("Pinned for the room" in m.value for m in room.markdown)


def test_board_gallery_shows_each_run_in_its_trained_space(tmp_path_factory, monkeypatch, workshop):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from explore_runs import tiny_runs
    from core.workshop import Identity

    home, ids = tiny_runs(tmp_path_factory.getbasetemp(), objectives=("ce", "lacvit"))
    monkeypatch.setenv("EMBEDLAB_HOME", str(home))
    at = _as(Identity("c" * 32, "Teacher", instructor=True), "pages/board.py")
    assert at.segmented_control(key="board_objective").value == "lacvit"  # LaCViT first: the room's spaces
    assert any("(projection)" in c.value for c in at.caption)  # the space LaCViT trains, not the encoder
    tiles = [e for e in at.get("plotly_chart")]
    assert len(tiles) == 1
    at.segmented_control(key="board_objective").set_value("ce").run()
    assert any("(encoder)" in c.value for c in at.caption)
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # not a page for a student
        _as(Identity("a" * 32, "Ada"), "pages/board.py")


def test_workshop_runs_page_acts_only_on_your_runs(manager, workshop):
    from core.workshop import Identity

    ada, bob = Identity("a" * 32, "Ada"), Identity("b" * 32, "Bob")
    cfg = TrainConfig(objective="ce", backbone="test_vit", dataset="digits").to_dict()
    hers = manager.store.create_run(cfg, owner_id=ada.owner_id, owner_name=ada.name)
    manager.store.set_status(hers, "interrupted", error="server restart")
    his = manager.store.create_run(cfg, owner_id=bob.owner_id, owner_name=bob.name)
    manager.store.set_status(his, "interrupted", error="server restart")
    at = _as(bob, "pages/runs.py")
    owners = dict(zip(at.dataframe[0].value["run"], at.dataframe[0].value["owner"]))
    assert owners == {hers: "Ada", his: "Bob (you)"}
    _select(at, [hers])
    assert at.button(key="runs_resume").disabled  # Ada's run: no action for Bob
    assert any("belongs to others" in c.value for c in at.caption)
    _select(at, [hers, his])
    at.button(key="runs_delete").click().run()  # only his own goes
    assert manager.store.exists(hers) and not manager.store.exists(his)
