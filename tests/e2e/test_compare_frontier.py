"""Browser test: the Compare page of a CE / LaCViT / FLYP comparison draws the ID-OOD frontier in real
Chromium, from the runs' stored numbers. Screenshot: test-artifacts/compare-frontier.png."""
import json
import sys
import time
from pathlib import Path

import pytest

from e2e_server import ARTIFACTS, serve_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from explore_runs import tiny_runs  # noqa: E402

from core.store import RunStore  # noqa: E402

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 120_000
FRONTIER = """() => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')]
        .find(g => ((g.layout || {}).title || {}).text && g.layout.title.text.includes('ID-OOD frontier'));
    if (!gd || !gd.querySelector('.scatterlayer')) return null;
    return {traces: gd.data.map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y), text: t.text || null})),
            labels: [...gd.querySelectorAll('.scatterlayer .textpoint text')].map(e => e.textContent),
            xrange: gd._fullLayout.xaxis.range, points: gd.querySelectorAll('.scatterlayer .point').length};
}"""


@pytest.fixture(scope="module")
def compare_app(tmp_path_factory):
    home, ids = tiny_runs(tmp_path_factory.getbasetemp())
    with serve_app(home, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url.rstrip("/"), ids, home


def test_compare_draws_the_id_ood_frontier(page, compare_app):
    url, ids, home = compare_app
    page.goto(url)
    page.locator("[data-testid='stSidebarNav']").first.wait_for(timeout=TIMEOUT_MS)
    page.goto(f"{url}/compare")  # the default trio: CE, LaCViT, FLYP of the same comparison
    page.get_by_text("Metrics").first.wait_for(timeout=TIMEOUT_MS)
    deadline, drawn = time.time() + TIMEOUT_MS / 1000, None
    while time.time() < deadline and drawn is None:
        charts = page.locator("[data-testid='stPlotlyChart']")
        if charts.count():
            charts.last.scroll_into_view_if_needed()  # charts below the fold may draw once scrolled to
        page.wait_for_timeout(500)
        drawn = page.evaluate(FRONTIER)
    titles = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].map(g => JSON.stringify((g.layout || {}).title))")
    assert drawn is not None, f"the ID-OOD frontier was never drawn; charts: {titles}"
    stored = {o: json.loads((RunStore(home).run_dir(ids[o]) / "summary.json").read_text()) for o in ids}
    curve = next(t for t in drawn["traces"] if t["name"].endswith("WiSE-FT"))
    assert curve["x"] == [p["val_acc"] for p in stored["flyp"]["wise_ft"]]
    assert curve["y"] == [p["ood_acc"] for p in stored["flyp"]["wise_ft"]]
    assert {"zero-shot", "fine-tuned"} <= set(drawn["labels"])  # endpoint labels rendered as SVG text
    refs = {(t["x"][0], t["y"][0]) for t in drawn["traces"] if t["name"].startswith(("CE", "LaCViT"))}
    assert refs == {(stored[o]["val_acc"], stored[o]["ood_acc"]) for o in ("ce", "lacvit")}
    assert drawn["points"] >= len(curve["x"]) + 2
    assert drawn["xrange"][1] - drawn["xrange"][0] >= 0.3 - 1e-9
    chart = page.locator(".js-plotly-plot").filter(has_text="ID-OOD frontier").first
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    ARTIFACTS.mkdir(exist_ok=True)
    chart.screenshot(path=str(ARTIFACTS / "compare-frontier.png"))
