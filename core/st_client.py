"""A Streamlit session without a browser: the websocket protocol a browser tab speaks to the server.

A browser tab holds one websocket (`/_stcore/stream`) and sends `BackMsg`s: a `rerun_script` with its
URL's query string, the page it is on and its widgets' values, on load and on every interaction; and,
for each `st.fragment(run_every=...)` the server announced (`ForwardMsg.auto_rerun`), a fragment
rerun on a timer. The server answers with `ForwardMsg`s: `new_session` (the page it runs), deltas (the
elements), `page_info_changed` (the script set `st.query_params`) and `script_finished`.

`StreamlitSession` does the same, so a load test can put 20 sessions on one server without 20
renderers (which on a 2-core box measure Chromium, not the server). It does not draw, run the page's
JavaScript or keep the element tree: each answer is the flat list of elements the run sent, which is
enough to find a widget by its key or a button by its label. It reports no cached messages, so every
answer comes whole (no `ref_hash` to an earlier one). Cookies are sent on the handshake, as a
browser that has been here before sends its own (the app's cookie-writing script is not run).

It never imports streamlit (core stays UI-free: tests/test_architecture.py): the message classes are
built from the schema streamlit ships, read as data (`_protos`).
"""
from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

TIMEOUT_S = 120.0  # one answer on a loaded 2-core box, with runs training beside it


class SessionError(RuntimeError):
    """The server did not answer as a browser would expect (closed, timed out, an exception shown)."""


@dataclass(frozen=True)
class Element:
    """One element of an answer: its kind (`button`, `selectbox`, `markdown`, `progress`, ...), widget id,
    label (a widget's label, a markdown's text, a progress bar's text, an exception's type and message)."""

    kind: str
    id: str
    label: str
    proto: object = field(repr=False, compare=False)

    @property
    def key(self) -> str | None:
        """The user key a widget was given (Streamlit ends a keyed widget's id with `-<key>`)."""
        # "$$ID-<hash>-<key>": the prefix and the hash hold no "-", the rest is the key ("None": no key given)
        parts = self.id.split("-", 2)
        return parts[2] if len(parts) == 3 and parts[2] != "None" else None


@dataclass
class Answer:
    """What one rerun sent back: its elements, the texts of any exceptions shown, and how long it took."""

    elements: list[Element]
    exceptions: list[str]
    seconds: float
    status: str

    def find(self, *, key: str | None = None, label: str | None = None, kind: str | None = None) -> Element | None:
        for el in self.elements:
            if ((key is None or el.key == key) and (label is None or el.label == label)
                    and (kind is None or el.kind == kind)):
                return el
        return None

    def labels(self, kind: str) -> list[str]:
        return [el.label for el in self.elements if el.kind == kind]


@functools.cache
def _protos():
    """(BackMsg, ForwardMsg, WidgetState) built from Streamlit's own schema, read as data.

    Each `streamlit/proto/*_pb2.py` holds its FileDescriptorProto as one bytes literal; they are read with
    `ast` (never executed, never imported: importing them would load the whole streamlit package into
    the library) and added, dependencies first, to a private descriptor pool."""
    import ast
    import importlib
    import importlib.util

    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    spec = importlib.util.find_spec("streamlit")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SessionError("streamlit is not installed: its protocol schema is needed")
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for path in (Path(spec.submodule_search_locations[0]) / "proto").glob("*_pb2.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                proto = descriptor_pb2.FileDescriptorProto.FromString(node.args[0].value)
                files[proto.name] = proto
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        added.add(name)
        if name not in files:  # protobuf's own (google/protobuf/timestamp.proto, ...): from its default pool
            importlib.import_module(name.removesuffix(".proto").replace("/", ".") + "_pb2")
            files[name] = descriptor_pb2.FileDescriptorProto()
            descriptor_pool.Default().FindFileByName(name).CopyToProto(files[name])
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])

    for name in sorted(files):
        add(name)

    def message(full_name: str):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))

    return message("BackMsg"), message("ForwardMsg"), message("WidgetState")


def _element(proto) -> Element | None:
    kind = proto.WhichOneof("type")
    if kind is None:
        return None
    body = getattr(proto, kind)
    widget_id = getattr(body, "id", "") if hasattr(body, "id") else ""
    # a widget's label; a markdown's body; a progress bar's text
    label = next((getattr(body, f) for f in ("label", "body", "text") if f in body.DESCRIPTOR.fields_by_name), "")
    if kind == "exception":
        label = f"{body.type}: {body.message}"
    return Element(kind, widget_id, label, body)


