"""Who is at this browser, in workshop mode: a name given once, kept in cookies, never in the URL.

    identity()          # core.workshop.Identity of this session (LOCAL outside workshop mode)
    ask_name()          # app.py: the one-time name prompt (stops the page until a name is given)
    sidebar_panel()     # app.py: "You are NAME", change the name, the instructor's passcode

The browser keeps three cookies: `embedlab_owner` (a random token: whose runs are whose),
`embedlab_name` (the display name) and `embedlab_instructor` (an HMAC of the passcode, so the
passcode itself never sits in the browser). Streamlit reads cookies only when the page connects
(`st.context.cookies`), so a session keeps its identity in `st.session_state` and a reload reads the
cookies again. They are set by a tiny script (`st.html(..., unsafe_allow_javascript=True)` renders
in the page itself, not an iframe), whose only inputs are a hex token and a JSON-escaped name. A
link pasted in the room's chat carries none of this: the reader stays who they are.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from urllib.parse import unquote

import streamlit as st

from core.safe_text import md_text
from core.errors import EmbedLabError
from core.workshop import (LOCAL, NAME_MAX, Identity, check_passcode, instructor_passcode, new_owner_id, normalise_name,
                           valid_owner_id, workshop_enabled)

OWNER_COOKIE = "embedlab_owner"  # a uuid4 hex: the run owner id
NAME_COOKIE = "embedlab_name"  # the name the person typed (URI-encoded)
INSTRUCTOR_COOKIE = "embedlab_instructor"  # HMAC(passcode): valid until the passcode changes
COOKIE_DAYS = 30  # a workshop lasts days, not months
MAX_NAME = NAME_MAX  # characters of a display name
_KEY = "identity"  # session_state: this session's Identity
_PENDING = "identity_cookies"  # session_state: cookies this session still has to write into the browser


def instructor_token(code: str) -> str:
    """What the instructor's browser keeps instead of the passcode (useless without the passcode)."""
    return hmac.new(code.encode(), b"embedlab-instructor", hashlib.sha256).hexdigest()


def _from_cookies() -> Identity | None:
    try:
        cookies = dict(st.context.cookies)
    except Exception:  # noqa: BLE001 - no browser connection (AppTest, bare script run)
        cookies = {}
    owner = cookies.get(OWNER_COOKIE, "")
    name = clean_name(unquote(cookies.get(NAME_COOKIE, "")))
    if not valid_owner_id(owner) or name is None:
        return None
    token = cookies.get(INSTRUCTOR_COOKIE, "")
    instructor = bool(token) and hmac.compare_digest(token, instructor_token(instructor_passcode()))
    return Identity(owner, name, instructor=instructor)


def clean_name(text: str) -> str | None:
    """The name as stored (core.workshop.normalise_name), or None if it is refused."""
    try:
        return normalise_name(text)
    except EmbedLabError:
        return None


def identity() -> Identity | None:
    """This session's identity: LOCAL outside workshop mode; None in workshop mode until a name is given."""
    if not workshop_enabled():
        return LOCAL
    if _KEY not in st.session_state:
        found = _from_cookies()
        if found is None:
            return None
        st.session_state[_KEY] = found
    return st.session_state[_KEY]


def current() -> Identity:
    """The identity pages act with (app.py has asked for a name before any page runs)."""
    return identity() or LOCAL


def _set(ident: Identity, instructor_cookie: str | None = None) -> None:
    st.session_state[_KEY] = ident
    cookies = dict(st.session_state.get(_PENDING) or {})
    cookies.update({OWNER_COOKIE: ident.owner_id, NAME_COOKIE: ident.name})
    if instructor_cookie is not None:
        cookies[INSTRUCTOR_COOKIE] = instructor_cookie
    st.session_state[_PENDING] = cookies


