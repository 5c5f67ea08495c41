"""Cached loaders shared by the Explore and Compare pages (finished runs never change)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from assets.scatter_component import thumbs_for
from core import report
from core.datasets import content_stamp, load_dataset
from core.store import RunStore


@st.cache_resource(show_spinner=False, max_entries=16)
def run_view(root: str, run_id: str, split: str) -> report.RunView:
    return report.load_run_view(RunStore(root), run_id, split)


def dataset(root: str, name: str):
    """The dataset as it is now: keyed by its content stamp, so a re-import with --overwrite is shown at once."""
    return _dataset(root, name, content_stamp(name, Path(root)))


@st.cache_resource(show_spinner=False, max_entries=4)
def _dataset(root: str, name: str, stamp: str):
    return load_dataset(name, Path(root))


@st.cache_data(show_spinner=False, max_entries=32)
def analysis(root, run_id, split, output):
    from core.metrics import analyze_cached

    return analyze_cached(run_view(root, run_id, split).dir, root=Path(root), split=split, output=output, details=True)


def split_dataset(root: str, run_id: str, split: str):
    """The run's dataset as `split` shows it: the OOD split's images through the run's shift (core/shifts.py)."""
    return _split_dataset(root, run_id, split, content_stamp(run_view(root, run_id, split).dataset, Path(root)))


@st.cache_resource(show_spinner=False, max_entries=8)
def _split_dataset(root: str, run_id: str, split: str, stamp: str):
    from core.shifts import shifted_view

    view = run_view(root, run_id, split)
    data = _dataset(root, view.dataset, stamp)
    shift = view.summary.get("ood_shift") or view.config.get("shift")
    return shifted_view(data, shift) if split == "ood" and shift else data


def thumbs(root, run_id, split):
    """The run's thumbnail sheets, drawn from the dataset's current content."""
    return _thumbs(root, run_id, split, content_stamp(run_view(root, run_id, split).dataset, Path(root)))


@st.cache_data(show_spinner=False, max_entries=8)
def _thumbs(root, run_id, split, stamp):
    view = run_view(root, run_id, split)
    return thumbs_for(_split_dataset(root, run_id, split, stamp), view.after.ids)


@st.cache_data(show_spinner="Embedding the selection's pool…", max_entries=8)
def pool_map(root: str, selection: str, max_points: int) -> dict:
    """A saved selection's pool map (it builds a backbone and embeds the pool: once, not every rerun)."""
    from core.selection import pool_map as build

    return build(selection, root, max_points=max_points)
