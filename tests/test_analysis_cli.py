"""`python -m core analyze | export | compare` on tiny real runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from explore_runs import tiny_runs  # noqa: E402

from core import cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test reads the `runs` fixture: three tiny runs, ~8 s of CPU (not in make test-fast)
KEYS = ("val_acc", "knn_acc", "linear_probe_acc", "silhouette", "alignment", "uniformity", "pos_mean_cos", "neg_mean_cos")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory.getbasetemp())


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _check_ranges(m: dict) -> None:
    for key in KEYS:
        assert key in m and m[key] is not None, key
    for key in ("val_acc", "knn_acc", "linear_probe_acc"):
        assert 0.0 <= m[key] <= 1.0
    assert -1.0 <= m["silhouette"] <= 1.0
    assert 0.0 <= m["alignment"] <= 4.0  # squared distance of unit vectors
    assert m["uniformity"] <= 0.0
    assert -1.0 <= m["neg_mean_cos"] <= 1.0 and -1.0 <= m["pos_mean_cos"] <= 1.0


def test_analyze_lacvit_prints_every_key_in_range(runs):
    home, ids = runs
    proc = subprocess.run([sys.executable, "-m", "core", "analyze", ids["lacvit"], "--runs-dir", str(home)],
                          capture_output=True, text=True, cwd=REPO, timeout=240,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr
    m = _last_json(proc.stdout)
    _check_ranges(m)
    assert m["run_id"] == ids["lacvit"] and m["objective"] == "lacvit"
    assert m["knn_acc_before"] is not None  # the pretrained embeddings were analysed too
    table = proc.stdout.strip().splitlines()[:-1]  # the human-readable table comes first
    assert any(line.startswith("knn_acc ") for line in table)


def test_analyze_json_flyp_has_zero_shot_and_wise_ft(runs, capsys):
    home, ids = runs
    assert cli.main(["analyze", ids["flyp"], "--runs-dir", str(home), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    m = json.loads(out[0])
    _check_ranges(m)
    assert 0.0 <= m["zeroshot_acc"] <= 1.0 and len(m["wise_ft"]) == 3
    assert m["output"] == "image"
    _check_intervals(m)
    # FLYP's before set has zero-shot predictions on the same images: a paired verdict on accuracy
    assert m["acc_vs_before"] in ("better", "worse", "unclear") and 0.0 <= m["acc_vs_before_p"] <= 1.0
    assert m["val_acc_ci95_before"][0] <= m["val_acc_before"] <= m["val_acc_ci95_before"][1]


def _check_intervals(m: dict) -> None:
    """Every accuracy carries its Wilson 95 % interval, [lo, hi] around the value, val and test alike."""
    for key in ("val_acc", "test_acc", "knn_acc", "linear_probe_acc"):
        lo, hi = m[f"{key}_ci95"]
        assert 0.0 <= lo <= m[key] <= hi <= 1.0, key
        assert hi - lo > 0.05, key  # 120 val images: an honest interval is several points wide
    assert m["val_n"] == 120 and m["linear_probe_folds"] == 5  # a small set: 5-fold CV, every image tested


def test_analyze_json_holds_every_ci95(runs, capsys):
    home, ids = runs
    assert cli.main(["analyze", ids["ce"], "--runs-dir", str(home), "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _check_intervals(m)
    for key in ("knn_acc", "linear_probe_acc"):  # CE's before set: the same images, so McNemar pairs them
        assert m[f"{key}_vs_before"] in ("better", "worse", "unclear")
        assert m[f"{key}_ci95_before"][0] <= m[f"{key}_before"] <= m[f"{key}_ci95_before"][1]


def test_analyze_unknown_run_is_one_line_and_exit_2(runs, capsys):
    home, _ = runs
    assert cli.main(["analyze", "no-such-run", "--runs-dir", str(home)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no run 'no-such-run'" in err[0]


def test_export_tsv_parquet_html(runs, tmp_path, capsys):
    home, ids = runs
    run = ids["ce"]
    assert cli.main(["export", run, "--runs-dir", str(home), "--format", "tsv", "--out", str(tmp_path / "tsv"), "--phase", "both"]) == 0
    meta = (tmp_path / "tsv" / "metadata.tsv").read_text().splitlines()
    vec = (tmp_path / "tsv" / "vectors.tsv").read_text().splitlines()
    assert len(meta) == len(vec) + 1 and len(vec) == 2 * 120  # 12 per class x 10 classes, before + after
    assert cli.main(["export", run, "--runs-dir", str(home), "--format", "parquet", "--out", str(tmp_path / "e.parquet")]) == 0
    assert (tmp_path / "e.parquet").stat().st_size > 0
    assert cli.main(["export", run, "--runs-dir", str(home), "--format", "html", "--out", str(tmp_path / "r.html")]) == 0
    assert "plotly.js v" in (tmp_path / "r.html").read_text()
    capsys.readouterr()


def test_compare_html(runs, tmp_path, capsys):
    home, ids = runs
    out = tmp_path / "cmp.html"
    assert cli.main(["compare", ids["ce"], ids["lacvit"], ids["flyp"], "--runs-dir", str(home), "--html", str(out)]) == 0
    page = out.read_text()
    assert "plotly.js v" in page and "WiSE-FT" in page
    assert _last_json(capsys.readouterr().out)["html"] == str(out)
    assert cli.main(["compare", ids["ce"], "--runs-dir", str(home), "--html", str(out)]) == 2
