"""Browser test: the real app in headless Chromium; hover shows the thumbnail, a lasso selection shows
the image grid, a click shows nearest neighbours. Screenshots go to test-artifacts/."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from e2e_server import ARTIFACTS, serve_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from explore_runs import tiny_runs  # noqa: E402

from core.embeddings import load_run_embeddings  # noqa: E402
from core.store import RunStore  # noqa: E402

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def explore_app(tmp_path_factory):
    """The app on an EMBEDLAB_HOME holding tiny finished CE / LaCViT / FLYP runs: (url, run ids, home)."""
    home, ids = tiny_runs(tmp_path_factory.getbasetemp())
    with serve_app(home, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url.rstrip("/"), ids, home


@pytest.fixture
def big_page(browser, request):
    pg = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
    yield pg
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:  # what the browser showed when it failed
        pg.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
    pg.context.close()


def _scatter_frame(pg):
    """The component's iframe, once its plot has traces."""
    deadline = time.time() + TIMEOUT_MS / 1000
    while time.time() < deadline:
        for frame in pg.frames:
            if "embedlab_scatter" in frame.url:
                try:
                    if frame.evaluate("() => (document.getElementById('plot').data || []).length > 0"):
                        return frame
                except Exception:  # the frame is still loading
                    pass
        pg.wait_for_timeout(300)
    raise AssertionError("the scatter component never drew")


def _point_xy(frame, trace: int, point: int):
    """Pixel position (inside the iframe) of one point of one trace."""
    return frame.evaluate("""([t, i]) => {
        const gd = document.getElementById('plot'), tr = gd.data[t], L = gd._fullLayout;
        const xa = L[tr.xaxis.replace('x', 'xaxis')], ya = L[tr.yaxis.replace('y', 'yaxis')];
        return [xa._offset + xa.l2p(tr.x[i]), ya._offset + ya.l2p(tr.y[i])]; }""", [trace, point])


def _open_explore(pg, url: str, run_id: str):
    """Explore on `run_id`; returns the scatter's frame once drawn. The entry point first: once app.py has
    run st.navigation, /explore is its page (a fresh server deep-linked first falls back to pages/)."""
    pg.goto(url)
    pg.locator("[data-testid='stSidebarNav']").first.wait_for(timeout=TIMEOUT_MS)
    pg.goto(f"{url}/explore?run={run_id}")
    return _scatter_frame(pg)


def test_hover_shows_thumbnail_then_box_select_and_click(big_page, explore_app):
    url, ids, home = explore_app
    pg = big_page
    frame = _open_explore(pg, url, ids["ce"])
    # the view is in the address bar (issue 16.4): the page wrote its space, projection and dims back
    pg.wait_for_function("() => ['space=encoder', 'proj=pca', 'dims=2'].every((s) => location.search.includes(s))",
                         timeout=TIMEOUT_MS)
    iframe = pg.locator("iframe[src*='embedlab_scatter']")
    iframe.scroll_into_view_if_needed()
    pg.wait_for_timeout(500)
    box = iframe.bounding_box()

    # HOVER: a floating thumbnail of that sample, its image fetched lazily from a sprite sheet
    x, y = _point_xy(frame, 0, 0)
    pg.mouse.move(box["x"] + x - 3, box["y"] + y - 3)
    pg.mouse.move(box["x"] + x, box["y"] + y, steps=3)
    tip = frame.locator("#tip")
    tip.wait_for(state="visible", timeout=10_000)
    sample_id = tip.get_attribute("data-sample-id")
    assert sample_id is not None and "label" in tip.inner_text()
    sheet = frame.evaluate("() => getComputedStyle(document.querySelector('#tip .img')).backgroundImage")
    assert "sheet-" in sheet
    size = frame.evaluate("""(src) => new Promise((ok) => { const im = new Image(); im.onload = () => ok(im.naturalWidth);
                                                          im.onerror = () => ok(0); im.src = src; })""",
                          sheet[sheet.index('"') + 1:sheet.rindex('"')])
    assert size > 0, "the thumbnail sheet did not load"
    pg.wait_for_timeout(300)
    pg.screenshot(path=str(ARTIFACTS / "explore-hover.png"), clip=box)

    # LASSO in the 'after' pane (a triangle over part of it): the page shows a grid of the selected images
    frame.locator(".modebar-btn[data-title='Lasso Select']").first.click()
    pg.get_by_text("silhouette").first.wait_for(timeout=TIMEOUT_MS)  # the metrics above the plot are in: no more shift
    box = iframe.bounding_box()
    area = frame.evaluate("""() => { const L = document.getElementById('plot')._fullLayout;
                                     return [L.xaxis2._offset, L.yaxis2._offset, L.xaxis2._length, L.yaxis2._length]; }""")
    left, top, width, height = box["x"] + area[0], box["y"] + area[1], area[2], area[3]
    corners = [(0.02, 0.02), (0.98, 0.02), (0.02, 0.98), (0.02, 0.03)]  # the upper-left half, closed
    pg.mouse.move(left + corners[0][0] * width, top + corners[0][1] * height)
    pg.mouse.down()
    for fx, fy in corners[1:]:
        pg.mouse.move(left + fx * width, top + fy * height, steps=15)
    pg.mouse.up()
    heading = pg.get_by_text("Selected ", exact=False).first
    heading.wait_for(timeout=TIMEOUT_MS)
    total = frame.evaluate("() => document.getElementById('plot').data.filter(t => t.xaxis === 'x2')"
                           ".reduce((n, t) => n + t.x.length, 0)")
    assert 0 < int(heading.inner_text().split()[1].replace(",", "")) < total  # a real, partial lasso
    pg.locator("[data-testid='stImage']").first.wait_for(timeout=TIMEOUT_MS)
    assert pg.locator("[data-testid='stImage']").count() > 0
    n_selected = int(heading.inner_text().split()[1].replace(",", ""))
    shown = f"all {n_selected} shown" if n_selected <= 48 else f"48 of {n_selected} (1–48) shown"
    pg.get_by_text(shown, exact=False).first.wait_for(timeout=TIMEOUT_MS)  # the grid says how many of how many
    # the selection is linked: the 'before' pane has the same samples selected
    linked = frame.evaluate("() => document.getElementById('plot').data.filter(t => t.xaxis === 'x' && t.selectedpoints)"
                            ".reduce((n, t) => n + t.selectedpoints.length, 0)")
    assert linked > 0
    pg.wait_for_timeout(1500)
    pg.screenshot(path=str(ARTIFACTS / "explore-selection.png"), full_page=True)

    # CLICK a point: its nearest neighbours before and after fine-tuning
    frame.locator(".modebar-btn[data-title='Pan']").first.click()
    box = iframe.bounding_box()
    x, y = _point_xy(frame, 0, 1)
    pg.mouse.move(box["x"] + x - 2, box["y"] + y - 2)
    pg.mouse.move(box["x"] + x, box["y"] + y, steps=3)
    frame.locator("#tip").wait_for(state="visible", timeout=10_000)  # plotly clicks what it hovers
    pg.mouse.click(box["x"] + x, box["y"] + y)
    pg.get_by_text("Nearest neighbours of #", exact=False).first.wait_for(timeout=TIMEOUT_MS)
    pg.get_by_text("before fine-tuning ·", exact=False).first.wait_for(timeout=TIMEOUT_MS)
    pg.wait_for_timeout(1500)
    pg.screenshot(path=str(ARTIFACTS / "explore-neighbours.png"), full_page=True)


