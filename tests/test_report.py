"""core.report: run picking, self-contained HTML, projector TSV, Parquet (on synthetic stored runs)."""
import io
import json
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core import report
from core.embeddings import EmbeddingSet, embeddings_dir, save_embeddings
from core.errors import UnknownName
from core.store import RunStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explore_runs import tiny_runs  # noqa: E402


def _fake_run(store, objective, *, dim=16, n=60, seed=0, dataset="digits", anchors=False, **settings):
    """A 'finished' run folder with before / after embeddings, written without training (`settings`: more config)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n // 3)
    ids = np.arange(100, 100 + n)
    centres = rng.normal(size=(3, dim)) * 2
    run_id = store.create_run({"objective": objective, "backbone": "test_vit", "dataset": dataset, **settings}, status="finished")
    store.set_status(run_id, "finished")
    run_dir = store.run_dir(run_id)
    for phase, spread in (("before", 2.0), ("after", 0.5)):
        vec = (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float16)
        preds = labels.copy() if phase == "after" else None
        if phase == "after":
            preds[:5] = (preds[:5] + 1) % 3
        es = EmbeddingSet("val", ids, labels, {"image" if anchors else "encoder": vec}, classes=["a", "b", "c"], preds=preds,
                          anchors=centres.astype(np.float16) if anchors else None)
        save_embeddings(embeddings_dir(run_dir, phase, "val"), es)
    summary = {"val_acc": float((preds == labels).mean()), "objective": objective}
    if anchors:
        summary.update(zeroshot_acc=0.4, wise_ft=[{"alpha": 0.0, "val_acc": 0.4}, {"alpha": 1.0, "val_acc": 0.9}])
    store.update_summary(run_id, summary)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_id


@pytest.fixture
def store(home):
    return RunStore(home)


def test_resolve_run_and_default_trio(store):
    ce = _fake_run(store, "ce")
    lac = _fake_run(store, "lacvit", seed=1)
    flyp = _fake_run(store, "flyp", seed=2, anchors=True)
    assert report.resolve_run(store, ce).id == ce
    assert report.resolve_run(store, ce[:-2]).id == ce  # unique prefix
    assert report.resolve_run(store, "latest").id == flyp
    with pytest.raises(UnknownName):
        report.resolve_run(store, "no-such-run")
    runs = report.finished_runs(store)
    assert report.default_compare_runs(runs) == [ce, lac, flyp]


def test_comparison_html_is_self_contained(store):
    ids = [_fake_run(store, "ce"), _fake_run(store, "flyp", seed=2, anchors=True)]
    views = [report.load_run_view(store, i) for i in ids]
    page = report.comparison_html(views)
    assert page.startswith("<!doctype html>")
    assert "plotly.js v" in page and len(page) > 1_000_000  # the bundle is inlined
    assert not re.search(r"<script[^>]+src=[\"']?https?:", page, re.IGNORECASE)  # no CDN script
    assert "★" in page and "WiSE-FT" in page and "Per-class accuracy" in page
    assert page.count("Plotly.newPlot") >= 4


def test_run_report_html(store):
    view = report.load_run_view(store, _fake_run(store, "lacvit"))
    page = report.run_report_html(view)
    assert "plotly.js v" in page and "before fine-tuning" in page


def test_projector_tsv_row_counts(store, tmp_path):
    view = report.load_run_view(store, _fake_run(store, "ce", n=60))
    sets = report.export_sets(view, phases=("before", "after"))
    paths = report.write_projector(sets, tmp_path / "proj")
    vectors = (tmp_path / "proj" / "vectors.tsv").read_text().splitlines()
    metadata = (tmp_path / "proj" / "metadata.tsv").read_text().splitlines()
    assert [p.name for p in paths] == ["vectors.tsv", "metadata.tsv"]
    assert len(vectors) == 120 and len(metadata) == 121  # + header
    assert metadata[0].split("\t") == report.METADATA_HEADER
    assert all(len(line.split("\t")) == 16 for line in vectors)
    assert {line.split("\t")[6] for line in metadata[1:]} == {"before", "after"}
    z = zipfile.ZipFile(io.BytesIO(report.projector_zip({view.id: sets})))
    assert sorted(z.namelist()) == sorted([f"{view.id}/vectors.tsv", f"{view.id}/metadata.tsv"])


def test_parquet_round_trip(store, tmp_path):
    import pyarrow.parquet as pq

    view = report.load_run_view(store, _fake_run(store, "ce", n=30))
    sets = report.export_sets(view, phases=("before", "after"))
    path = report.export_parquet(sets, tmp_path / "e.parquet")
    table = pq.read_table(path)
    assert table.num_rows == 60
    df = table.to_pandas()
    after = df[df.phase == "after"]
    np.testing.assert_allclose(np.stack(after.vector.to_numpy()), view.after.vectors["encoder"].astype(np.float32))
    assert after.sample_id.tolist() == view.after.ids.tolist()
    assert df[df.phase == "before"].pred.isna().all()  # no head before fine-tuning
    assert after.correct.sum() == 25
    assert pq.read_table(io.BytesIO(report.export_parquet(sets))).num_rows == 60  # bytes for st.download_button


def test_metrics_table_marks_the_best(store):
    rows, best = report.metrics_table([{"knn_acc": 0.5, "uniformity": -1.0}, {"knn_acc": 0.8, "uniformity": -2.0}], ["a", "b"])
    keys = {r["key"]: r["metric"] for r in rows}
    assert best[keys["knn_acc"]] == 1 and best[keys["uniformity"]] == 1


def test_trajectory_figure_has_frames_and_slider():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 10)
    frames = [(s, rng.normal(size=(20, 2))) for s in (0, 5, 10)]
    fig = report.trajectory_figure(frames, labels, ["a", "b"])
    assert len(fig.frames) == 3 and fig.layout.sliders[0].steps[-1].label == "10"
    at = report.trajectory_figure(frames, labels, ["a", "b"], active=1)  # Explore's frame slider picks the frame shown
    assert at.layout.sliders[0].active == 1
    assert np.allclose(at.data[0].x, frames[1][1][labels == 0, 0])


def test_analyze_cached_memoises_on_disk(store, home, monkeypatch):
    from core import metrics

    run_dir = store.run_dir(_fake_run(store, "ce"))
    first = metrics.analyze_cached(run_dir, root=home, split="val", details=True)
    monkeypatch.setattr(metrics, "analyze", lambda *a, **k: pytest.fail("recomputed"))
    second = metrics.analyze_cached(run_dir, root=home, split="val", details=True)
    assert first == second and first["knn_acc"] is not None
    assert len(list((home / "cache" / "analysis").glob("*.json"))) == 1


# ----------------------------------------------------------------------------- ID-OOD frontier
@pytest.mark.slow  # 7.7 s
def test_the_frontier_is_built_from_the_stored_numbers(tmp_path_factory):
    """On real tiny CE / LaCViT / FLYP runs: one point per stored WiSE-FT alpha at (val_acc, ood_acc), the
    endpoints labelled, CE and LaCViT as reference points at their stored (val_acc, ood_acc)."""
    home, ids = tiny_runs(tmp_path_factory.getbasetemp())
    store = RunStore(home)
    views = [report.load_run_view(store, ids[o]) for o in ("ce", "lacvit", "flyp")]
    stored = {o: json.loads((store.run_dir(ids[o]) / "summary.json").read_text()) for o in ids}
    data = report.frontier_data([(v.short, v.config, v.summary) for v in views])
    (curve,) = data["curves"]
    wise = stored["flyp"]["wise_ft"]
    assert curve["id"] == [p["val_acc"] for p in wise] and curve["ood"] == [p["ood_acc"] for p in wise]
    assert curve["shift"] == stored["flyp"]["ood_shift"] == "mix:3"
    assert [(r["objective"], r["id"], r["ood"]) for r in data["references"]] == [
        (o, stored[o]["val_acc"], stored[o]["ood_acc"]) for o in ("ce", "lacvit")]
    fig = report.frontier_figure(data)
    line = next(t for t in fig.data if t.name.endswith("WiSE-FT"))
    assert list(line.x) == curve["id"] and list(line.y) == curve["ood"] and list(line.customdata) == curve["alpha"]
    assert line.text[0] == "zero-shot" and line.text[-1] == "fine-tuned"
    points = {t.name: (t.x[0], t.y[0]) for t in fig.data if t.mode == "markers+text"}
    assert sorted(points.values()) == sorted((r["id"], r["ood"]) for r in data["references"])
    lo, hi = fig.layout.xaxis.range
    assert tuple(fig.layout.yaxis.range) == (lo, hi) and hi - lo >= 0.3 - 1e-9
    values = curve["id"] + curve["ood"] + [v for r in data["references"] for v in (r["id"], r["ood"])]
    assert lo <= min(values) and max(values) <= hi
    assert "ID-OOD frontier" in report.comparison_html(views)
    assert "ID-OOD frontier" in report.run_report_html(views[2])


def test_the_frontier_does_not_zoom_noise_and_skips_other_comparisons():
    wise = [{"alpha": a / 4, "val_acc": 0.82 + a / 100, "ood_acc": 0.84 - a / 200} for a in range(5)]
    same = {"dataset": "digits", "steps": 60, "seed": 0}
    data = report.frontier_data([
        ("FLYP", {**same, "objective": "flyp"}, {"wise_ft": wise, "ood_shift": "mix:3"}),
        ("CE", {**same, "objective": "ce"}, {"val_acc": 0.85, "ood_acc": 0.83, "ood_shift": "mix:3"}),
        ("CE other seed", {**same, "objective": "ce", "seed": 1}, {"val_acc": 0.85, "ood_acc": 0.83, "ood_shift": "mix:3"}),
        ("LaCViT blur", {**same, "objective": "lacvit"}, {"val_acc": 0.85, "ood_acc": 0.6, "ood_shift": "gaussian_blur:3"}),
        ("old CE", {**same, "objective": "ce"}, {"val_acc": 0.85}),
    ])
    assert [r["name"] for r in data["references"]] == ["CE"]
    assert data["skipped"] == ["CE other seed", "LaCViT blur", "old CE"]
    lo, hi = report.frontier_figure(data).layout.xaxis.range
    assert hi - lo >= 0.3 - 1e-9 and 0 <= lo <= 0.82 and 0.86 <= hi <= 1  # not auto-zoomed to 82-86 %
    assert report.frontier_range([0.0, 0.05]) == [0.0, 0.3] and report.frontier_range([0.97, 1.0]) == [0.7, 1.0]
    assert report.frontier_data([("old FLYP", {}, {"wise_ft": [{"alpha": 0.0, "val_acc": 0.4}]})])["curves"] == []


def test_best_accuracy_is_marked_only_when_its_interval_clears_the_others():
    from core.metrics import wilson_interval
    from core.report import delta_colour, metrics_table

    def run(k, n):
        return {"val_acc": k / n, "val_acc_ci95": list(wilson_interval(k, n)), "silhouette": k / n / 2}

    rows, best = metrics_table([run(49, 59), run(51, 59)], ["CE", "LaCViT"])  # two images apart: noise
    assert best["val accuracy (top-1)"] is None
    assert best["silhouette (cosine)"] == 1  # no interval: the plain best as before
    assert rows[0]["ci"]["CE"] == pytest.approx(list(wilson_interval(49, 59)))
    _, best = metrics_table([run(20, 59), run(55, 59), run(30, 59)], ["a", "b", "c"])
    assert best["val accuracy (top-1)"] == 1
    assert delta_colour("better") == delta_colour("worse") == "normal" and delta_colour("unclear") == "off"
    assert delta_colour(None) == "off"


def test_report_shows_mean_and_spread_for_runs_that_differ_only_in_seed():
    from types import SimpleNamespace

    from core.report import seeds_html

    base = {"objective": "lacvit", "steps": 60}
    views = [SimpleNamespace(id=f"r{s}", config={**base, "seed": s}) for s in range(3)]
    results = [{"val_acc": v} for v in (0.80, 0.84, 0.82)]
    page = seeds_html(views, results)
    assert "Mean ± spread over seeds" in page and "82.0 ± 2.0 % (3 seeds)" in page and "seeds 0, 1, 2" in page
    other = [SimpleNamespace(id="x", config={**base, "seed": 0}), SimpleNamespace(id="y", config={**base, "steps": 9, "seed": 1})]
    assert seeds_html(other, results[:2]) == ""  # different steps: no seed group


def _settings_section(page: str) -> str:
    return page[page.index("<h2>Settings</h2>"):page.index("<h2>Metrics</h2>")]


def test_comparison_html_has_a_settings_table_naming_steps_and_warns(store):
    ids = [_fake_run(store, "ce", steps=1500, lr=0.001), _fake_run(store, "lacvit", seed=1, steps=20, lr=0.001)]
    views = [report.load_run_view(store, i) for i in ids]
    section = _settings_section(report.comparison_html(views))
    steps = re.search(r"<tr class='differs'><th>steps ≠</th><td>(\w+)</td><td>(\w+)</td></tr>", section)
    assert steps and steps.groups() == ("1500", "20")
    assert "<tr><th>lr</th><td>0.001</td><td>0.001</td></tr>" in section  # same value: shown, not marked
    assert "Not like with like" in section and "steps: 1500 vs 20" in section
    assert "CE · " in section and " · steps 1500</th>" in section and " · steps 20</th>" in section  # labels carry steps
    like = [_fake_run(store, "ce", steps=20), _fake_run(store, "lacvit", seed=1, steps=20)]
    section = _settings_section(report.comparison_html([report.load_run_view(store, i) for i in like]))
    assert "Not like with like" not in section and "<th>objective ≠</th>" in section
    single = _settings_section(report.run_report_html(report.load_run_view(store, like[0])))
    assert "<th>steps</th><td>20</td>" in single


def test_settings_table_keeps_hostile_names_inert(store):
    from hostile_names import HOSTILE_CLASSES, live_markup

    ids = [_fake_run(store, "ce", dataset=HOSTILE_CLASSES[0], experiment=HOSTILE_CLASSES[1]),
           _fake_run(store, "lacvit", seed=1, dataset=HOSTILE_CLASSES[1], selection=HOSTILE_CLASSES[0])]
    section = _settings_section(report.comparison_html([report.load_run_view(store, i) for i in ids]))
    assert live_markup(section) == []
    assert "&lt;img src=x onerror" in section and "dataset: " in section  # named, escaped, and warned about


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_cli_compare_html_names_steps(store, tmp_path):
    """The issue's check, end to end: `python -m core compare A B --html r.html` of runs with different step counts."""
    import subprocess

    a, b = _fake_run(store, "ce", steps=1500), _fake_run(store, "lacvit", seed=1, steps=20)
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "core", "compare", a, b, "--runs-dir", str(store.root), "--html", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    section = _settings_section(out.read_text())
    assert "<th>steps ≠</th><td>1500</td><td>20</td>" in section and "steps: 1500 vs 20" in section