class StreamlitSession:
    """One browser tab's conversation with a Streamlit server.

        async with StreamlitSession("http://127.0.0.1:8501/", query="runs=abc") as tab:
            page = await tab.load()                 # the first run, as a page load
            await tab.set("steps", 20)              # a widget changed: the rerun it causes
            await tab.click("start")                # a button press
            await tab.poll()                        # the page's fragment timers, once each

    Widget values are kept and sent with every later rerun, as the browser does. One request is in
    flight at a time: each method returns when the server has finished that run.
    """

    def __init__(self, url: str, *, query: str = "", cookies: dict[str, str] | None = None,
                 timeout_s: float = TIMEOUT_S):
        parts = urlsplit(url)
        self.http_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"
        self.ws_url = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}{parts.path.rstrip('/')}/_stcore/stream"
        self.query_string = query
        self.cookies = dict(cookies or {})
        self.timeout_s = timeout_s
        self.page_script_hash = ""
        self.fragments: dict[str, float] = {}  # fragment id -> its run_every interval (s)
        self._states: dict[str, object] = {}  # widget id -> WidgetState, sent with every rerun
        self._seen: dict[str, Element] = {}  # widget key -> the element last sent for it
        self._ws = None

    async def __aenter__(self) -> StreamlitSession:
        from websockets.asyncio.client import connect

        headers = {"Origin": self.http_url.rstrip("/")}
        if self.cookies:
            # as the browser holds them: a value is sent as it was stored (the app URI-encodes its own)
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            self._ws = await asyncio.wait_for(
                connect(self.ws_url, subprotocols=["streamlit"], additional_headers=headers, max_size=None,
                        open_timeout=self.timeout_s, ping_interval=None), self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - refused, timed out, or a handshake the server rejected
            raise SessionError(f"could not connect to {self.ws_url}: {exc}") from exc
        return self

    async def __aexit__(self, *exc) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    # ------------------------------------------------------------------------------ what a tab does
    async def load(self, query: str | None = None) -> Answer:
        """A page load (or a reload): the whole script, with the URL's query string."""
        if query is not None:
            self.query_string = query
        return await self._rerun()

    async def set(self, key: str, value) -> Answer:
        """Give the widget with `key` a value (seen in an earlier answer) and rerun, as a change does."""
        _, _, WidgetState = _protos()
        el = self._widget(key)
        state = WidgetState(id=el.id)
        if isinstance(value, bool):
            state.bool_value = value
        elif isinstance(value, (int, float)):
            state.double_value = float(value)
        elif isinstance(value, str):
            state.string_value = value
        elif isinstance(value, (list, tuple)):
            state.string_array_value.data.extend(str(v) for v in value)
        else:
            raise TypeError(f"no widget value of type {type(value).__name__}")
        self._states[el.id] = state
        return await self._rerun()

    async def click(self, key: str) -> Answer:
        """Press the button with `key`: its trigger is true for this one rerun."""
        _, _, WidgetState = _protos()
        el = self._widget(key)
        if getattr(el.proto, "disabled", False):
            raise SessionError(f"the button {key!r} ({el.label}) is disabled")
        return await self._rerun(extra=[WidgetState(id=el.id, trigger_value=True)])

    async def poll(self) -> list[Answer]:
        """One tick of every fragment timer the server announced (what the page's setInterval sends)."""
        return [await self._rerun(fragment_id=f, auto=True) for f in list(self.fragments)]

    # ---------------------------------------------------------------------------------- the protocol
    def _widget(self, key: str) -> Element:
        el = self._seen.get(key)
        if el is None:
            raise SessionError(f"no widget with key {key!r} on the page")
        return el

    def _request(self, extra: list, fragment_id: str, auto: bool) -> bytes:
        """The BackMsg a browser sends for a rerun: URL, page, every widget value it holds, `extra` on top."""
        BackMsg, _, _ = _protos()
        msg = BackMsg()
        rerun = msg.rerun_script
        rerun.query_string = self.query_string
        rerun.page_script_hash = self.page_script_hash
        rerun.fragment_id = fragment_id
        rerun.is_auto_rerun = auto
        rerun.context_info.url = self.http_url + (f"?{self.query_string}" if self.query_string else "")
        overridden = {s.id for s in extra}
        rerun.widget_states.widgets.extend([s for i, s in self._states.items() if i not in overridden] + extra)
        return msg.SerializeToString()

    def _fold(self, fwd, answer: Answer, full_run: bool) -> None:
        """Take one ForwardMsg into the session (page, URL, fragment timers, widgets) and the answer."""
        kind = fwd.WhichOneof("type")
        if kind == "new_session":
            self.page_script_hash = fwd.new_session.page_script_hash
            if full_run:
                self.fragments.clear()  # a full run announces its fragments again
                answer.elements.clear()  # after an st.rerun(): only the last run's elements are the page
                answer.exceptions.clear()
        elif kind == "page_info_changed":
            self.query_string = fwd.page_info_changed.query_string
        elif kind == "auto_rerun":
            self.fragments[fwd.auto_rerun.fragment_id] = fwd.auto_rerun.interval
        elif kind == "stop_auto_rerun":
            for f in fwd.stop_auto_rerun.fragment_ids:
                self.fragments.pop(f, None)
        elif kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
            el = _element(fwd.delta.new_element)
            if el is None:
                return
            answer.elements.append(el)
            if el.kind == "exception":
                answer.exceptions.append(el.label)
            elif el.key:
                self._seen[el.key] = el

    async def _rerun(self, *, extra: list | None = None, fragment_id: str = "", auto: bool = False) -> Answer:
        """Send one rerun and read until the server has finished it (a run it cut short for a newer one,
        an st.rerun(), is not the end)."""
        if self._ws is None:
            raise SessionError("not connected")
        _, ForwardMsg, _ = _protos()
        answer = Answer([], [], 0.0, "")
        t0 = time.perf_counter()
        try:
            await self._ws.send(self._request(extra or [], fragment_id, auto))
        except Exception as exc:  # noqa: BLE001 - websockets' ConnectionClosed
            raise SessionError(f"the server closed the session: {exc}") from exc
        while True:
            try:
                raw = await asyncio.wait_for(self._ws.recv(), max(0.001, t0 + self.timeout_s - time.perf_counter()))
            except asyncio.TimeoutError as exc:
                raise SessionError(f"no answer in {self.timeout_s:.0f} s") from exc
            except Exception as exc:  # noqa: BLE001 - websockets' ConnectionClosed and friends
                raise SessionError(f"the server closed the session: {exc}") from exc
            fwd = ForwardMsg()
            fwd.ParseFromString(raw)
            if fwd.WhichOneof("type") != "script_finished":
                self._fold(fwd, answer, full_run=not fragment_id)
                continue
            status = ForwardMsg.ScriptFinishedStatus.Name(fwd.script_finished)
            if status != "FINISHED_EARLY_FOR_RERUN":
                answer.seconds, answer.status = time.perf_counter() - t0, status
                return answer
