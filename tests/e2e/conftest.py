"""Browser tests: a real `streamlit run app.py` on a free port, driven by Playwright in headless Chromium.

The server gets its own EMBEDLAB_HOME and is offline (EMBEDLAB_OFFLINE=1); screenshots land in
test-artifacts/ (gitignored). Tests skip with a reason when Playwright or Chromium is missing.
"""
import shutil
import sys
from pathlib import Path

import pytest
from e2e_server import ARTIFACTS, CHROMIUM_ARGS, serve_app


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """The app on an empty EMBEDLAB_HOME, once per session."""
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_app(tmp_path_factory.mktemp("e2e-home"), ARTIFACTS / "streamlit-server.log") as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium, or `make system-deps` as root)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1440, "height": 1800})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:  # what the browser showed when it failed
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
        # and its messages, straight to the terminal: a CI log has no screenshots
        alerts = pg.locator("[data-testid=stAlert], [data-testid=stCaptionContainer]").all_inner_texts()
        print(f"\n{request.node.name} failed; the page's messages:", *alerts[:40], sep="\n  ", file=sys.__stdout__, flush=True)
    context.close()


@pytest.fixture
def shot(page):
    """shot("name") saves test-artifacts/<name>.png."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    return take
