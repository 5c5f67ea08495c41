"""Browser test: Compare of a 6-step CE and a 20-step LaCViT warns in real Chromium, naming `steps`; picking the
comparison batch (LaCViT + CE at 20 steps) clears the warning. Screenshot: test-artifacts/compare-settings.png."""
import sys
from pathlib import Path

import pytest

from e2e_server import ARTIFACTS, serve_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from explore_runs import mixed_step_runs  # noqa: E402

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def mixed_app(tmp_path_factory):
    home, ids = mixed_step_runs(tmp_path_factory.getbasetemp())
    with serve_app(home, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url.rstrip("/"), ids


def test_compare_warns_about_different_steps_and_a_batch_clears_it(page, mixed_app):
    url, ids = mixed_app
    page.set_viewport_size({"width": 1400, "height": 1600})
    page.goto(url)
    page.locator("[data-testid='stSidebarNav']").first.wait_for(timeout=TIMEOUT_MS)
    page.goto(f"{url}/compare?run={ids['ce6']}&run={ids['lacvit20']}")
    warning = page.locator("[data-testid='stAlert']").filter(has_text="Not like with like")
    warning.first.wait_for(timeout=TIMEOUT_MS)
    assert "steps: 6 vs 20" in warning.first.inner_text()
    page.get_by_text("Metrics").first.wait_for(timeout=TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "compare-settings.png"), full_page=True)

    page.locator(".st-key-compare_batch").click()
    page.get_by_role("option").filter(has_text="steps 20").first.click()
    warning.first.wait_for(state="detached", timeout=TIMEOUT_MS)
    chips = page.locator(".st-key-compare_pick").inner_text()
    assert "steps 20" in chips and "steps 6" not in chips, chips