def test_compare_page_draws_aligned_panes(big_page, explore_app):
    url, ids, home = explore_app
    page = big_page
    page.goto(f"{url}/compare")
    frame = _scatter_frame(page)
    assert frame.evaluate("() => document.getElementById('plot').layout.annotations.length") == 3  # CE, LaCViT, FLYP
    page.get_by_text("Metrics").first.wait_for(timeout=TIMEOUT_MS)

    # colour by agreement: the traces become right-in-every-run / some / none, and hovering a point in
    # the second pane shows that run's own prediction
    page.locator(".st-key-compare_color").get_by_role("radio", name="agreement").click()
    deadline = time.time() + TIMEOUT_MS / 1000
    names = set()
    while time.time() < deadline and not names & {"right in every run", "right in some", "wrong in every run"}:
        page.wait_for_timeout(300)
        frame = _scatter_frame(page)
        names = set(frame.evaluate("() => document.getElementById('plot').data.map(t => t.name)"))
    assert names & {"right in every run", "right in some", "wrong in every run"}, names
    trace = frame.evaluate("() => document.getElementById('plot').data.findIndex(t => t.xaxis === 'x2' && t.x.length)")
    iframe = page.locator("iframe[src*='embedlab_scatter']")
    read_tip = "() => { const t = document.getElementById('tip'); return t.style.display === 'block' ? " \
               "[t.dataset.pane, Number(t.dataset.sampleId), t.innerText] : null; }"
    shown = None
    for attempt in range(5):  # the page may still move after a recolour (the caption re-wraps): re-measure and retry
        page.wait_for_timeout(700)
        iframe.scroll_into_view_if_needed()
        box = iframe.bounding_box()
        x, y = _point_xy(frame, trace, attempt)
        page.mouse.move(box["x"] + x - 3, box["y"] + y - 3)
        page.mouse.move(box["x"] + x, box["y"] + y, steps=3)
        page.wait_for_timeout(500)
        first, shown = frame.evaluate(read_tip), frame.evaluate(read_tip)
        if shown and shown == first and shown[0] == "1":  # steady, and over the second pane (LaCViT)
            break
    assert shown and shown[0] == "1", shown
    lacvit = load_run_embeddings(RunStore(home).run_dir(ids["lacvit"]), "after", "val")
    row = int(np.flatnonzero(lacvit.ids == shown[1])[0])
    assert f"pred {lacvit.classes[int(lacvit.preds[row])]}" in shown[2], shown  # LaCViT's own prediction
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


def test_3d_panes_turn_together(big_page, explore_app):
    url, ids, _ = explore_app
    pg = big_page
    _open_explore(pg, url, ids["ce"])
    pg.locator(".st-key-explore_dims").get_by_role("radio", name="3-D").click()
    deadline, frame = time.time() + TIMEOUT_MS / 1000, None
    while time.time() < deadline:
        frame = _scatter_frame(pg)
        if frame.evaluate("() => !!(document.getElementById('plot')._fullLayout || {}).scene2"):
            break
        pg.wait_for_timeout(300)
    assert frame.evaluate("() => document.getElementById('plot').data.some(t => t.type === 'scatter3d')")
    # turn the 'before' pane the way a drag does (plotly reports the new camera in plotly_relayout) ...
    frame.evaluate("() => Plotly.relayout(document.getElementById('plot'), "
                   "{'scene.camera': {eye: {x: 0.3, y: -2.1, z: 0.9}, up: {x: 0, y: 0, z: 1}, center: {x: 0, y: 0, z: 0}}})")
    # ... and the 'after' pane follows
    frame.wait_for_function("() => { const c = document.getElementById('plot').layout.scene2.camera;"
                            " return c && Math.abs(c.eye.y + 2.1) < 1e-9 && Math.abs(c.eye.x - 0.3) < 1e-9; }",
                            timeout=10_000)
    pg.wait_for_timeout(800)
    pg.screenshot(path=str(ARTIFACTS / "explore-3d.png"), full_page=True)
