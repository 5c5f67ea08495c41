"""core/viewer_bench.py in its small form: a real server, real headless Chromium, a real run.

The full size (0/1/2/4/8 viewers, 20 sessions) is what BENCHMARKS.md reports; here it must measure
something real: the run trains in the server, each window sees it advance, the browsers run niced, and
every session of the load test gets its run recorded and finished.
"""
import math
import shutil

import pytest

from core import viewer_bench
from core.store import RunStore

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(900)]
try:
    import playwright.async_api  # noqa: F401
    _browsers = shutil.which("chromium") or shutil.which("chromium-browser")
except ImportError:
    _browsers = None
needs_chromium = pytest.mark.skipif(not _browsers, reason="playwright or chromium is not installed")


@needs_chromium
def test_viewer_benchmark_measures_the_run_with_and_without_a_browser(tmp_path):
    home = tmp_path / "home"
    result = viewer_bench.viewer_benchmark((0, 1), window_s=6, settle_s=2, steps=12_000, home=home)
    assert set(result["viewers"]) == {"0", "1"}
    assert [w["viewers"] for w in result["windows"]] == [0, 1, 0]  # the baseline measured before and after
    for w in result["windows"]:
        assert w["steps"] > 0 and w["steps_per_s"] > 0 and w["samples"] >= 2
        assert w["server_cpu"] > 0  # the server process was the one training
    row = result["viewers"]["1"]
    assert math.isfinite(row["ratio"]) and row["ratio"] > 0
    assert result["browser_nice"] == [viewer_bench.BROWSER_NICE]  # every chromium process niced
    record = RunStore(home).get(result["run_id"])  # the run really trained in that server, then was stopped
    assert record.config["backbone"] == "test_vit" and record.config["objective"] == "ce"
    assert result["trained_steps"] >= sum(w["steps"] for w in result["windows"])
    assert "| 1 |" in viewer_bench.format_viewers(result)


def test_load_test_every_person_gets_their_run(tmp_path):
    """The websocket form (the one BENCHMARKS.md reports at 20): three people of a workshop, each with
    their own name cookie, fill the form, start a run, poll until it finishes, reload twice."""
    home = tmp_path / "home"
    result = viewer_bench.load_test(3, stagger_s=0.5, home=home)
    assert result["clients"] == "websocket" and result["workshop"] is True
    assert result["errors"] == [], result
    assert result["runs_started"] == result["runs_recorded"] == result["runs_finished"] == 3
    assert result["lost"] == [] and result["duplicates"] == 0 and result["not_finished"] == {}
    assert result["pages_answered"] == result["pages_expected"] == 9  # a load and two reloads each
    assert result["polls_answered"] >= 3 and 0 < result["p95_poll_s"] <= result["max_poll_s"]
    assert 0 < result["median_page_s"] <= result["p95_page_s"]
    runs = RunStore(home).list()  # each run is its own person's, with the form's settings
    assert sorted(r.owner_name for r in runs) == ["Student 01", "Student 02", "Student 03"]
    assert len({r.owner_id for r in runs}) == 3
    assert {(r.config["backbone"], r.config["dataset"], r.config["steps"]) for r in runs} == {("test_vit", "digits", 20)}


@needs_chromium
def test_load_test_in_real_browsers(tmp_path):
    result = viewer_bench.load_test(2, clients="browser", stagger_s=0.5, home=tmp_path / "home")
    assert result["clients"] == "browser" and result["workshop"] is False
    assert result["errors"] == [], result
    assert result["runs_started"] == result["runs_recorded"] == result["runs_finished"] == 2
    assert result["lost"] == [] and result["duplicates"] == 0 and result["not_finished"] == {}
    assert result["pages_answered"] == result["pages_expected"] == 4
