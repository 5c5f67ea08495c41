"""The image grid under a selection (Explore and Compare): "48 of 189", paged through all of them."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st

from core.safe_text import md_text
from core.thumbnails import display_images
from core.view_state import page_bounds, page_caption

PER_PAGE = 48  # thumbnails per page of the grid


def grid(data, ids: Sequence[int], captions: Sequence[str], width: int = 84) -> None:
    if len(ids):
        st.image(display_images(data.images[list(ids)], width), caption=[md_text(c) for c in captions], width=width)


def paged_grid(data, ids: Sequence[int], caption: Callable[[int], str], *, key: str, note: str = "",
               per_page: int = PER_PAGE) -> None:
    """All of `ids`, `per_page` at a time, with "48 of 189 (1–48)" and a page picker when there are more."""
    ids = [int(i) for i in ids]
    n = len(ids)
    pages = page_bounds(n, 1, per_page)[2]
    page = 1
    if pages > 1:
        # the key carries the count: a new selection starts at page 1 and never holds a page past its end
        page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1, key=f"{key}_page_{n}")
    start, stop, _ = page_bounds(n, page, per_page)
    st.caption(f"{page_caption(n, start, stop)} shown" + (f" · {note}" if note else ""))
    grid(data, ids[start:stop], [caption(i) for i in ids[start:stop]])
