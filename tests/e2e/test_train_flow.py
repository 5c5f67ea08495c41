"""Train two tiny runs through the real UI: pick a model and data by clicking, Start, watch, browse, return."""
import re
import time

import pytest

pytestmark = pytest.mark.e2e
PlaywrightError = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").Error

STEPS = 150  # enough steps to watch the progress advance between 1-s polls, even on a warm box (~25 steps/s)


def _settled(page, selector: str) -> None:
    """Wait until a rerun in flight has replaced the old copy of a widget (one element left)."""
    page.wait_for_function(f"document.querySelectorAll('{selector}').length === 1", timeout=15_000)


def _pick(page, key: str, text: str, tries: int = 4) -> None:
    """Open the searchable select `key`, type to filter, click the suggestion that starts with `text`.

    A rerun that lands between the click and the typing (a cookie just set, the previous input's rerun)
    redraws the select closed and the typing goes nowhere: then close whatever is open and start again."""
    option = page.get_by_role("option", name=re.compile(rf"^{re.escape(text)} —"))
    for attempt in range(tries):
        try:
            _settled(page, f".st-key-{key}")
            page.locator(f".st-key-{key}").click()
            page.keyboard.type(text)
            option.click(timeout=10_000)
            return
        except PlaywrightError:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")
            page.wait_for_timeout(1_000)


def _set_number(page, key: str, value: int) -> None:
    """Type into a number input; retried while a rerun in flight redraws the widget (old and new copies)."""
    field = page.locator(f".st-key-{key} input")
    for _ in range(8):
        try:
            _settled(page, f".st-key-{key} input")
            field.fill(str(value))
            field.press("Enter")
            page.wait_for_timeout(700)
            if field.input_value() == str(value):
                return
        except PlaywrightError:  # detached or duplicated mid-rerun: try again
            page.wait_for_timeout(300)
    raise AssertionError(f"{key} did not take the value {value}")


def _scroll_to(page, selector: str) -> None:
    """Scroll an element into view for a screenshot (one JS call: the live panel redraws every second)."""
    page.evaluate("sel => document.querySelector(sel)?.scrollIntoView({block: 'center'})", selector)
    page.wait_for_timeout(300)


def _latest_step(page) -> int:
    texts = page.locator("[data-testid=stProgress]").all_inner_texts()
    steps = [int(m.group(1)) for t in texts for m in [re.search(r"step (\d+)/", t)] if m]
    return max(steps, default=0)


def test_train_flow(app_url, page, shot):
    page.goto(app_url)
    page.get_by_role("button", name="Start 3 runs").wait_for(timeout=90_000)  # first run imports torch
    shot("01-train-defaults")

    _pick(page, "backbone", "test_vit")
    _pick(page, "dataset", "mnist5k")
    page.get_by_role("button", name="Remove FLYP").click()  # test_vit has no text tower
    _set_number(page, "steps", STEPS)
    _set_number(page, "n_per_class", 10)
    _set_number(page, "batch_size", 16)
    page.get_by_text("Advanced settings").click()
    _set_number(page, "eval_per_class", 10)
    page.get_by_text("Advanced settings").click()  # fold it again
    start = page.get_by_role("button", name="Start 2 runs")
    start.wait_for()
    page.wait_for_timeout(300)  # let the last number input's rerun settle
    start.click()

    # queued and running runs appear; the running one's progress advances and its loss curve draws
    page.get_by_text("in line").first.wait_for(timeout=30_000)
    bar = page.get_by_text(re.compile(rf"step \d+/{STEPS}")).first
    bar.wait_for(timeout=90_000)
    seen = []  # steps shown by the progress bars, poll after poll
    try:
        seen.append(int(re.search(r"step (\d+)/", bar.inner_text(timeout=2_000)).group(1)))
    except Exception:  # noqa: BLE001 - redrawn meanwhile; the polls below still see it
        pass
    deadline = time.time() + 60
    while len(set(seen) - {0}) < 2 and (not seen or seen[-1] != 0) and time.time() < deadline:
        page.wait_for_timeout(200)
        seen.append(_latest_step(page))  # 0 once no bar is left: the runs went on to their final numbers
    if len(set(seen) - {0}) < 2:  # a fast run: from a step below the end straight on to its final numbers
        assert any(0 < s < STEPS for s in seen), f"the progress bar did not advance (saw steps {seen})"
        page.get_by_text("Val acc").first.wait_for(timeout=20_000)
    loss_traces = page.locator(".st-key-live_loss .scatterlayer .trace")
    loss_traces.first.wait_for(timeout=20_000)
    assert loss_traces.count() >= 1
    _scroll_to(page, ".st-key-live_loss")
    shot("02-training")

    # another page renders within a few seconds while the worker trains
    t0 = time.time()
    page.get_by_role("link", name="Learn").click()
    page.get_by_text("Anchor loss").wait_for(timeout=15_000)
    page.locator(".st-key-toy_circle .scatterlayer").first.wait_for(timeout=15_000)
    learn_s = time.time() - t0
    shot("03-learn-during-training")
    assert learn_s < 10, f"Learn took {learn_s:.1f} s to render during training"

    # back on Train: both runs finish and show their numbers and an Explore button each
    page.get_by_role("link", name="Train").click()
    explore = page.get_by_role("button", name="Explore")
    deadline = time.time() + 150
    while explore.count() < 2 and time.time() < deadline:
        page.wait_for_timeout(500)
    _scroll_to(page, ".st-key-live_loss")
    shot("04-finished")
    assert explore.count() == 2, "both runs should finish"
    assert page.get_by_text("Val acc").count() >= 2
    assert page.get_by_role("button", name="Compare these").is_visible()

    # the Runs page lists them as finished
    page.get_by_role("link", name="Runs").click()
    page.get_by_text("2 of 2 runs").wait_for(timeout=15_000)
    shot("05-runs")
