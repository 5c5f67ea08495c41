"""Train: pick a backbone, data and objectives; queue one run per objective; watch them train."""
from __future__ import annotations

import dataclasses

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core import backbones as bb
from core import datasets as ds
from core.device import hub_reachable, pick_device
from core.errors import EmbedLabError
from core.jobs import ACTIVE, RESUMABLE
from core.objectives import OBJECTIVES
from core.objectives import registered as registered_objectives
from core.remember import forget_batches, recall_batches, recall_form, remember_batch, remember_form
from core.safe_text import md_code, md_text, plotly_text
from core.shifts import list_shifts
from core.train import RANGES, Range, TrainConfig
from core.workshop import can_manage, workshop_enabled
from pages import _live as live
from pages import _seeds_ui as seeds
from pages._wording import ui_message
from pages._ui import (duration, ensure_router, get_manager, get_store, home_dir, import_uploaded_folder,
                       import_uploaded_weights, import_uploaded_zip, objective_label, open_in_compare, open_in_explore, pct,
                       short_id, status_badge, upload_ready)
from pages._identity import current as current_identity, pinned_run_id

ensure_router()

DEFAULTS = TrainConfig()
OFFLINE_SUGGESTIONS = ("efficientnet_lite0", "lite0-minilm", "test_vit", "test_clip")  # offline, in this order
OBJECTIVE_HELP = {name: entry.help or entry.description for name, entry in registered_objectives().items()}  # registry
TRAINABLE_CHOICES = ["auto", "all", "frozen", "1", "2", "3", "4", "6"]  # fine-tuning depth; any k can be typed
STAGE2_CHOICES = {"auto": None, "fine-tune": True, "frozen": False}  # LaCViT stage 2 encoder -> stage2_train_encoder
DEFAULT_OBJECTIVES = ["ce", "lacvit", "flyp"]  # the comparison a new user starts with no typing
PREVIEW_CLASSES = 10  # classes shown in the sample grid
PREVIEW_PER_CLASS = 8  # images per class in the sample grid
THUMB = 48  # thumbnail side, pixels
MAX_SEEDS = 10  # runs per objective from the Seeds control
NUMBER_CHECKS = {  # number input key -> (its label on the page, the range it must lie in)
    "steps": ("Steps", RANGES["steps"][1]),
    "batch_size": ("Batch size", RANGES["batch_size"][1]),
    "n_per_class": ("Images per class", RANGES["n_per_class"][1]),
    "seed": ("Seed", RANGES["seed"][1]),
    "seeds": ("Seeds", Range(1, MAX_SEEDS, whole=True)),
    "lr": ("Learning rate (heads)", RANGES["lr"][1]),
    "backbone_lr": ("Backbone learning rate", RANGES["backbone_lr"][1]),
    "temperature": ("Temperature τ (LaCViT)", RANGES["temperature"][1]),
    "image_size": ("Image size", RANGES["image_size"][1]),
    "eval_per_class": ("Val/test images per class", RANGES["eval_per_class"][1]),
    "stage1_fraction": ("LaCViT contrastive share", RANGES["stage1_fraction"][1]),
    "weight_decay": ("Weight decay", RANGES["weight_decay"][1]),
    "warmup": ("Warm-up", Range(0, 1, open_hi=True)),
    "shift_severity": ("Shift severity", Range(1, 5, whole=True)),
}
OPTIONAL_NUMBERS = ("backbone_lr", "image_size")  # empty = the default (lr / 10, the backbone's size)
FLOAT_NUMBERS = ("lr", "backbone_lr", "temperature", "stage1_fraction", "weight_decay", "warmup")
NUMBER_DEFAULTS = {k: getattr(DEFAULTS, k) for k in NUMBER_CHECKS if hasattr(DEFAULTS, k)}
FORM_KEYS = ("backbone", "dataset", "objectives", *NUMBER_CHECKS, "trainable", "stage2_encoder", "weights",
             "optimizer", "shift")  # what a reload or a restart gives back (form values only)


# ------------------------------------------------------------------------------------ cached data

@st.cache_data(show_spinner=False)
def _check_backbone(name: str) -> str | None:
    return bb.check_name(name)


@st.cache_data(ttl=60, show_spinner=False)
def _auto_backbones(online: bool) -> dict[str, str]:
    return {o: bb.default_backbone(o, online=online) for o in OBJECTIVES if o in OBJECTIVE_HELP}


@st.cache_data(show_spinner="Loading a preview…")
def _preview(root: str, name: str, stamp: str) -> dict:
    """Thumbnail strips per class and split counts (small: this is what the cache keeps); `stamp` is the
    dataset's content stamp, so an overwrite is previewed anew."""
    data = ds.load_dataset(name, Path(root))
    rng = np.random.default_rng(0)
    train_ids = np.flatnonzero(data.split == ds.TRAIN)
    strips = []
    for c in range(min(PREVIEW_CLASSES, data.num_classes)):
        ids = train_ids[data.labels[train_ids] == c]
        pick = rng.choice(ids, size=min(PREVIEW_PER_CLASS, len(ids)), replace=False) if len(ids) else ids
        strips.append((data.classes[c], _strip(data.images[np.sort(pick)])))
    counts = {split: data.class_counts(split) for split in ("train", "val", "test")}
    h, w, c = data.images.shape[1:]
    return {"strips": strips, "counts": counts, "classes": list(data.classes), "n": len(data.images),
            "shape": f"{h}×{w}×{c}", "description": data.description}


