"""core/st_client.py against a real Streamlit server running a small page (tests/st_client_page.py):
widget values round-trip and persist across reruns as a browser's do, a button triggers once, the
URL's query string goes both ways, cookies reach `st.context.cookies`, the fragment timer is announced
and its polls rerun only the fragment, and an exception on the page is reported."""
import re
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # a real server (a small page): the half of make test that waits on servers

from core.st_client import SessionError, StreamlitSession
from core.viewer_bench import run_async, serve

PAGE = Path(__file__).with_name("st_client_page.py")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    home = tmp_path_factory.mktemp("st-client")
    with serve(home, home / "server.log", script=PAGE) as server:
        yield server.url


def _texts(answer, kind="markdown"):
    return [el.label for el in answer.elements if el.kind == kind]


def _run(coro):
    return run_async(coro)  # asyncio.run, in a thread of its own when the browser tests' loop is running


def test_widgets_keep_their_values_and_a_button_triggers_once(url):
    async def go():
        async with StreamlitSession(url) as tab:
            page = await tab.load()
            assert page.status == "FINISHED_SUCCESSFULLY" and page.exceptions == []
            assert {"n", "pick", "many", "go", "never", "fail"} <= {el.key for el in page.elements if el.key}
            assert "values n=1 pick=a many=x" in _texts(page)
            keyless = page.find(label="Keyless", kind="button")
            assert keyless is not None and keyless.key is None  # found by its label; no key of "None"
            await tab.set("n", 5)
            await tab.set("pick", "b")
            after = await tab.set("many", ["y", "z"])
            assert "values n=5 pick=b many=y,z" in _texts(after)  # n and pick were sent again with many
            clicked = await tab.click("go")
            assert "clicks=1" in _texts(clicked)
            assert re.search(r"(^|&)clicked=5($|&)", tab.query_string)  # st.query_params came back
            again = await tab.set("n", 6)
            assert "clicks=1" in _texts(again)  # a trigger is true for one rerun only
            assert "values n=6 pick=b many=y,z" in _texts(again)
            with pytest.raises(SessionError, match="disabled"):
                await tab.click("never")
            with pytest.raises(SessionError, match="no widget with key 'nope'"):
                await tab.set("nope", 1)
    _run(go())


def test_cookies_query_and_the_fragment_timer(url):
    async def go():
        async with StreamlitSession(url, query="q=hello", cookies={"who": "Ada%20Lovelace"}) as tab:
            page = await tab.load()
            assert "cookie who=Ada%20Lovelace" in _texts(page)
            assert "query q=hello" in _texts(page)
            assert list(tab.fragments.values()) == [0.5]  # run_every announced by the server
            ticks = []
            for _ in range(3):
                (poll,) = await tab.poll()
                assert poll.status == "FINISHED_FRAGMENT_RUN_SUCCESSFULLY"
                assert _texts(poll) == []  # only the fragment ran: no markdown from the page body
                ticks += [int(t.split("=")[1]) for t in _texts(poll, "progress")]
            assert ticks == sorted(ticks) and len(set(ticks)) == 3
    _run(go())


def test_an_exception_on_the_page_is_reported(url):
    async def go():
        async with StreamlitSession(url) as tab:
            await tab.load()
            failed = await tab.set("fail", True)
            assert any("failed on purpose" in e for e in failed.exceptions), failed.exceptions
    _run(go())


def test_no_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed

    async def go():
        async with StreamlitSession(f"http://127.0.0.1:{port}/", timeout_s=5):
            pass
    with pytest.raises(SessionError, match="could not connect"):
        _run(go())


def test_the_messages_come_from_the_schema_without_importing_streamlit():
    """core stays UI-free: the client's message classes are built from streamlit's schema read as data."""
    import subprocess
    import sys

    code = ("import sys; from core.st_client import _protos; B, F, W = _protos(); "
            "assert F.ScriptFinishedStatus.Name(3) == 'FINISHED_FRAGMENT_RUN_SUCCESSFULLY'; "
            "assert 'rerun_script' in B.DESCRIPTOR.fields_by_name and 'trigger_value' in W.DESCRIPTOR.fields_by_name; "
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
