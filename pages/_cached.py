"""Cached loaders shared by the Explore and Compare pages (finished runs never change)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from assets.scatter_component import thumbs_for
from core import report
from core.datasets import load_dataset
from core.store import RunStore


@st.cache_resource(show_spinner=False, max_entries=16)
def run_view(root: str, run_id: str, split: str) -> report.RunView:
    return report.load_run_view(RunStore(root), run_id, split)


@st.cache_resource(show_spinner=False, max_entries=4)
def dataset(root: str, name: str):
    return load_dataset(name, Path(root))


@st.cache_data(show_spinner=False, max_entries=32)
def analysis(root, run_id, split, output):
    from core.metrics import analyze_cached

    return analyze_cached(run_view(root, run_id, split).dir, root=Path(root), split=split, output=output, details=True)


@st.cache_resource(show_spinner=False, max_entries=8)
def split_dataset(root: str, run_id: str, split: str):
    """The run's dataset as `split` shows it: the OOD split's images through the run's shift (core/shifts.py)."""
    from core.shifts import shifted_view

    view = run_view(root, run_id, split)
    data = dataset(root, view.dataset)
    shift = view.summary.get("ood_shift") or view.config.get("shift")
    return shifted_view(data, shift) if split == "ood" and shift else data


@st.cache_data(show_spinner=False, max_entries=8)
def thumbs(root, run_id, split):
    view = run_view(root, run_id, split)
    return thumbs_for(split_dataset(root, run_id, split), view.after.ids)


@st.cache_data(show_spinner="Embedding the selection's pool…", max_entries=8)
def pool_map(root: str, selection: str, max_points: int) -> dict:
    """A saved selection's pool map (it builds a backbone and embeds the pool: once, not every rerun)."""
    from core.selection import pool_map as build

    return build(selection, root, max_points=max_points)
