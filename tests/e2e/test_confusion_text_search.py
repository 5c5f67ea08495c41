"""Browser test: in real Chromium, a click on a Compare confusion-matrix cell opens that cell's images, and
Explore's text search draws the phrase as a black star in the scatter. Screenshots: test-artifacts/."""
import sys
import time
from pathlib import Path

import pytest

from e2e_server import ARTIFACTS, serve_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from explore_runs import tiny_runs  # noqa: E402

from core import confusion, report  # noqa: E402
from core.store import RunStore  # noqa: E402

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 120_000
CELL_XY = """([t, p]) => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')]
        .find(g => ((g.layout || {}).title || {}).text && g.layout.title.text.includes('Confusion'));
    if (!gd || !gd._fullLayout) return null;
    const tr = gd.data.find(d => d.type === 'scatter' && d.xaxis !== 'x2' && d.customdata);
    if (!tr) return null;
    const i = tr.customdata.findIndex(c => c[1] === t && c[2] === p);
    gd.scrollIntoView({block: 'center'});  // the cell's page position, in the viewport
    const L = gd._fullLayout, xa = L.xaxis, ya = L.yaxis, box = gd.getBoundingClientRect();
    return [box.left + xa._offset + xa.d2p(tr.x[i]), box.top + ya._offset + ya.d2p(tr.y[i])];
}"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    home, ids = tiny_runs(tmp_path_factory.getbasetemp(), ("ce", "flyp"))
    with serve_app(home, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url.rstrip("/"), ids, home


@pytest.fixture
def big_page(browser):
    pg = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
    yield pg
    pg.context.close()


def test_a_click_on_a_confusion_cell_opens_its_images(big_page, app):
    url, ids, home = app
    pg = big_page
    view = report.load_run_view(RunStore(home), ids["ce"], "val")  # series 0 of the figure: the first run chosen
    t, p, n = confusion.worst_cells(view.after.labels, view.after.preds, len(view.after.classes))[0]
    pg.goto(url)
    pg.locator("[data-testid='stSidebarNav']").first.wait_for(timeout=TIMEOUT_MS)
    pg.goto(f"{url}/compare?run={ids['ce']}&run={ids['flyp']}")
    pg.get_by_text("Metrics").first.wait_for(timeout=TIMEOUT_MS)
    deadline, xy = time.time() + TIMEOUT_MS / 1000, None
    while time.time() < deadline and xy is None:
        try:  # charts below the fold draw once scrolled to; a chart redrawn meanwhile is simply tried again
            pg.locator("[data-testid='stPlotlyChart']").last.scroll_into_view_if_needed(timeout=5_000)
        except Exception:
            pass
        pg.wait_for_timeout(500)
        xy = pg.evaluate(CELL_XY, [t, p])
    assert xy is not None, "the confusion figure was never drawn"
    pg.wait_for_timeout(500)
    xy = pg.evaluate(CELL_XY, [t, p])  # after the scroll settled
    pg.mouse.move(xy[0] - 3, xy[1] - 3)
    pg.mouse.move(xy[0], xy[1], steps=3)
    pg.wait_for_timeout(300)
    pg.mouse.click(xy[0], xy[1])
    heading = pg.get_by_text("(misclassified) · images", exact=False).first
    heading.wait_for(timeout=TIMEOUT_MS)
    assert f"images 1–{min(n, confusion.PER_PAGE)} of {n}" in heading.inner_text()
    pg.wait_for_timeout(1000)
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "compare-confusion-cell.png"), full_page=True)


def test_text_search_draws_the_phrase_as_a_star(big_page, app):
    url, ids, home = app
    pg = big_page
    pg.goto(url)
    pg.locator("[data-testid='stSidebarNav']").first.wait_for(timeout=TIMEOUT_MS)
    pg.goto(f"{url}/explore?run={ids['flyp']}")
    pg.get_by_text("Search by text").first.click()
    box = pg.locator("input[aria-label='Phrase']")
    box.fill("handwritten digit seven")
    box.press("Enter")
    pg.get_by_text("Black star in the plot", exact=False).first.wait_for(timeout=TIMEOUT_MS)
    deadline, star = time.time() + TIMEOUT_MS / 1000, None
    while time.time() < deadline and not star:
        for frame in pg.frames:
            if "embedlab_scatter" in frame.url:
                try:
                    star = frame.evaluate("""() => (document.getElementById('plot').data || [])
                        .filter(t => (t.text || []).some(s => String(s).includes('handwritten digit seven')))
                        .map(t => t.marker.color[t.text.findIndex(s => String(s).includes('handwritten digit seven'))])""")
                except Exception:
                    star = None
        pg.wait_for_timeout(300)
    assert star and all(c == "#111111" for c in star), star  # in each pane, drawn black
    pg.screenshot(path=str(ARTIFACTS / "explore-text-search.png"), full_page=True)
