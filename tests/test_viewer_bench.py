"""core/viewer_bench.py in its small form: a real server, real headless Chromium, a real run.

The full size (0/1/2/4/8 viewers, 20 sessions) is what BENCHMARKS.md reports; here it must measure
something real: the run trains in the server, each window sees it advance, the browsers run niced, and
every session of the load test gets its run recorded and finished.
"""
import math
import shutil

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(900)]
pytest.importorskip("playwright.async_api", reason="playwright is not installed")
if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
    pytest.skip("chromium is not installed", allow_module_level=True)

from core import viewer_bench  # noqa: E402
from core.store import RunStore  # noqa: E402


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


def test_load_test_every_session_gets_its_run(tmp_path):
    result = viewer_bench.load_test(3, stagger_s=0.5, home=tmp_path / "home")
    assert result["errors"] == [], result
    assert result["runs_started"] == result["runs_recorded"] == result["runs_finished"] == 3
    assert result["lost"] == [] and result["duplicates"] == 0 and result["not_finished"] == {}
    assert result["pages_answered"] == result["pages_expected"] == 6
    assert 0 < result["median_page_s"] <= result["p95_page_s"]