def _strip(images: np.ndarray) -> np.ndarray:
    """[n, H, W, C] uint8 -> one [THUMB, n * (THUMB + 2), 3] strip with 2-px gaps."""
    from PIL import Image

    tiles = []
    for im in images:
        im = im[..., 0] if im.shape[-1] == 1 else im
        pil = Image.fromarray(im).convert("RGB")
        resample = Image.NEAREST if pil.width < THUMB else Image.BILINEAR
        tiles.append(np.asarray(pil.resize((THUMB, THUMB), resample)))
        tiles.append(np.full((THUMB, 2, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1) if tiles else np.full((THUMB, THUMB, 3), 255, np.uint8)


# ------------------------------------------------------------------------------------- the form
def _backbone_options(online: bool) -> tuple[list[str], dict[str, str]]:
    own = bb.list_backbones()
    described = {name: own[name].description for name in OFFLINE_SUGGESTIONS if name in own}
    if online:
        described.update(dict(bb.ONLINE_SUGGESTIONS))
    return ["auto", *described], described


def _dataset_options(root: str, online: bool) -> dict[str, ds.DatasetEntry]:
    entries = ds.list_datasets(Path(root))
    return {name: e for name, e in entries.items() if online or e.offline or e.kind == "imported"}


def _import_upload() -> None:
    """on_click of Import: runs before the rerun, so the new dataset can be selected right away."""
    if st.session_state.get("import_source") == "folder":
        kind, message, name = import_uploaded_folder(st.session_state.get("upload_folder"),
                                                     st.session_state.get("import_name"), home_dir())
    else:
        kind, message, name = import_uploaded_zip(st.session_state.get("upload_zip"), st.session_state.get("import_name"),
                                                  home_dir())
    st.session_state["import_result"] = (kind, message)
    if name:
        st.session_state["dataset"] = name


def _import_weights() -> None:
    st.session_state["weights_file"] = import_uploaded_weights(st.session_state.get("upload_weights"), home_dir())


def _weights() -> str:
    """'pretrained', 'random', or the imported file's path ('file' with no file yet stays 'file': refused)."""
    choice = st.session_state.get("weights", DEFAULTS.weights)
    if choice != "file":
        return choice
    return st.session_state.get("weights_file", (None, None))[1] or "file"


def _config(objective: str, backbone: str, dataset: str) -> TrainConfig:
    s = st.session_state
    image_size = s.get("image_size")
    return TrainConfig(
        objective=objective, backbone="" if backbone == "auto" else backbone.strip(), dataset=dataset,
        steps=int(s["steps"]), batch_size=int(s["batch_size"]), n_per_class=int(s["n_per_class"]),
        eval_per_class=int(s.get("eval_per_class", DEFAULTS.eval_per_class)), seed=int(s["seed"]),
        lr=float(s.get("lr", DEFAULTS.lr)),
        backbone_lr=None if s.get("backbone_lr") is None else float(s["backbone_lr"]),
        temperature=float(s.get("temperature", DEFAULTS.temperature)),
        stage1_fraction=float(s.get("stage1_fraction", DEFAULTS.stage1_fraction)),
        trainable=str(s.get("trainable", DEFAULTS.trainable)).strip(),
        stage2_train_encoder=STAGE2_CHOICES.get(s.get("stage2_encoder", "auto")),
        image_size=None if image_size in (None, 0) else int(image_size),
        weights=_weights(), weight_decay=float(s.get("weight_decay", DEFAULTS.weight_decay)),
        optimizer=s.get("optimizer", DEFAULTS.optimizer), warmup=float(s.get("warmup", DEFAULTS.warmup)),
        shift=_shift(),
    )


def _shift() -> str:
    """The OOD split's shift: 'default' / 'natural' as they are, a corruption or the mix with its severity."""
    name = st.session_state.get("shift", DEFAULTS.shift)
    return name if name in ("default", "natural") else f"{name}:{int(st.session_state.get('shift_severity', 3))}"


def _number(col, label: str, key: str, value, step, help_text: str, **kw) -> None:
    """A number input whose value survives page switches (persist_state), keyed for tests.

    No min / max in the widget: the browser would silently keep the last valid value (batch 1 typed,
    batch 64 trained); `form_problems` refuses an out-of-range value by the control's name instead.
    A value recalled from an earlier visit is already in session_state, so no default is passed then.
    """
    col.number_input(label, value=None if key in st.session_state else value, step=step, key=key,
                     persist_state="session", help=help_text, **kw)


def _depth_label(choice: str, gpu: bool) -> str:
    if choice == "auto":
        return ("auto — all: full fine-tuning (on this GPU)" if gpu
                else "auto — last block, on cached features of the frozen rest (on this CPU)")
    if choice == "all":
        return "all — full fine-tuning"
    if choice == "frozen":
        return "frozen — heads only (a linear probe)"
    return f"last {choice} block{'s' if choice != '1' else ''}" if choice.isdigit() else choice


def depth_settings(lacvit: bool) -> None:
    """How deep each run fine-tunes: a first-class choice, resolved per device ('auto') and stored per run."""
    gpu = pick_device().type == "cuda"
    st.markdown("##### :material/layers: Fine-tuning depth")
    f1, f2 = st.columns(2)
    f1.selectbox("Trainable blocks", TRAINABLE_CHOICES, key="trainable", persist_state="session", accept_new_options=True,
                 format_func=lambda c: _depth_label(c, gpu),
                 help="'all' fine-tunes the whole backbone (the papers' setup, the default on a GPU); k trains the last "
                      "k blocks, and the frozen rest runs once per image into a feature cache (the default on a CPU: "
                      "the last block); 'frozen' trains the heads only. Each run stores the depth it used.")
    f2.selectbox("LaCViT stage 2", list(STAGE2_CHOICES), key="stage2_encoder", persist_state="session", disabled=not lacvit,
                 format_func=lambda c: {"auto": f"auto — {'fine-tune' if gpu else 'frozen'} encoder (on this {'GPU' if gpu else 'CPU'})",
                                        "fine-tune": "fine-tune the encoder with the head (the paper)",
                                        "frozen": "frozen encoder: train the head only"}[c],
                 help="The LaCViT paper fine-tunes the encoder with a task head in stage 2; on a CPU EmbedLab keeps it "
                      "frozen by default (a linear probe of the contrastive embedding: fast, and what Explore shows is "
                      "what stage 1 built). Either way the head starts as the nearest-class-mean classifier of the "
                      "stage-1 embedding — EmbedLab's own choice, not the paper's, so accuracy does not drop at the "
                      "stage switch.")


def setup_form(root: str) -> None:
    """The comparison form, top to bottom; Start queues one run per objective (and seed)."""
    online = hub_reachable()
    auto = _auto_backbones(online)
    backbone, problem = backbone_section(online, auto)
    data_section(root, online)
    objectives, overrides = objectives_section(backbone, problem)
    budget_section()
    depth_settings("lacvit" in objectives)
    advanced_section(backbone, auto, overrides)
    problems = form_problems()
    _remember_form(root)
    start_section(objectives, backbone, problem, problems, overrides)


def backbone_section(online: bool, auto: dict[str, str]) -> tuple[str, str | None]:
    """The backbone picker; returns (name or 'auto', the problem with a typed name or None)."""
    options, described = _backbone_options(online)

    st.markdown("##### :material/neurology: Backbone")

    def backbone_label(name: str) -> str:
        if name == "auto":
            return f"auto — {auto.get('ce')} (CE, LaCViT) / {auto.get('flyp')} (FLYP)"
        return f"{name} — {described[name]}" if name in described else name

    backbone = st.selectbox(
        "Backbone", options, key="backbone", persist_state="session", format_func=backbone_label,
        accept_new_options=True, label_visibility="collapsed",
        help="Type to search the suggestions, or enter any timm name (resnet18.a1_in1k) or open_clip "
             "MODEL/PRETRAINED (ViT-B-32/laion2b_s34b_b79k). 'auto' uses each objective's default.")
    backbone = (backbone or "auto").strip()
    problem = None if backbone == "auto" else _check_backbone(backbone)
    if problem:
        st.error(md_text(problem), icon=":material/error:")
    elif backbone not in described and backbone != "auto":
        family = "open_clip" if bb.is_open_clip_name(backbone) else "timm"
        st.caption(f":material/check: {md_code(backbone)} is a valid {family} name"
                   + ("" if online else " — offline: pretrained weights must already be cached, or set weights to random"))

    return backbone, problem


def data_section(root: str, online: bool) -> None:
    st.markdown("##### :material/photo_library: Data")
    entries = _dataset_options(root, online)
    names = list(entries)
    if st.session_state.get("dataset") not in names:
        st.session_state["dataset"] = "fashion-mnist" if "fashion-mnist" in names else "mnist5k"
    st.selectbox("Dataset", names, key="dataset", persist_state="session", label_visibility="collapsed",
                 format_func=lambda n: f"{n} — {entries[n].description}" if n in entries else n,
                 help="Built-in datasets work offline; imported ones live in EMBEDLAB_HOME/datasets.")
    with st.expander("Import your own images (a .zip or a folder, one sub-folder per class)", icon=":material/upload:"):
        cap_mb = st.get_option("server.maxUploadSize")  # .streamlit/config.toml; the uploader refuses bigger files
        source = st.segmented_control("Source", ["zip", "folder"], default="zip", key="import_source",
                                      format_func={"zip": "Zip archive", "folder": "Folder"}.get,
                                      label_visibility="collapsed") or "zip"
        if source == "folder":
            st.file_uploader("Folder", type=sorted(x.lstrip(".") for x in ds.IMAGE_SUFFIXES),
                             accept_multiple_files="directory", key="upload_folder",
                             help="Choose the folder that holds one sub-folder per class, e.g. pets/cats/1.jpg, "
                                  "pets/dogs/2.png. The browser sends only image files; corrupt ones are skipped.")
            limit = f"up to {cap_mb} MB per image"
        else:
            st.file_uploader("Zip archive", type=["zip"], key="upload_zip",
                             help="A zip with one sub-folder per class, e.g. cats/1.jpg, dogs/2.png. "
                                  "Corrupt or non-image files are skipped.")
            limit = f"up to {cap_mb} MB per zip"
        ready = upload_ready(st.session_state.get("upload_folder" if source == "folder" else "upload_zip"))
        if ready:
            st.caption(f":material/check_circle: {ready}")
        st.caption(f":material/info: At least 2 class folders with 2 images each; {limit} (the server's upload limit). "
                   "Corrupt, empty and non-image files are skipped and listed.")
        st.text_input("Dataset name", key="import_name", persist_state="session",
                      placeholder=f"defaults to the {source}'s name", help="Letters, digits, spaces, '.', '_', '+', '-'.")
        st.button("Import", key="import_button", icon=":material/download:", on_click=_import_upload)
    result = st.session_state.get("import_result")
    if result:
        kind, message = result
        {"success": st.success, "warning": st.warning, "error": st.error}[kind](md_text(message))



def objectives_section(backbone: str, problem: str | None) -> tuple[list[str], dict]:
    """The objectives of the batch and the content-style settings (overrides of every run's config)."""
    st.markdown("##### :material/tune: Objectives")
    objectives = st.multiselect(
        "Objectives", list(OBJECTIVE_HELP), default=None if "objectives" in st.session_state else DEFAULT_OBJECTIVES,
        key="objectives", persist_state="session",
        format_func=objective_label, label_visibility="collapsed",
        help="One run per objective, all with the same backbone, data, budget and seed.\n\n"
             + "\n\n".join(f"- {v}" for v in OBJECTIVE_HELP.values()))
    if "flyp" in objectives and backbone != "auto" and not problem and not bb.is_clip_name(backbone):
        st.warning(f"FLYP needs a backbone with a text tower; {md_code(backbone)} has none. Pick `auto`, `lite0-minilm`, "
                   "`test_clip` or an open_clip name, or drop FLYP.", icon=":material/warning:")
    seed_overrides: dict = {}
    if "content-style" in objectives:
        with st.expander("Content-style settings", expanded=True, icon=":material/call_split:"):
            st.caption("The labelled-image count applies to every objective of this batch, so CE and content-style "
                       "compare on the same labels.")
            seed_overrides = seeds.content_style_settings(st, key="train_cs", defaults=DEFAULTS)

    return objectives, seed_overrides


def budget_section() -> None:
    st.markdown("##### :material/speed: Budget")
    c1, c2, c3, c4, c5 = (*st.columns(3), *st.columns(3)[:2])  # two rows: five labels do not fit one
    _number(c1, "Steps", "steps", DEFAULTS.steps, 10,
            "Optimizer steps per run, over all of the objective's stages (LaCViT: contrastive then head).")
    _number(c2, "Batch size", "batch_size", DEFAULTS.batch_size, 8,
            "Images per step. Contrastive losses see more negatives with bigger batches.")
    _number(c3, "Images per class", "n_per_class", DEFAULTS.n_per_class, 10,
            "Training images per class (a class-balanced subset).")
    _number(c4, "Seed", "seed", DEFAULTS.seed, 1, "Same seed = same data subset, initialisation and batch order.")
    _number(c5, "Seeds", "seeds", 1, 1,
            f"Runs per objective with seeds s, s+1, … (1 to {MAX_SEEDS}); Compare then shows each objective's "
            "mean ± spread over its seeds.")


def advanced_section(backbone: str, auto: dict[str, str], seed_overrides: dict) -> None:
    with st.expander("Advanced settings", icon=":material/settings:"):
        a1, a2, a3 = st.columns(3)
        _number(a1, "Learning rate (heads)", "lr", DEFAULTS.lr, 1e-4, "For the linear / projection heads.",
                format="%.0e")
        _number(a2, "Backbone learning rate", "backbone_lr", None, 1e-5,
                "For the trainable backbone blocks; empty = lr / 10.", format="%.0e", placeholder="lr / 10")
        _number(a3, "Temperature τ (LaCViT)", "temperature", DEFAULTS.temperature, 0.01,
                "Lower τ focuses the contrastive loss on the hardest negatives (see Learn).")
        b2, b3 = st.columns(2)
        _number(b2, "Image size", "image_size", None, 16, "Input resolution; empty = the backbone's default.",
                placeholder="backbone default")
        _number(b3, "Val/test images per class", "eval_per_class", DEFAULTS.eval_per_class, 10,
                "Evaluation subset per class.")
        d1, d2, d3 = st.columns(3)
        _number(d1, "LaCViT contrastive share", "stage1_fraction", DEFAULTS.stage1_fraction, 0.05,
                "Fraction of the steps in stage 1 (contrastive); the rest trains the head.")
        _number(d2, "Weight decay", "weight_decay", DEFAULTS.weight_decay, 0.01, "AdamW weight decay.")
        _number(d3, "Warm-up", "warmup", DEFAULTS.warmup, 0.05,
                "Fraction of each stage spent warming the learning rate up.")
        e1, e2, _ = st.columns(3)
        e1.radio("Weights", ["pretrained", "random", "file"], key="weights", persist_state="session", horizontal=True,
                 help="Random init shows what the objective alone learns; 'file' uses an uploaded safetensors or "
                      "state-dict file (loaded with weights_only=True, never as a pickle).")
        if st.session_state.get("weights") == "file":
            e1.file_uploader("Weights file", type=["safetensors", "pt", "pth", "bin"], key="upload_weights",
                             on_change=_import_weights)
            message, path = st.session_state.get("weights_file", (None, None))
            if message:
                (e1.caption if path else e1.error)(md_text(message))  # names the user's file
        e2.radio("Optimizer", ["adamw", "sgd"], key="optimizer", persist_state="session", horizontal=True)
        s1, s2, _ = st.columns(3)
        shift_names = list(list_shifts())
        s1.selectbox("OOD shift", shift_names, index=shift_names.index(DEFAULTS.shift), key="shift", persist_state="session",
                     format_func=lambda n: n.replace("_", " "),
                     help="The shifted test split every run also scores (ood_acc, and per alpha in FLYP's WiSE-FT): "
                          + "; ".join(f"{n}: {d}" for n, d in list_shifts().items()))
        _number(s2, "Shift severity", "shift_severity", 3, 1, "1 (mild) to 5 (strong), as in ImageNet-C; "
                "for a corruption or the mix", disabled=st.session_state.get("shift", "default") in ("default", "natural"))
        st.markdown("**Data selection** (VeCAF, ActiveFT, k-center or random picks of the training pool)")
        selection = seeds.selection_picker(st, home_dir(), st.session_state.get("dataset"), key="train_selection")
        if selection:
            seed_overrides["selection"] = selection
        seeds.selection_maker(st, home_dir(), auto["ce"] if backbone == "auto" else backbone,
                              st.session_state.get("dataset"), key="train_make_selection")



def form_problems() -> list[str]:
    """Every number outside its range, named by its control: refused visibly, never clamped or replaced."""
    s = st.session_state
    problems = []
    for key, (label, rng) in NUMBER_CHECKS.items():
        value = s.get(key)
        if value is None:
            if key not in OPTIONAL_NUMBERS:
                problems.append(f"**{label}**: type a number.")
            continue
        problem = rng.problem(label, value)
        if problem:
            problems.append(f"**{label}**: {problem.removeprefix(label).strip()}.")
    return problems


def start_section(objectives: list[str], backbone: str, problem: str | None, problems: list[str],
                  overrides: dict) -> None:
    for text in problems:
        st.error(text, icon=":material/error:")
    n = len(objectives) * _seed_count()
    label = f"Start {n} run{'s' if n != 1 else ''}" if n else "Start"
    if st.button(label, key="start", type="primary", icon=":material/play_arrow:",
                 disabled=not n or bool(problem) or bool(problems), width="stretch"):
        _start(objectives, backbone, overrides)
    queued = st.session_state.pop("train_started", None)
    if queued:  # right under the button, where the user looks after the click; then scroll to the live runs
        st.success(f"{queued}. Their progress is below, under **Runs**.", icon=":material/schedule:")
        _scroll_to_live()
    if not objectives:
        st.caption("Pick at least one objective.")


def _seed_count() -> int:
    value = st.session_state.get("seeds", 1)
    return int(value) if isinstance(value, (int, float)) and 1 <= value <= MAX_SEEDS else 1


def _start(objectives: list[str], backbone: str, overrides: dict) -> None:
    base = {o: dataclasses.replace(_config(o, backbone, st.session_state["dataset"]), **overrides) for o in objectives}
    # seeds s, s+1, ... per objective, everything else equal (as `train --seeds N` does)
    cfgs = [dataclasses.replace(base[o], seed=base[o].seed + i) for o in objectives for i in range(_seed_count())]
    ident = current_identity()
    try:
        ids = get_manager().submit_many(cfgs, owner=ident)
    except EmbedLabError as exc:
        st.error(md_text(ui_message(exc)), icon=":material/error:")
        return
    st.session_state.setdefault("train_batches", []).insert(0, ids)
    remember_batch(home_dir(), ident.owner_id, ids)  # a reload or a server restart shows this batch again
    if not workshop_enabled():
        st.query_params["runs"] = ids  # a shared link still opens this batch outside workshop mode
    st.session_state["train_started"] = (f"Queued {len(ids)} run{'s' if len(ids) != 1 else ''}: "
                                         + ", ".join(dict.fromkeys(objective_label(c.objective) for c in cfgs)))
    st.toast(st.session_state["train_started"], icon=":material/schedule:")


def _scroll_to_live() -> None:
    """One-shot: bring the live runs (below the form) into view after Start."""
    st.html("<script>(function go(n){var el=document.getElementById('live-runs');"
            "if(el){el.scrollIntoView({behavior:'smooth',block:'start'});}else if(n>0){setTimeout(function(){go(n-1)},200);}"
            "})(15);</script>", unsafe_allow_javascript=True)


def _remember_form(root: str) -> None:
    """Keep the form's values for this person (a reload, a restart); written only when they change."""
    values = {k: st.session_state.get(k) for k in FORM_KEYS if k in st.session_state}
    if values != st.session_state.get("form_remembered"):
        try:
            remember_form(root, current_identity().owner_id, values)
        except (OSError, EmbedLabError):  # a read-only home: the form still works, it is just not kept
            pass
        st.session_state["form_remembered"] = values


def recall_form_values(root: str) -> None:
    """Once per session, before the widgets: the values this person last had in the form."""
    if st.session_state.get("form_recalled"):
        return
    st.session_state["form_recalled"] = True
    for key, value in recall_form(root, current_identity().owner_id).items():
        if key not in FORM_KEYS or key in st.session_state:
            continue
        if key in NUMBER_CHECKS and value is not None:
            kind = type(NUMBER_DEFAULTS.get(key) or (0.0 if key in FLOAT_NUMBERS else 0))
            value = kind(value) if isinstance(value, (int, float)) else None
        elif key == "weights" and value not in ("pretrained", "random"):
            continue  # an uploaded file is gone with its session
        elif key == "objectives":
            value = [o for o in value if o in OBJECTIVE_HELP] if isinstance(value, list) else None
        if value is not None or key in NUMBER_CHECKS:
            st.session_state[key] = value


def preview_panel(root: str) -> None:
    name = st.session_state.get("dataset")
    entries = ds.list_datasets(Path(root))
    if name not in entries:
        return
    st.markdown(f"##### :material/grid_view: {md_text(name)}")
    if not entries[name].offline and entries[name].kind == "online":
        st.info("This dataset downloads on first use; the preview appears once it is here.",
                icon=":material/cloud_download:")
        return
    try:
        p = _preview(root, name, ds.content_stamp(name, Path(root)))  # a re-import under this name is new data
    except EmbedLabError as exc:
        st.error(md_text(exc))
        return
    counts = p["counts"]
    n_train, n_val, n_test = (sum(counts[s].values()) for s in ("train", "val", "test"))
    st.caption(f"{p['n']:,} images · {len(p['classes'])} classes · {p['shape']} · "
               f"train {n_train:,} / val {n_val:,} / test {n_test:,}")
    samples, bars = st.tabs(["Samples", "Class counts"])
    with samples:
        for cls, strip in p["strips"]:
            left, right = st.columns([1, 5], vertical_alignment="center")
            left.caption(md_text(cls), text_alignment="right")  # a class name is the user's folder name: text only
            right.image(strip)
        if len(p["classes"]) > PREVIEW_CLASSES:
            st.caption(f"showing {PREVIEW_CLASSES} of {len(p['classes'])} classes")
    with bars:
        fig = go.Figure()
        for split, colour in (("train", "#4C78A8"), ("val", "#F58518"), ("test", "#54A24B")):
            fig.add_bar(y=[plotly_text(c) for c in p["classes"]], x=[counts[split][c] for c in p["classes"]], name=split, orientation="h",
                        marker_color=colour)
        fig.update_layout(barmode="stack", height=max(220, 22 * len(p["classes"]) + 80), margin=dict(l=0, r=0, t=10, b=0),
                          legend=dict(orientation="h", y=1.05, x=0), yaxis=dict(autorange="reversed"))
        st.plotly_chart(fig, key="class_counts", config={"displayModeBar": False})


# ------------------------------------------------------------------------------------ live runs
def _snapshots(run_ids: list[str]) -> list[dict]:
    return live.snapshots(run_ids)  # the server's shared, once-a-second snapshots (core/live.py)


def _watched() -> tuple[list[list[str]], list[str]]:
    """(your batches, newest first; other active runs on this server). Your batches are remembered in
    EMBEDLAB_HOME per person, so a reload or a server restart shows them again (with their curves)."""
    ident = current_identity()
    if "train_batches" not in st.session_state:
        restored = recall_batches(home_dir(), ident.owner_id)
        if not restored and not workshop_enabled():  # a shared link outside workshop mode names a batch
            restored = [[r for r in st.query_params.get_all("runs")]]
        st.session_state["train_batches"] = restored
    batches = [[r for r in batch if live.exists(r)] for batch in st.session_state["train_batches"]]
    batches = [b for b in batches if b]
    st.session_state["train_batches"] = batches
    return batches, live.others({r for b in batches for r in b})


def _curves(snaps: list[dict]) -> None:
    loss, acc = live.curve_figures(snaps)  # built once per server per change, shared by every session
    left, right = st.columns(2)
    left.plotly_chart(loss, key="live_loss", config={"displayModeBar": False})
    right.plotly_chart(acc, key="live_acc", config={"displayModeBar": False})
    st.caption("LaCViT's accuracy during its contrastive stage is nearest-class-mean accuracy: "
               "it has no classifier head yet.")


def _progress_line(p: dict) -> None:
    if p["phase"] == "training" and p["total"]:
        eta = f" · ETA {duration(p['eta'])}" if p["eta"] is not None else ""
        stage = f" · {p['stage']}" if p["stage"] else ""
        st.progress(min(1.0, p["step"] / p["total"]), text=f"step {p['step']}/{p['total']}{stage}{eta}")
    else:
        done, total = p["phase_done"], p["phase_total"]
        frac = min(1.0, done / total) if done is not None and total else 0.0
        suffix = f" · {done:,}/{total:,}" if done is not None and total else ""
        st.progress(frac, text=f"{'stopping' if p['stopping'] else p['phase']}{suffix}")


def _depth_caption(cfg: dict) -> str:
    """The fine-tuning depth a run used (its stored, resolved config), in a few words."""
    t = str(cfg.get("trainable", "?"))
    text = {"all": "full fine-tuning", "frozen": "heads only"}.get(t, f"last {t} block{'s' if t != '1' else ''}")
    if cfg.get("objective") == "lacvit" and cfg.get("stage2_train_encoder") is not None:
        text += ", stage 2 " + ("fine-tuned" if cfg["stage2_train_encoder"] else "frozen")
    return text


def _run_card(p: dict) -> None:
    mgr = get_manager()
    cfg, status, run_id = p["config"], p["status"], p["run_id"]
    with st.container(border=True, key=f"card-{run_id}"):
        head, body, actions = st.columns([2.1, 4.6, 1.3], vertical_alignment="center")
        with head:
            st.markdown(f"**{objective_label(cfg['objective'])}** · {md_code(cfg['backbone'])}")
            st.caption(md_text(f"{cfg['dataset']} · {cfg.get('steps') or '?'} steps · {_depth_caption(cfg)} · {short_id(run_id)}"))
        with body:
            if status == "queued":
                status_badge("queued", text=_queue_text(run_id, p.get("queue_position")))
            elif status == "running":
                _progress_line(p)
            elif status == "finished":
                s = p["summary"]
                numbers = [("Val acc", pct(s.get("val_acc")), None), ("Test acc", pct(s.get("test_acc")), None)]
                if cfg["objective"] == "flyp":
                    numbers.append(("Zero-shot", pct(s.get("zeroshot_acc")), "Val accuracy before fine-tuning"))
                numbers.append(("Time", duration(s.get("seconds") or p["elapsed"]), None))
                for col, (label, value, help_text) in zip(st.columns(4), numbers):
                    col.metric(label, value, help=help_text)
                for warning in s.get("warnings", [])[:3]:  # e.g. snapshots skipped past the run's disk budget
                    st.caption(f":material/warning: {md_text(warning)}")
            else:
                status_badge(status)
                if p["error"]:
                    st.caption(md_text(p["error"]))
        with actions:
            _card_actions(p, status, run_id, mgr)


def _owner_of(run_id: str, p: dict | None = None) -> tuple[str, str]:
    """(owner id, owner name) of a run ('local', 'you' for runs from before workshop mode): from its shared
    snapshot when that has them (no store read per card per poll), else from the store."""
    if p is not None and "owner_id" in p:
        return p["owner_id"] or "local", p.get("owner_name") or "you"
    try:
        record = get_store().get(run_id)
    except EmbedLabError:
        return "local", "you"
    return record.owner_id or "local", record.owner_name or "you"


def _card_actions(p: dict, status: str, run_id: str, mgr) -> None:
    """Open a finished run; cancel or resume only your own runs (the instructor: anyone's)."""
    ident = current_identity()
    owner_id, owner_name = _owner_of(run_id, p)
    allowed = can_manage(ident, owner_id)
    if workshop_enabled() and owner_id != ident.owner_id:
        st.caption(f":material/person: {md_text(owner_name)}")
    if status in ACTIVE:  # this server's run, or one of another process (asked through the store)
        if not allowed:
            return
        if st.session_state.get("confirm_cancel") == run_id and not p["stopping"]:
            st.button("Yes, cancel", key=f"confirm-cancel-{run_id}", icon=":material/stop:", type="primary",
                      on_click=_cancel, args=(run_id,), width="stretch")
            st.button("Keep it", key=f"keep-{run_id}", type="tertiary", width="stretch",
                      on_click=lambda: st.session_state.pop("confirm_cancel", None))
        else:  # the first click asks; a run is not lost to a stray click
            st.button("Stopping…" if p["stopping"] else "Cancel", key=f"cancel-{run_id}", icon=":material/stop:",
                      on_click=lambda: st.session_state.update(confirm_cancel=run_id), disabled=p["stopping"],
                      width="stretch")
    elif status == "finished":
        if st.button("Explore", key=f"explore-{run_id}", icon=":material/scatter_plot:", type="primary",
                     width="stretch"):
            open_in_explore(run_id)
    elif status in RESUMABLE and allowed:
        step = mgr.resume_point(run_id)
        label = f"Resume from step {step}" if step is not None else "Start over"
        if st.button(label, key=f"resume-{run_id}", icon=":material/replay:", width="stretch",
                     help=None if step is not None else "No checkpoint was saved before it stopped: it starts over "
                                                         "from step 0 with the same settings."):
            try:
                mgr.resume(run_id, by=ident, restart_ok=step is None)  # the label said it starts over
            except EmbedLabError as exc:
                st.toast(md_text(ui_message(exc)), icon=":material/error:")
            else:
                st.rerun()  # a full rerun: the panel polls fast again (the user's own click, no race)
        if step is None:
            st.caption("no checkpoint: starts over")


def _cancel(run_id: str) -> None:
    """Confirmed cancel; core refuses it too if the run is not this person's (a forged click)."""
    st.session_state.pop("confirm_cancel", None)
    try:
        get_manager().request_cancel(run_id, by=current_identity())
    except EmbedLabError as exc:
        st.session_state["cancel_problem"] = md_text(ui_message(exc))


def _queue_text(run_id: str, fallback: int | None) -> str:
    """queued · #k in line · ~wait, from the fair queue's positions and estimates."""
    pos, wait = live.queue_positions().get(run_id, (fallback, None))
    if not pos:
        return "queued"
    return f"queued · #{pos} in line · " + (f"~{duration(wait)} wait" if wait is not None else "wait unknown yet")


def _clear_finished() -> None:
    batches = st.session_state.get("train_batches", [])
    snaps = {p["run_id"]: p["status"] for p in _snapshots([r for b in batches for r in b])}
    kept = [[r for r in b if snaps.get(r) in ACTIVE] for b in batches]
    st.session_state["train_batches"] = [b for b in kept if b]
    try:
        forget_batches(home_dir(), current_identity().owner_id, st.session_state["train_batches"])
    except (OSError, EmbedLabError):
        pass
    if workshop_enabled():
        return
    if st.session_state["train_batches"]:
        st.query_params["runs"] = st.session_state["train_batches"][0]
    else:
        st.query_params.pop("runs", None)


def live_panel() -> None:
    """Always rendered (never conditionally): the fragment that polls the job manager."""
    batches, others = _watched()
    latest = _snapshots(batches[0]) if batches else []
    earlier = _snapshots([r for b in batches[1:] for r in b])
    other = _snapshots(others)
    everything = latest + earlier + other

    title, buttons = st.columns([3, 2], vertical_alignment="bottom")
    with title:
        n_run = sum(p["status"] == "running" for p in everything)
        n_queue = sum(p["status"] == "queued" for p in everything)
        st.subheader("Runs", anchor=False)
        if n_run or n_queue:
            st.caption(f"{n_run} running · {n_queue} queued — runs keep going if you close this tab")
    with buttons:
        finished = [p["run_id"] for p in latest if p["status"] == "finished"]
        b1, b2 = st.columns(2)
        if len(finished) >= 2 and b1.button("Compare these", key="compare_latest", icon=":material/compare_arrows:",
                                            width="stretch"):
            open_in_compare(finished)
        if batches:
            b2.button("Clear finished", key="clear_finished", icon=":material/clear_all:", on_click=_clear_finished,
                      width="stretch")

    problem = st.session_state.pop("cancel_problem", None)
    if problem:
        st.error(problem, icon=":material/block:")
    if not everything:
        st.info("No runs yet. The defaults above compare CE, LaCViT and FLYP on the offline default backbone and "
                "dataset: press **Start** and watch them train here.", icon=":material/info:")
        return
    if latest:
        _curves(latest)
        for p in latest:
            _run_card(p)
    if other:
        st.markdown("###### Also on this server" + (" · runs of others: only they or the instructor can stop them"
                                                      if workshop_enabled() else ""))
        _cards(other)
    if earlier:
        with st.expander(f"Earlier in this session ({len(earlier)})"):
            _cards(earlier)


def _cards(snaps: list[dict]) -> None:
    for p in snaps[:live.CARDS_SHOWN]:
        _run_card(p)
    if len(snaps) > live.CARDS_SHOWN:
        more = snaps[live.CARDS_SHOWN:]
        n_run = sum(p["status"] == "running" for p in more)
        st.caption(f"and {len(more)} more ({n_run} running, {len(more) - n_run} queued or done): "
                   "the Runs page lists every run.")


def pinned_panel() -> None:
    """Workshop mode: the run the instructor pinned for the room, at the top of everyone's page."""
    if not workshop_enabled():
        return
    run_id = pinned_run_id()
    if not run_id or not get_store().exists(run_id):
        return
    record = get_store().get(run_id)
    with st.container(border=True, key="pinned"):
        text, button = st.columns([5, 1], vertical_alignment="center")
        who = getattr(record, "owner_name", None) or "you"
        text.markdown(f":material/push_pin: **Pinned for the room** · {objective_label(record.objective)} · "
                      f"{md_code(record.backbone)} · {md_text(who)}'s run · val acc {pct(record.summary.get('val_acc'))}")
        if record.status == "finished" and button.button("Explore", key="pinned_explore", icon=":material/scatter_plot:"):
            open_in_explore(run_id)


# ------------------------------------------------------------------------------------- the page
root = home_dir()
st.title("Train", anchor=False)
st.caption("Fine-tune one backbone with several objectives on the same data, budget and seed, then explore how each "
           "reshaped the embedding space.")
pinned_panel()
recall_form_values(root)
left, right = st.columns([1.2, 1], gap="large")
with left:
    with st.container(border=True):
        setup_form(root)
with right:
    with st.container(border=True):
        preview_panel(root)

st.divider()
# One top-level fragment, always called. It polls every second if anything was training at this full
# run (Start is a full run, so new runs poll fast at once), else every 5 s. It never calls st.rerun()
# on its own: a timer-driven full rerun would overwrite a page switch the user clicked meanwhile
# (Streamlit keeps the newest rerun request's page).
_training = bool(get_store().list(status=ACTIVE, limit=1))
st.html('<div id="live-runs"></div>')  # where Start scrolls to
st.fragment(live_panel, run_every=1.0 if _training else 5.0)()
