"""Browser test: hostile class names and query parameters run nothing, on any page or in the scatter component.

A zip whose class folders are named like HTML, an iframe with a script, a Markdown link and Markdown
emphasis is imported through the real upload widget; two tiny runs (test_vit, 3 steps) are trained on it;
then Train (with the dataset picked), Explore (hovering points of every class in the scatter component),
Compare, Runs, Learn and Explore with a hostile `?run=` are visited. Nothing may execute: `__pwned` stays
unset in the app page and in every frame, no dialog opens, no live javascript: or foreign link appears,
and the hostile names are shown as literal text.
"""
import sys
import urllib.parse
from pathlib import Path

import pytest

from e2e_server import ARTIFACTS, serve_app
from test_explore import _point_xy, _scatter_frame

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.view_state import shown  # noqa: E402
from hostile_names import HOSTILE_CLASSES  # noqa: E402
from reliability.kit import make_zip, png  # noqa: E402

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 120_000
HOSTILE_RUN = "x` [click](javascript:window.__pwned=1) `y <img src=x onerror=window.top.__pwned=1> https://evil.example/"


@pytest.fixture(scope="module")
def hostile_app(tmp_path_factory):
    """The app on an empty EMBEDLAB_HOME: (url, home)."""
    home = tmp_path_factory.mktemp("hostile-e2e-home")
    with serve_app(home, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url.rstrip("/"), home


@pytest.fixture
def watched(browser, request):
    """A page that records dialogs and console messages; screenshots when the test fails."""
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.dialogs, pg.console_lines = [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("console", lambda m: pg.console_lines.append(m.text))
    yield pg
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()


def _assert_nothing_ran(pg, where: str) -> None:
    for frame in pg.frames:
        try:
            flag = frame.evaluate("() => [window.__pwned, window.top.__pwned]")
        except Exception:  # noqa: BLE001 - a frame navigated away meanwhile
            continue
        assert flag == [None, None], f"{where}: script ran in frame {frame.url!r}: {flag}"
    assert pg.dialogs == [], f"{where}: a dialog opened: {pg.dialogs}"
    links = pg.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
                        ".filter(h => /^\\s*javascript:|evil\\.example/i.test(h))")
    assert links == [], f"{where}: live links from user strings: {links}"


def _hover_every_class(pg, frame) -> list[str]:
    """Hover the first point of every class trace in the first pane; return the tooltip texts."""
    iframe = pg.locator("iframe[src*='embedlab_scatter']")
    iframe.scroll_into_view_if_needed()
    pg.wait_for_timeout(500)
    traces = frame.evaluate("() => document.getElementById('plot').data.map((t, i) => [i, t.xaxis, (t.x || []).length])"
                            ".filter(([i, ax, n]) => ax === 'x' && n > 0).map(([i]) => i)")
    texts = []
    for trace in traces:
        box = iframe.bounding_box()
        x, y = _point_xy(frame, trace, 0)
        pg.mouse.move(box["x"] + x - 3, box["y"] + y - 3)
        pg.mouse.move(box["x"] + x, box["y"] + y, steps=3)
        tip = frame.locator("#tip")
        tip.wait_for(state="visible", timeout=10_000)
        texts.append(tip.inner_text())
        pg.mouse.move(box["x"] + 2, box["y"] + 2)  # away: the next hover is a new one
        pg.wait_for_timeout(200)
    return texts


def test_hostile_names_run_nothing_on_any_page(watched, hostile_app, tmp_path):
    from core.store import RunStore
    from core.train import TrainConfig, train

    url, home = hostile_app
    pg = watched
    archive = make_zip(tmp_path / "hostile.zip", {f"{c}/{i}.png": png(seed=k * 100 + i, size=(24, 24))
                                                  for k, c in enumerate(HOSTILE_CLASSES) for i in range(8)})

    # IMPORT through the upload widget; the new dataset is picked and previewed on Train
    pg.goto(url)
    pg.get_by_role("button", name="Start 3 runs").wait_for(timeout=TIMEOUT_MS)
    pg.get_by_text("Import your own images").click()
    chooser = pg.locator(".st-key-upload_zip input[type=file]")
    chooser.wait_for(state="attached", timeout=15_000)
    chooser.set_input_files(archive)
    pg.locator(".st-key-upload_zip").get_by_text("hostile.zip").first.wait_for(timeout=30_000)
    pg.get_by_role("button", name="Import").click()
    pg.get_by_text("imported 32 images in 4 classes as 'hostile'", exact=False).wait_for(timeout=60_000)
    pg.get_by_text("32 images · 4 classes", exact=False).wait_for(timeout=60_000)
    pg.wait_for_timeout(1500)  # time for anything injected to run
    _assert_nothing_ran(pg, "Train preview")
    for name in HOSTILE_CLASSES:  # each class name, shown as itself
        pg.locator("[data-testid=stCaptionContainer]").get_by_text(name, exact=True).wait_for(timeout=30_000)
    pg.screenshot(path=str(ARTIFACTS / "hostile-train.png"), full_page=True)

    # TRAIN two tiny runs on it (in this process, on the server's home: the pages read the same store)
    store = RunStore(home)
    run_ids = []
    for objective in ("ce", "lacvit"):
        result = train(TrainConfig(objective=objective, backbone="test_vit", dataset="hostile", steps=3, n_per_class=4,
                                   eval_per_class=2, batch_size=4, trainable="all"), store=store, root=home)
        assert result["status"] == "finished", result
        run_ids.append(result["run_id"])

    # EXPLORE: hover a point of every class; the tooltip shows the raw name as text
    pg.goto(f"{url}/explore?run={run_ids[0]}")
    frame = _scatter_frame(pg)
    texts = _hover_every_class(pg, frame)
    pg.wait_for_timeout(1000)
    _assert_nothing_ran(pg, "Explore hover")
    assert len(texts) == len(HOSTILE_CLASSES)
    for name in HOSTILE_CLASSES:
        assert any(f"label {name}" in t for t in texts), (name, texts)
    legend = frame.evaluate("() => [...document.querySelectorAll('.legendtext')].map(e => e.textContent)")
    assert sorted(legend) == sorted(HOSTILE_CLASSES), legend  # Plotly draws the escaped names as text
    # the second wall: had markup got into the frame, its Content-Security-Policy runs no inline handler
    probe = frame.evaluate("""() => new Promise((ok) => {
        document.body.insertAdjacentHTML('beforeend', '<img src="x" onerror="window.__csp_probe = 1">');
        setTimeout(() => ok(window.__csp_probe === undefined ? 'blocked' : 'ran'), 800); })""")
    assert probe == "blocked"
    pg.screenshot(path=str(ARTIFACTS / "hostile-explore.png"), full_page=True)

    # COMPARE, RUNS, LEARN
    pg.goto(f"{url}/compare")
    frame = _scatter_frame(pg)
    _hover_every_class(pg, frame)
    pg.get_by_text("Metrics").first.wait_for(timeout=TIMEOUT_MS)
    pg.wait_for_timeout(1000)
    _assert_nothing_ran(pg, "Compare")
    pg.goto(f"{url}/runs")
    pg.get_by_text("2 of 2 runs").wait_for(timeout=TIMEOUT_MS)
    _assert_nothing_ran(pg, "Runs")
    pg.goto(f"{url}/learn")
    pg.get_by_text("Anchor loss").wait_for(timeout=TIMEOUT_MS)
    _assert_nothing_ran(pg, "Learn")

    # EXPLORE with a hostile ?run=: the caption names it literally, and links nowhere
    pg.goto(f"{url}/explore?run={urllib.parse.quote(HOSTILE_RUN)}")
    note = pg.get_by_text("is not available here", exact=False).first  # core/view_state.py's note on the link
    note.wait_for(timeout=TIMEOUT_MS)
    assert shown(HOSTILE_RUN) in note.inner_text()  # the value as typed (one line, capped), as plain text
    _scatter_frame(pg)
    pg.wait_for_timeout(1000)
    _assert_nothing_ran(pg, "Explore ?run=")
    blocked = [line for line in pg.console_lines if "Content Security Policy" in line]
    print(f"CSP reports in the browser console: {len(blocked)}", *blocked[:5], sep="\n")
