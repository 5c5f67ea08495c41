"""Compare's confusion matrices with clickable cells (issue 17.6): a click on a cell, or the picker
below the figure, opens that (true, predicted) cell's images in a grid, "k–m of n", page by page.

pages/compare.py calls `confusion_section(...)` once where it drew the figure; which ids fall in a
cell, the page arithmetic and the figure's click targets are core/confusion.py.
"""
from __future__ import annotations

import streamlit as st

from core import confusion
from core.safe_text import md_text
from core.thumbnails import display_images
from pages._cached import split_dataset

KEY = "compare_confusion"


def _cell_key(series: int, true: int, pred: int) -> str:
    return f"{series}:{true}:{pred}"


def _from_chart() -> None:
    """on_select: a clicked cell becomes the picker's value (set before the rerun, so the picker shows it)."""
    points = ((st.session_state.get(KEY) or {}).get("selection") or {}).get("points") or []
    cells = [c for c in (confusion.point_cell(p) for p in points) if c is not None]
    if cells:
        st.session_state[f"{KEY}_cell"] = _cell_key(*cells[-1])


def _valid(key: str, n_series: int, n_classes: int) -> bool:
    try:
        s, t, p = map(int, str(key).split(":"))
    except ValueError:
        return False
    return 0 <= s < n_series and 0 <= t < n_classes and 0 <= p < n_classes


def confusion_section(root: str, views, names, results, classes, split: str) -> None:
    """The clickable confusion figure of the runs that have predictions, and the chosen cell's images."""
    runs = [(n, v, r["confusion"]) for n, v, r in zip(names, views, results) if r.get("confusion")]
    if not runs:
        return
    fig = confusion.clickable_confusion_figure(classes, [(n, cm) for n, _, cm in runs])
    st.plotly_chart(fig, key=KEY, on_select=_from_chart, selection_mode="points")
    options = [_cell_key(s, t, p) for s, (_, v, _) in enumerate(runs)
               for t, p, _ in confusion.worst_cells(v.after.labels, v.after.preds, len(classes))]
    picked = st.session_state.get(f"{KEY}_cell")
    if picked and not _valid(picked, len(runs), len(classes)):  # from another choice of runs
        del st.session_state[f"{KEY}_cell"]
        picked = None
    if picked and picked not in options:  # a clicked diagonal (correct) cell, or any cell with images
        options.append(picked)

    def label(key: str) -> str:
        s, t, p = map(int, key.split(":"))
        n = len(confusion.cell_ids(runs[s][1].after.ids, runs[s][1].after.labels, runs[s][1].after.preds, t, p))
        return f"{runs[s][0]}: true {classes[t]} → predicted {classes[p]} ({n})"

    choice = st.selectbox("Open a cell", options, index=None, format_func=label, key=f"{KEY}_cell",
                          placeholder="Click a cell above, or pick one (most images first)")
    if not choice:
        st.caption("Click a cell of a confusion matrix to see its images.")
        return
    s, t, p = map(int, choice.split(":"))
    name, view, _ = runs[s]
    es = view.after
    ids = confusion.cell_ids(es.ids, es.labels, es.preds, t, p)
    kind = "correct" if t == p else "misclassified"
    page = 1
    pages = max(1, -(-len(ids) // confusion.PER_PAGE))
    if pages > 1:
        page = int(st.number_input("Page", min_value=1, max_value=pages, value=1, step=1, key=f"{KEY}_page_{choice}"))
    shown, where, pages = confusion.page_of(ids, page)
    st.markdown(f"**{md_text(name)}** · true **{md_text(classes[t])}**, predicted **{md_text(classes[p])}** "
                f"({kind}) · images {where}" + (f" · page {page} of {pages}" if pages > 1 else ""))
    if shown:
        data = split_dataset(root, view.id, split)
        st.image(display_images(data.images[shown], 84), caption=[md_text(f"#{i}") for i in shown], width=84)
    else:
        st.caption("No images in this cell.")
