"""Explore's text-search panel (issue 17.6): a phrase, its nearest images, and a star where it lands.

pages/explore.py calls `panel(...)` once, between building the panes and drawing the scatter; the
panel returns the panes with the phrase added as a black star (an extra anchor). The search itself
is core/text_search.py; the run's text tower is loaded once per run there, not per rerun.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from core import text_search
from core.errors import EmbedLabError
from core.projections import METHOD_LABELS
from core.safe_text import md_code, md_text
from core.thumbnails import display_images
from pages._cached import run_view, split_dataset

PHRASE_COLOUR = "#111111"  # the phrase's star: black, apart from the class colours of FLYP's anchors
TEMPLATE_CHOICES = {"auto": "auto", "always": "class templates", "never": "as typed"}


@st.cache_data(show_spinner=False, max_entries=32)
def _search(root: str, run_id: str, split: str, output: str, phrase: str, templates: str, method: str, drawn: str,
            _ids: np.ndarray, _points: dict) -> dict:
    """One search; `drawn` names the drawn panes (method, dims, points, phases), which fix `_ids` / `_points`."""
    view = run_view(root, run_id, split)
    return text_search.search(view, phrase, output=output, ids=_ids, panes=_points, method=method, templates=templates)


def panel(root: str, view, data: dict, method: str, panes: list[dict]) -> list[dict]:
    """The text-search expander for one run; returns `panes` with the phrase's star added where it has one."""
    reason = text_search.unavailable_reason(view.config)
    phrase = str(st.session_state.get("explore_text") or "")
    with st.expander("Search by text", icon=":material/manage_search:", expanded=bool(phrase.strip()) and not reason):
        if reason:
            st.caption(md_text(reason))
            return panes
        names = _prompt_names(root, view)
        c1, c2 = st.columns([4, 1.6])
        phrase = c1.text_input("Phrase", key="explore_text", max_chars=text_search.MAX_PHRASE_CHARS,
                               placeholder=f"a photo of a {names[0]}" if names else "a photo of a …",
                               help="Embedded by the run's text tower (after fine-tuning for the after pane, as "
                                    "loaded for the before pane), then compared with every image by cosine.")
        templates = c2.segmented_control("Prompts", list(TEMPLATE_CHOICES), default="auto", format_func=TEMPLATE_CHOICES.get,
                                         key="explore_text_templates",
                                         help="auto: a bare name of up to three words (no leading 'a' / 'the') goes through "
                                              "the class-prompt templates ('a photo of a {}.' and two more, averaged), as the "
                                              "zero-shot head does; anything else is embedded as typed.") or "auto"
        if not phrase.strip():
            st.caption("Type a phrase, e.g. a class name" + (f" ({md_code(names[0])})" if names else "")
                       + " or a caption, to see the images nearest to it and where it lands in the plot.")
            return panes
        points = {ph: p for ph, p in zip(data["phases"], data["points"])}
        drawn = f"{method}/{data['points'][0].shape[1]}/{len(data['ids'])}/{'+'.join(data['phases'])}"
        try:
            with st.spinner("Embedding the phrase (the first search loads the run's text tower)…"):
                res = _search(root, view.id, view.split, data["output"], phrase, templates, method, drawn, data["ids"], points)
        except EmbedLabError as exc:
            st.error(md_text(exc))
            return panes
        shown = " · ".join(md_code(p) for p in res["prompts"])
        st.caption(f"Embedded as {shown}" + (" (averaged)" if len(res["prompts"]) > 1 else "") + f"; cosine in the "
                   f"{md_code(data['output'])} space.")
        dataset = split_dataset(root, view.id, view.split)
        classes = list(data["classes"])
        for phase in ("before", "after"):
            hit = res["phases"].get(phase)
            if hit is None:
                continue
            near = hit["nearest"]
            st.markdown(f"**{phase} fine-tuning** · the {len(near)} nearest images")
            st.image(display_images(dataset.images[[n["id"] for n in near]], 84),
                     caption=[md_text(f"{classes[n['label']]} · cos {n['cos']:.2f}") for n in near], width=84)
        placed = [res["phases"][ph] for ph in data["phases"] if ph in res["phases"] and res["phases"][ph]["xy"] is not None]
        if placed:
            how = (f"placed exactly ({METHOD_LABELS.get(method, method)} applied to the phrase's embedding)" if placed[0]["exact"] else
                   f"placed approximately: {METHOD_LABELS.get(method, method)} keeps no fitted model here, so the star sits "
                   f"at the similarity-weighted mean position of the phrase's {text_search.PLACE_K} most similar images")
            st.caption(f"Black star in the plot: the phrase, {how}.")
    return [_with_star(pane, res["phases"].get(ph), res["phrase"], classes) for pane, ph in zip(panes, data["phases"])]


def _with_star(pane: dict, hit: dict | None, phrase: str, classes: list[str]) -> dict:
    if hit is None or hit["xy"] is None:
        return pane
    anchors = pane.get("anchors")
    n = 0 if anchors is None else len(anchors)
    xy = np.asarray(hit["xy"], dtype=np.float32).reshape(1, -1)
    names = list(pane.get("anchor_names") or classes)[:n]
    from core.report import class_colour

    colours = list(pane.get("anchor_colors") or [class_colour(i) for i in range(n)])[:n]
    return {**pane, "anchors": xy if n == 0 else np.vstack([np.asarray(anchors, np.float32), xy]),
            "anchor_names": names + [f"“{phrase}”"], "anchor_colors": colours + [PHRASE_COLOUR]}


def _prompt_names(root: str, view) -> list[str]:
    try:
        return list(split_dataset(root, view.id, view.split).prompt_names or [])
    except EmbedLabError:
        return []
