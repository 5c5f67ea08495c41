"""Class board (workshop mode, the instructor): everyone's runs in one table, a gallery of the room's
embedding spaces (one small plot per person's run, in the space its objective trains), and the run
pinned at the top of everyone's Train page."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.objectives import trained_space
from core.errors import EmbedLabError
from core.projections import project
from core.safe_text import md_text, plotly_text
from core.workshop import workshop_enabled
from pages._cached import run_view
from pages._identity import current, pin, pinned_run_id
from pages._ui import ensure_router, get_store, objective_label, pct, short_id

ensure_router()

GALLERY_COLUMNS = 3  # small plots per row
GALLERY_MAX = 24  # people shown at once (the newest run of each)
POINTS = 600  # points per plot: enough to see clusters, light for a room of plots


if not workshop_enabled() or not current().instructor:
    st.info("The class board is the instructor's: unlock it with the passcode in the sidebar.", icon=":material/lock:")
    st.stop()

store = get_store()
root = str(store.root)
records = store.list()
st.title("Class board", anchor=False)
st.caption("Everyone's runs on this server, newest first. Pin one for the room: it shows at the top of everyone's "
           "Train page.")


def _owner(r) -> str:
    return getattr(r, "owner_name", None) or "you"


# EVERYONE'S RUNS ----------------------------------------------------------------------------------
if not records:
    st.info("No runs yet: they appear here as people start them on the Train page.", icon=":material/info:")
    st.stop()
table = pd.DataFrame({
    "owner": [_owner(r) for r in records],
    "objective": [objective_label(r.objective) for r in records],
    "backbone": [r.backbone for r in records],
    "dataset": [r.dataset for r in records],
    "settings": [f"{r.config.get('steps') or '?'} steps · batch {r.config.get('batch_size')} · lr {r.config.get('lr')}"
                 + (f" · τ {r.config.get('temperature')}" if r.objective == "lacvit" else "") for r in records],
    "status": [r.status for r in records],
    "val acc": [r.summary.get("val_acc") for r in records],
    "test acc": [r.summary.get("test_acc") for r in records],
    "run": [short_id(r.id) for r in records],
})
acc = dict(min_value=0.0, max_value=1.0, format="percent", width=90)
st.dataframe(table, hide_index=True, width="stretch", key="board_table", column_config={
    "owner": st.column_config.TextColumn("Owner", width=110),
    "objective": st.column_config.TextColumn("Objective", width=90),
    "backbone": st.column_config.TextColumn("Backbone", width=140),
    "dataset": st.column_config.TextColumn("Dataset", width=110),
    "settings": st.column_config.TextColumn("Settings", width=260),
    "status": st.column_config.TextColumn("Status", width=90),
    "val acc": st.column_config.ProgressColumn("Val acc", **acc),
    "test acc": st.column_config.ProgressColumn("Test acc", **acc),
    "run": st.column_config.TextColumn("Run", width=110),
})

# PIN FOR THE ROOM ---------------------------------------------------------------------------------
finished = [r for r in records if r.status == "finished"]
labels = {r.id: f"{_owner(r)} · {objective_label(r.objective)} · {r.backbone} · val {pct(r.summary.get('val_acc'))} · "
                f"{short_id(r.id)}" for r in finished}
pinned = pinned_run_id()
with st.container(border=True, key="board_pin"):
    st.markdown(":material/push_pin: **Pin for the room**" + (f" · now: {md_text(labels[pinned])}" if pinned in labels else ""))
    if finished:
        p1, p2, p3 = st.columns([4, 1, 1], vertical_alignment="bottom")
        choice = p1.selectbox("Run to pin", list(labels), format_func=labels.get, key="board_pin_pick",
                              index=list(labels).index(pinned) if pinned in labels else 0)
        if p2.button("Pin for the room", key="board_pin_button", type="primary", icon=":material/push_pin:"):
            try:
                pin(choice)
            except EmbedLabError as exc:
                st.error(md_text(exc))
            else:
                st.rerun()
        if pinned and p3.button("Unpin", key="board_unpin", icon=":material/close:"):
            pin(None)
            st.rerun()
    else:
        st.caption("Runs can be pinned once they have finished.")


# THE ROOM'S EMBEDDING SPACES ----------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def _points(root: str, run_id: str, output: str) -> dict | None:
    """A run's val embedding in `output`, projected to 2-D (PCA: instant, and the same for everyone)."""
    view = run_view(root, run_id, "val")
    if view.after is None:
        return None
    space = output if output in view.after.vectors else view.main_output()
    x = np.asarray(view.after.vectors[space], dtype=np.float32)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(x), size=min(POINTS, len(x)), replace=False))
    y = project(x[keep], "pca", 2, root=root)
    return {"x": y[:, 0], "y": y[:, 1], "labels": view.after.labels[keep], "classes": list(view.after.classes),
            "space": space}


def _tile(r, data: dict):
    from core.report import class_colour

    fig = go.Figure()
    for c, name in enumerate(data["classes"]):
        m = data["labels"] == c
        if m.any():
            fig.add_scattergl(x=data["x"][m], y=data["y"][m], mode="markers", name=plotly_text(name),
                              marker=dict(size=4, color=class_colour(c)), hoverinfo="name")
    setting = f" · τ {r.config.get('temperature')}" if r.objective == "lacvit" else ""
    title = f"{_owner(r)} · val {pct(r.summary.get('val_acc'))}{setting}"
    fig.update_layout(title=dict(text=plotly_text(title), font=dict(size=13)), height=260, showlegend=False,
                      margin=dict(l=0, r=0, t=30, b=0), xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


st.subheader("The room's embedding spaces", anchor=False)
present = sorted({r.objective for r in finished}, key=lambda o: (o != "lacvit", o))
if not present:
    st.caption("The gallery fills as runs finish.")
    st.stop()
objective = st.segmented_control("Objective", present, default=present[0], key="board_objective",
                                 format_func=objective_label) or present[0]
space = trained_space(objective)
newest = {}
for r in finished:  # newest first: the first run seen of each person is their newest
    if r.objective == objective:
        newest.setdefault(getattr(r, "owner_id", None) or "local", r)
runs = list(newest.values())[:GALLERY_MAX]
st.caption(f"Each person's newest {objective_label(objective)} run, in the space it trains ({space}), val split, PCA.")
for i in range(0, len(runs), GALLERY_COLUMNS):
    for col, r in zip(st.columns(GALLERY_COLUMNS), runs[i:i + GALLERY_COLUMNS]):
        try:
            data = _points(root, r.id, space)
        except EmbedLabError as exc:
            col.caption(f"{md_text(_owner(r))}: {md_text(exc)}")
            continue
        if data is None:
            col.caption(f"{md_text(_owner(r))}: no embeddings stored")
            continue
        col.plotly_chart(_tile(r, data), key=f"board_tile_{r.id}", config={"displayModeBar": False})