def write_cookies() -> None:
    """Render the script that stores this session's cookies (every full run until the session ends:
    cheap, idempotent, and safe from a rerun that replaces the element before the browser saw it)."""
    cookies = st.session_state.get(_PENDING)
    if not cookies:
        return
    lines = []
    for name, value in cookies.items():
        age = COOKIE_DAYS * 86400 if value else 0  # "" clears the cookie
        # json.dumps makes the value a JS string literal; "</" is escaped so it cannot close the script tag
        literal = json.dumps(value).replace("</", "<\\/")
        lines.append(f"document.cookie = {json.dumps(name)} + '=' + encodeURIComponent({literal}) + "
                     f"'; path=/; max-age={age}; SameSite=Strict';")
    st.html("<script>" + "\n".join(lines) + "</script>", unsafe_allow_javascript=True)


def _join(key: str = "identity_name") -> None:
    try:
        name = normalise_name(st.session_state.get(key) or "")
    except EmbedLabError as exc:
        st.session_state["identity_problem"] = f"Your name: {md_text(exc)}."
        return
    st.session_state.pop("identity_problem", None)
    old = identity()
    owner = old.owner_id if old is not None else new_owner_id()
    _set(Identity(owner, name, instructor=bool(old and old.instructor)))
    st.session_state["identity_renaming"] = False


def ask_name() -> None:
    """Workshop mode with no name yet: a one-time prompt in place of the page."""
    st.title("Welcome to the workshop", anchor=False)
    st.caption("Give a name once: your runs are labelled with it, and this browser remembers you "
               "(a cookie, never the link). Only you and the instructor can cancel, delete or resume your runs.")
    with st.form("identity_form", border=True):
        st.text_input("Your name", key="identity_name", max_chars=MAX_NAME, placeholder="e.g. Ada")
        st.form_submit_button("Join", type="primary", icon=":material/login:", on_click=_join)
    if st.session_state.get("identity_problem"):
        st.error(st.session_state["identity_problem"], icon=":material/error:")


def _unlock() -> None:
    code = st.session_state.get("instructor_code") or ""
    st.session_state["instructor_code"] = ""  # never kept in the session either
    if not check_passcode(code):
        st.session_state["instructor_problem"] = "Instructor passcode: that is not this server's passcode."
        return
    st.session_state.pop("instructor_problem", None)
    _set(dataclasses.replace(current(), instructor=True), instructor_token(instructor_passcode()))


def _leave_instructor() -> None:
    _set(dataclasses.replace(current(), instructor=False), "")


def sidebar_panel() -> None:
    """Workshop mode: who you are, a way to change the name, and the instructor's passcode."""
    ident = identity()
    if ident is None:
        return
    role = " · :violet-badge[instructor]" if ident.instructor else ""
    st.markdown(f":material/person: **{md_text(ident.name)}**{role}")
    if st.session_state.get("identity_renaming"):
        with st.form("rename_form", border=False):
            st.text_input("Your name", key="identity_new_name", value=ident.name, max_chars=MAX_NAME)
            st.form_submit_button("Save name", on_click=_join, args=("identity_new_name",))
        if st.session_state.get("identity_problem"):
            st.error(st.session_state["identity_problem"])
    else:
        st.button("Change name", key="identity_rename", type="tertiary", icon=":material/edit:",
                  on_click=lambda: st.session_state.update(identity_renaming=True))
    if ident.instructor:
        st.button("Leave instructor mode", key="instructor_leave", type="tertiary", on_click=_leave_instructor)
    else:
        with st.expander("Instructor", icon=":material/key:"):
            st.text_input("Instructor passcode", key="instructor_code", type="password",
                          help="Printed in the terminal by `make run WORKSHOP=1`.")
            st.button("Unlock", key="instructor_unlock", on_click=_unlock)
            if st.session_state.get("instructor_problem"):
                st.error(st.session_state["instructor_problem"])
    write_cookies()


# ------------------------------------------------------------------------------ the room's pinned run
def _pin_api(name: str):
    """SPEC names `pin_run(run_id, by)` / `pinned_run()`: on the JobManager where it has them, else core.workshop."""
    from core import workshop
    from pages._ui import get_manager

    return getattr(get_manager(), name, None) or getattr(workshop, name)


def pinned_run_id() -> str | None:
    return _pin_api("pinned_run")()


def pin(run_id: str | None) -> None:
    """Pin `run_id` for the room (None: unpin); core refuses anyone but the instructor."""
    _pin_api("pin_run")(run_id, current())
