"""Runs: every run in EMBEDLAB_HOME, with filters; open, compare, resume, cancel or delete them."""
from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from core.errors import EmbedLabError
from core.jobs import ACTIVE, RESUMABLE
from core.safe_text import md_code, md_text
from core.store import STATUSES
from core.workshop import can_manage, workshop_enabled
from pages._identity import current as current_identity
from pages._ui import (duration, ensure_router, get_manager, get_store, objective_label, open_in_compare,
                       open_in_explore, pct)

ensure_router()

store = get_store()
manager = get_manager()
me = current_identity()
workshop = workshop_enabled()
CANCEL_SETTLE_S = 3.0  # a cancelled running run stops within a step: wait this long so the table shows it

st.title("Runs", anchor=False)
st.caption("Every run in this EMBEDLAB_HOME, newest first. Select rows to open, compare, resume or delete them.")

records = store.list()
if not records:
    st.info("No runs yet: start some on the **Train** page.", icon=":material/info:")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()


def _filter(col, label: str, key: str, values, **kw) -> list[str]:
    """A multiselect over the values present, plus whatever is already picked (runs may be deleted)."""
    options = sorted({v for v in values if v} | set(st.session_state.get(key) or []))
    return col.multiselect(label, options, key=key, placeholder="all", persist_state="session", **kw)


with st.container(border=True):
    f1, f2, f3, f4, f5 = st.columns([1.2, 1, 1.4, 1.2, 1.2])
    statuses = f1.multiselect("Status", list(STATUSES), key="runs_status", placeholder="all", persist_state="session")
    objectives = _filter(f2, "Objective", "runs_objective", (r.objective for r in records), format_func=objective_label)
    backbones = _filter(f3, "Backbone", "runs_backbone", (r.backbone for r in records))
    datasets = _filter(f4, "Dataset", "runs_dataset", (r.dataset for r in records))
    search = f5.text_input("Search", key="runs_search", placeholder="run id contains…", persist_state="session")

shown = [r for r in records
         if (not statuses or r.status in statuses) and (not objectives or r.objective in objectives)
         and (not backbones or r.backbone in backbones) and (not datasets or r.dataset in datasets)
         and (not search or search.lower() in r.id.lower())]


def _summary_number(r, key: str) -> float:
    value = r.summary.get(key)
    return float("nan") if value is None else float(value)


STATUS_COLORS = {"queued": "#6b7280", "running": "#1c6dd0", "finished": "#15803d", "failed": "#b91c1c",
                 "cancelled": "#c2410c", "interrupted": "#7c3aed"}
def _owner(r) -> str:
    name = getattr(r, "owner_name", None) or "you"
    return f"{name} (you)" if (getattr(r, "owner_id", None) or "local") == me.owner_id and name != "you" else name


table = pd.DataFrame({
    "run": [r.id for r in shown],
    "owner": [_owner(r) for r in shown],
    "status": [r.status for r in shown],
    "objective": [objective_label(r.objective) for r in shown],
    "backbone": [r.backbone for r in shown],
    "dataset": [r.dataset for r in shown],
    "val acc": [_summary_number(r, "val_acc") for r in shown],
    "test acc": [_summary_number(r, "test_acc") for r in shown],
    "ood acc": [_summary_number(r, "ood_acc") for r in shown],
    "zero-shot": [pct(r.summary["zeroshot_acc"]) if r.summary.get("zeroshot_acc") is not None else "" for r in shown],
    "duration": [duration(r.duration) if r.started else "" for r in shown],
    "started": [datetime.fromtimestamp(r.started) if r.started else None for r in shown],
})
styled = table.style.map(lambda v: f"color: {STATUS_COLORS.get(v, 'inherit')}; font-weight: 600", subset=["status"])
acc_column = dict(min_value=0.0, max_value=1.0, format="percent", width="small")
event = st.dataframe(
    styled, key=f"runs_table_{st.session_state.get('runs_table_gen', 0)}", on_select="rerun", selection_mode="multi-row",
    hide_index=True, width="stretch",
    column_config={
        "run": st.column_config.TextColumn("Run", width=230),
        "owner": st.column_config.TextColumn("Owner", width=110) if workshop else None,
        "status": st.column_config.TextColumn("Status", width="small"),
        "objective": st.column_config.TextColumn("Objective", width="small"),
        "backbone": st.column_config.TextColumn("Backbone", width=150),
        "dataset": st.column_config.TextColumn("Dataset", width="small"),
        "val acc": st.column_config.ProgressColumn("Val acc", **acc_column),
        "test acc": st.column_config.ProgressColumn("Test acc", **acc_column),
        "ood acc": st.column_config.ProgressColumn("OOD acc", **acc_column,
                                                   help="accuracy on the shifted test split (the run's `ood_shift`)"),
        "zero-shot": st.column_config.TextColumn("Zero-shot", width="small", help="FLYP: val accuracy before fine-tuning"),
        "duration": st.column_config.TextColumn("Duration", width="small"),
        "started": st.column_config.DatetimeColumn("Started", format="MMM D, HH:mm:ss", width=130),
    },
)
n_active = sum(r.status in ACTIVE for r in records)
st.caption(f"{len(shown)} of {len(records)} runs" + (f" · {n_active} queued or running" if n_active else ""))

