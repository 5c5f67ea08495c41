"""The Train page's live panel reads, served from the server's shared snapshots (core/live.py).

Not a page. Every session's once-a-second fragment calls these; the reads behind them (the job
manager's progress, the store's active runs) happen at most once a second per server, and the curve
figures are built once per (run, version) set and handed to every session as the same object.
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import live
from core.jobs import ACTIVE
from core.safe_text import plotly_text
from pages import _ui
from pages._ui import OBJECTIVE_COLORS, objective_label


# Cards the Train page draws per list (others' runs, earlier batches): every session redraws its cards once a
# second, so a room's runs on everyone's page would grow the server's work with sessions x runs; the rest are
# counted under the cards, and the Runs page (and the class board) list them all.
CARDS_SHOWN = 6


def board() -> live.LiveBoard:
    return live.board_for(_ui.get_manager())  # through the module: tests patch the getters


def snapshots(run_ids: list[str]) -> list[dict]:
    """Progress dicts of the runs that still exist (shallow copies of the shared snapshots: read only)."""
    return [dict(s.progress) for s in board().snapshots(run_ids)]


def exists(run_id: str) -> bool:
    return not board().snapshot(run_id).missing


def others(mine: set[str]) -> list[str]:
    """Runs active on this server (this process's first, then other processes' from the store) not in `mine`."""
    mgr, store = _ui.get_manager(), _ui.get_store()

    def fetch() -> tuple[str, ...]:
        ids = mgr.active()
        return tuple(ids + [r.id for r in store.list(status=ACTIVE) if r.id not in ids])

    return [r for r in board().cached("active", fetch, mgr.peek) if r not in mine]


def queue_positions() -> dict:
    """The fair queue's {run_id: (position, wait estimate)}: computed once a second per server, not per card."""
    mgr = _ui.get_manager()
    positions = getattr(mgr, "queue_positions", None)
    if positions is None:
        return {}
    return board().cached("queue", positions, mgr.peek)


def invalidate(run_id: str | None = None) -> None:
    """After this session changed a run (cancel, resume), show the change at the next draw, not a second later."""
    board().invalidate(run_id)


def curve_figures(snaps: list[dict]) -> tuple[go.Figure, go.Figure]:
    """(loss, validation accuracy) figures of these runs, built once per server for their versions."""
    return _figures(tuple((p["run_id"], p.get("version")) for p in snaps), snaps)


@st.cache_resource(show_spinner=False, max_entries=64)
def _figures(versions: tuple, _snaps: list[dict]) -> tuple[go.Figure, go.Figure]:
    # cache_resource: one object for all sessions (st.plotly_chart only reads it), keyed by the (run, version)
    # pairs alone: `_snaps` (not hashed) holds exactly what those versions show
    return _build(_snaps)


def _build(snaps: list[dict]) -> tuple[go.Figure, go.Figure]:
    loss, acc = go.Figure(), go.Figure()
    for p in snaps:
        cfg = p["config"]
        name = plotly_text(f"{objective_label(cfg['objective'])} · {cfg['backbone']}")
        colour = OBJECTIVE_COLORS.get(cfg["objective"])
        if p["loss"]:
            x, y = zip(*p["loss"])
            loss.add_scatter(x=x, y=y, mode="lines", name=name, line=dict(color=colour, width=2),
                             hovertemplate="step %{x}: loss %{y:.3f}<extra>%{fullData.name}</extra>")
        if p["val_acc"]:
            x, y = zip(*p["val_acc"])
            acc.add_scatter(x=x, y=[100 * v for v in y], mode="lines+markers", name=name,
                            line=dict(color=colour, width=2), marker=dict(size=6),
                            hovertemplate="step %{x}: %{y:.1f}%<extra>%{fullData.name}</extra>")
    for fig, title, ytitle in ((loss, "Training loss", "loss"), (acc, "Validation accuracy", "accuracy (%)")):
        fig.update_layout(title=dict(text=title, font=dict(size=14)), height=300, margin=dict(l=0, r=0, t=36, b=0),
                          legend=dict(orientation="h", y=-0.12, yanchor="top", x=0), uirevision="keep",
                          yaxis_title=ytitle)
    acc.update_yaxes(rangemode="tozero")
    for fig in (loss, acc):
        if not fig.data:
            fig.add_annotation(text="waiting for the first step…", showarrow=False, x=0.5, y=0.5, xref="paper",
                               yref="paper", font=dict(color="#888"))
            fig.update_xaxes(visible=False)
            fig.update_yaxes(visible=False)
    return loss, acc
