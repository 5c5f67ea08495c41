"""Explore's and Compare's view in the URL (issue 16.4): read once per page run, written back when it changed.

Widgets take their first value from the URL (checked by core.view_state); after the widgets, the page writes
their current values, so the link in the address bar always opens this view. Refused values are shown as one
caption each, as inert text.
"""
from __future__ import annotations

import streamlit as st

from core.safe_text import md_text
from core.view_state import UrlState, changed_params


def read(page: str) -> UrlState:
    """The URL's view. `url.opened` is True on the page's first run in this session (the link as opened): only
    then are refused values noted; later a stale value (a space the newly picked run lacks) just gives the default."""
    url = UrlState({k: st.query_params.get_all(k) for k in st.query_params.keys()})
    seen = st.session_state.setdefault("_url_pages_read", set())
    url.opened = page not in seen
    seen.add(page)
    return url


def write(state: dict) -> None:
    """Write the view's values that differ from the URL's (no identity: core.view_state.to_params)."""
    current = {k: st.query_params.get_all(k) for k in st.query_params.keys()}
    for key, value in changed_params(current, state).items():
        st.query_params[key] = value


def notes(url: UrlState) -> None:
    """Show the refused values noted so far (each once), on the run that opened the link."""
    for note in dict.fromkeys(url.notes) if getattr(url, "opened", True) else ():
        st.caption(f":material/link_off: {md_text(note)}")
    url.notes.clear()