rows = event.selection.rows if event is not None else []
selected = [shown[i] for i in rows if i < len(shown)]
ids = [r.id for r in selected]
finished = [r.id for r in selected if r.status == "finished"]
mine = [r for r in selected if can_manage(me, getattr(r, "owner_id", None))]  # others' runs: view only
resumable = [r.id for r in mine if r.status in RESUMABLE]
cancellable = [r.id for r in mine if r.status in ACTIVE]
deletable = [r.id for r in mine]
not_mine = len(selected) - len(mine)

def _act(action: str, run_ids: list[str]) -> None:
    """Button callbacks: they run before the rerun, so the table below shows the new statuses."""
    done, remote, restarted, errors = 0, 0, 0, []
    for run_id in run_ids:
        try:
            if action == "resume":
                fresh = manager.resume_point(run_id) is None
                manager.resume(run_id, by=me, restart_ok=True)  # the button's help says that such a run starts over
                restarted += fresh
            elif action == "cancel":
                where = manager.request_cancel(run_id, by=me)  # "remote": a CLI's or another server's run, via the store
                if where is None:
                    raise EmbedLabError(f"it is {store.get(run_id).status} now, no longer queued or running")
                remote += where == "remote"
                if where == "local":
                    manager.wait(run_id, CANCEL_SETTLE_S)  # the table below then shows it cancelled
            elif action == "delete":
                manager.delete(run_id, by=me)
            done += 1
        except EmbedLabError as exc:
            errors.append(f"{run_id}: {exc}")
    verb = {"resume": "Re-queued", "cancel": "Cancelled", "delete": "Deleted"}[action]
    text = f"{verb} {done} run{'s' if done != 1 else ''}."
    if remote:
        text += (f" {remote} of them belong{'s' if remote == 1 else ''} to another process (a CLI or another server) "
                 f"and stop{'s' if remote == 1 else ''} at {'its' if remote == 1 else 'their'} next step.")
    if restarted:
        text += f" {restarted} of them had no checkpoint and start{'s' if restarted == 1 else ''} over from step 0."
    st.session_state["runs_message"] = (text, errors)
    # rows may move or leave the filtered view: start from a fresh, empty selection (a new table key)
    st.session_state["runs_table_gen"] = st.session_state.get("runs_table_gen", 0) + 1
    st.session_state["runs_delete_popover"] = False  # close the confirmations
    st.session_state["runs_cancel_popover"] = False


with st.container(horizontal=True, key="runs_actions"):
    if st.button("Explore", key="runs_explore", icon=":material/scatter_plot:", type="primary",
                 disabled=len(finished) != 1, help="Select one finished run"):
        open_in_explore(finished[0])
    if st.button(f"Compare ({len(finished)})" if finished else "Compare", key="runs_compare",
                 icon=":material/compare_arrows:", disabled=len(finished) < 2, help="Select two or more finished runs"):
        open_in_compare(finished)
    st.button("Resume", key="runs_resume", icon=":material/replay:", disabled=not resumable, on_click=_act,
              args=("resume", resumable), help="Continue interrupted, failed or cancelled runs from their last checkpoint "
                   "(a run with no checkpoint yet starts over from step 0)")
    with st.popover("Cancel", icon=":material/stop:", disabled=not cancellable, key="runs_cancel_popover",
                    on_change="rerun", help="Stop queued or running runs"):
        st.markdown(f"Stop **{len(cancellable)}** run{'s' if len(cancellable) != 1 else ''}? A running run stops at "
                    "its next step and keeps its last checkpoint (Resume continues from it).")
        st.markdown("\n".join(f"- {md_code(run_id)}" for run_id in cancellable))
        st.button("Yes, cancel", key="runs_cancel", type="primary", icon=":material/stop:", on_click=_act,
                  args=("cancel", cancellable))
    with st.popover("Delete", icon=":material/delete:", disabled=not deletable, key="runs_delete_popover",
                    on_change="rerun"):
        st.markdown(f"Delete **{len(deletable)}** run{'s' if len(deletable) != 1 else ''} with their checkpoints and "
                    "embeddings? Running runs are cancelled first.")
        st.markdown("\n".join(f"- {md_code(run_id)}" for run_id in deletable))
        st.button("Delete for good", key="runs_delete", type="primary", icon=":material/delete_forever:", on_click=_act,
                  args=("delete", deletable))
    st.button("Refresh", key="runs_refresh", icon=":material/refresh:", type="tertiary")

if not_mine:
    st.caption(f":material/lock: {not_mine} of the selected runs belong{'s' if not_mine == 1 else ''} to others: "
               "only their owner or the instructor can cancel, delete or resume them.")
message = st.session_state.pop("runs_message", None)
if message:
    text, errors = message
    st.toast(text, icon=":material/done:")
    for error in errors:
        st.error(md_text(error), icon=":material/error:")
for r in selected:
    if r.error and r.status in ("failed", "interrupted", "cancelled"):
        st.caption(f"**{md_text(r.id)}** — {md_text(r.error)}")
