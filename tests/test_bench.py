"""`python -m core bench` in a small form: every part runs and reports sane numbers (no timing asserts:
speed is judged by the ratios in BENCHMARKS.md, measured side by side on a quiet machine)."""
import math

import pytest

from core import bench


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture
def root(home):
    return home


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_loop_and_extract_ratios(root):
    loop = bench.loop_ratio(root, steps=3, repeats=1)
    extract = bench.extract_ratio(root, n=40, repeats=1)
    assert _positive(loop["loop_ratio"]) and _positive(loop["bare_steps_per_s"])
    assert _positive(extract["extract_ratio"]) and _positive(extract["bare_images_per_s"])


@pytest.mark.slow  # over ~3 s of CPU (EMBEDLAB_TEST_TIMES): not in make test-fast
def test_cache_speedup_and_ui_slowdown(root):
    cache = bench.cache_speedup(root, n_per_class=7, repeats=1)
    assert cache["cache_speedup"] > 1  # reading cached features must beat recomputing the backbone
    ui = bench.ui_slowdown(root, steps=8, window_s=0.3)
    assert _positive(ui["ui_slowdown"]) and ui["ui_steps_polled"] + ui["ui_steps_unpolled"] == 7


def test_projection_and_scale_parts(root, monkeypatch):
    scale = bench.explorer_scale(sizes=(1_000, 3_000), max_points=2_000)
    assert scale["explore_1k_points_drawn"] == 1_000 and scale["explore_3k_points_drawn"] == 2_000  # subsampled
    assert scale["explore_3k_payload_mb"] > scale["explore_1k_payload_mb"] > 0


@pytest.mark.slow
@pytest.mark.timeout(600)  # the first UMAP of a session compiles numba's kernels (cached per EMBEDLAB_HOME)
def test_projection_times_small_form_measures_every_lever(root):
    out = bench.projection_times(root, quick=True, sizes={"pca": 2_000, "umap": 600, "tsne": 600},
                                 params={"tsne": {"n_iter": 20, "early_exaggeration_iter": 20}})
    assert _positive(out["pca_2k_s"]) and _positive(out["umap_600_s"]) and _positive(out["tsne_600_s"])
    for method, levers in bench.PROJECTION_LEVERS.items():
        for name in levers:
            if name != "now":
                assert _positive(out[f"{method}_600_lever_{name}_s"]), (method, name)
    assert out["projection_jit_warmup_s"] >= 0
    text = bench.format_table({"umap_10k_s": 12.0, "tsne_5k_s": 5.0})
    assert "MISSED" in text.splitlines()[2] and "ok" in text.splitlines()[3]


@pytest.mark.slow  # over ~3 s of CPU (EMBEDLAB_TEST_TIMES): not in make test-fast
def test_the_prepared_gpu_script_runs_on_the_cpu(root):
    """The script for a lent GPU machine, on the tiny CLIP model and the CPU: same code path, tiny sizes."""
    out = bench.gpu_throughput(backbone="test_clip", image_size=32, batch_size=8, steps=3, device="cpu")
    for objective in ("flyp", "lacvit"):
        assert _positive(out[f"gpu_{objective}_images_per_s"]) and _positive(out[f"gpu_{objective}_loop_ratio"])


def test_table_marks_goals():
    text = bench.format_table({"loop_ratio": 0.99, "ui_slowdown": 1.2, "machine": "x"})
    assert "ok" in text.splitlines()[2] and "MISSED" in text.splitlines()[3]


@pytest.mark.slow  # over ~3 s of CPU (EMBEDLAB_TEST_TIMES): not in make test-fast
def test_cpu_levers_report_speedups():
    levers = bench.cpu_levers(repeats=1, steps=1)
    assert _positive(levers["channels_last_train_speedup"]) and _positive(levers["bf16_cpu_train_speedup"])


def test_browser_parts_are_opt_in_and_report_the_viewer_and_load_figures(monkeypatch):
    """`--only viewers,load` maps core/viewer_bench.py's results to bench figures (the real browsers run in
    tests/test_viewer_bench.py); a plain `bench` never starts them."""
    from core import viewer_bench

    calls = []
    monkeypatch.setattr(viewer_bench, "viewer_benchmark", lambda viewers, **kw: calls.append(("viewers", viewers)) or {
        "viewers": {str(n): {"steps_per_s": 100.0 - n, "ratio": (100.0 - n) / 100} for n in viewers}})
    monkeypatch.setattr(viewer_bench, "load_test", lambda n, **kw: calls.append(("load", n)) or {
        "sessions": n, "clients": "websocket", "runs_finished": n, "lost": [], "not_finished": {"r1": "failed"},
        "errors": [], "pages_answered": 3 * n - 1, "pages_expected": 3 * n, "p95_page_s": 3.0, "median_page_s": 1.0,
        "p95_poll_s": 0.2, "p95_start_s": 9.0})
    out = {**bench.viewer_figures(quick=False), **bench.load_figures(quick=False)}
    assert calls == [("viewers", (0, 1, 2, 4, 8)), ("load", 20)]
    assert out["viewers_4_ratio"] == 0.96 and out["viewers_8_steps_per_s"] == 92.0
    assert out["load_runs_lost"] == 0 and out["load_runs_unfinished"] == 1  # in the store, but failed
    assert out["load_pages_missing"] == 1 and out["load_p95_page_s"] == 3.0 and out["load_p95_poll_s"] == 0.2
    for figure in ("load_runs_lost", "load_runs_unfinished", "load_pages_missing"):
        assert "MISSED" in bench.format_table({figure: 1}) and "MISSED" not in bench.format_table({figure: 0})
    assert {"viewers", "load"} <= set(bench.OPT_IN_PARTS)
    calls.clear()
    monkeypatch.setattr(bench, "loop_ratio", lambda *a, **k: {"loop_ratio": 1.0})
    bench.run_bench(only=["loop"])
    assert calls == []  # not named: no browser started
