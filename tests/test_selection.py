"""Seed 002: data selection (random, k-center, VeCAF), saved selections, and training on one."""
import json
from pathlib import Path

import numpy as np
import pytest

from core import cli
from core import selection as sel
from core.errors import InvalidConfig, UnknownName, UnsafePath


def _clustered_pool(seed, clusters=20, dim=16):
    """20 tight clusters of 10..200 points: random draws miss the small ones."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 200, clusters)
    centres = rng.normal(size=(clusters, dim))
    x = np.concatenate([c + 0.25 * rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)])
    return x, np.repeat(np.arange(clusters), sizes)


def _pool(x, y, text=None):
    return sel.Pool(ids=np.arange(1000, 1000 + len(y)), labels=y, features=x.astype(np.float32), text=text, source="test")


# ------------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("strategy", sel.STRATEGIES)
def test_selection_unique_sized_and_deterministic(strategy):
    x, y = _clustered_pool(0)
    pool = _pool(x, y)
    a = sel.select_from_pool(pool, strategy, 25, seed=3)
    b = sel.select_from_pool(pool, strategy, 25, seed=3)
    assert len(a["selected"]) == 25 == len(set(a["selected"]))
    assert set(a["selected"]) <= set(pool.ids.tolist())
    assert a["selected"] == b["selected"]
    if strategy == "random":
        assert sel.select_from_pool(pool, strategy, 25, seed=4)["selected"] != a["selected"]


def test_kcenter_and_vecaf_cover_clusters_better_than_random():
    found = {s: [] for s in sel.STRATEGIES}
    for seed in range(3):
        x, y = _clustered_pool(seed)
        z = sel.prepare(x)
        for strategy in sel.STRATEGIES:
            rec = sel.select_from_pool(_pool(x, y), strategy, 20, seed=seed)
            chosen = np.asarray(rec["selected"]) - 1000
            found[strategy].append((len(np.unique(y[chosen])), rec["coverage_radius"], sel.coverage(z, chosen)["mean_distance"]))
    mean = {s: np.mean(v, axis=0) for s, v in found.items()}
    clusters, radius, mean_distance = ({s: m[i] for s, m in mean.items()} for i in range(3))
    # measured (3 seeds): clusters hit of 20 random 12.7, k-center 20, VeCAF 16.7; radius 0.79 / 0.36 / 0.69;
    # mean distance of a pool point to its nearest selected one 0.171 / 0.081 / 0.077
    assert clusters["kcenter"] == 20 and radius["kcenter"] < 0.6 * radius["random"]  # k-center: the radius
    assert clusters["vecaf"] >= clusters["random"] + 3 and radius["vecaf"] < radius["random"]
    assert mean_distance["vecaf"] < 0.6 * mean_distance["random"]  # VeCAF: density matching, typical picks
    assert mean_distance["vecaf"] <= 1.05 * mean_distance["kcenter"]


def test_vecaf_greedy_minimises_the_documented_objective():
    """Every greedy step picks argmin_c J(S + {c}) with J computed from scratch (vecaf_objective)."""
    x, y = _clustered_pool(1, clusters=5, dim=6)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(y), 60, replace=False))
    z = sel.prepare(x[keep])
    members = sel.vecaf_members(z, 6, seed=0)
    chosen = sel.select_vecaf(z, 6, seed=0, members=members)
    for t in range(len(chosen)):
        prefix = list(chosen[:t])
        scores = [np.inf if c in prefix else sel.vecaf_objective(z, np.array(prefix + [c]), members) for c in range(len(z))]
        assert int(np.argmin(scores)) == chosen[t]
        assert scores[chosen[t]] == pytest.approx(min(scores))


def test_kcenter_is_farthest_first():
    z = sel.prepare(np.random.default_rng(0).normal(size=(50, 5)))
    chosen = sel.select_kcenter(z, 6, seed=0)
    for t in range(1, 6):
        nearest = sel.cosine_distances(z, z[chosen[:t]]).min(1)
        assert nearest[chosen[t]] == pytest.approx(nearest.max())


# ------------------------------------------------------------------------ language augmentation
def test_language_augmentation_matches_formula():
    f = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    t = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = np.array([0, 1])
    aug, alpha = sel.language_augment(f, labels, t, eta=0.5, scale=10.0)
    logits = 10.0 * f @ t.T
    attn = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert alpha == pytest.approx(attn[[0, 1], labels])
    assert aug == pytest.approx(f - 0.5 * alpha[:, None] * (f - t[labels]))
    assert sel.language_augment(f, labels, t, eta=0.0)[0] == pytest.approx(f)


def test_vecaf_with_and_without_language():
    x, y = _clustered_pool(2, clusters=8)
    rng = np.random.default_rng(0)
    text = rng.normal(size=(8, x.shape[1]))
    pool = _pool(x, y, text=text)
    with_lang = sel.select_from_pool(pool, "vecaf", 16, seed=0)
    without = sel.select_from_pool(pool, "vecaf", 16, seed=0, eta=0.0)
    assert with_lang["language"] is True and with_lang["eta"] == sel.DEFAULT_ETA and 0 < with_lang["mean_alpha"] <= 1
    assert without["language"] is False
    for rec in (with_lang, without):
        assert len(set(rec["selected"])) == 16 and rec["classes_covered"] == 8
    strong = sel.select_from_pool(pool, "vecaf", 16, seed=0, eta=1.0)
    assert strong["selected"] != without["selected"]  # the text changes the geometry the selector sees
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(_pool(x, y), "vecaf", 16, eta=0.5)  # no text tower
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, "vecaf", 16, eta=1.5)


def test_bad_requests():
    x, y = _clustered_pool(0, clusters=3)
    pool = _pool(x, y)
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, "random", len(y) + 1)
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, "random", 0)
    with pytest.raises(UnknownName):
        sel.select_from_pool(pool, "coreset", 5)


# --------------------------------------------------------------------------- saving / loading
def test_load_selection_errors(home):
    with pytest.raises(UnknownName):
        sel.load_selection("nope", home)
    for bad in ("../runs", "a/b", "", ".."):
        with pytest.raises(UnsafePath):
            sel.load_selection(bad, home)
    sel.save_selection({"id": "mine", "selected": [3, 1, 2], "strategy": "random"}, home)
    assert sel.load_selection("mine", home).tolist() == [3, 1, 2]
    assert sel.load_selection("mine", home).dtype == np.int64
    assert sel.list_selections(home) == ["mine"]
    (home / "selections" / "broken.json").write_text("{not json")
    with pytest.raises(InvalidConfig):
        sel.load_selection("broken", home)


def test_cli_select_then_train_on_it(home, capsys):
    code = cli.main(["select", "--backbone", "test_clip", "--dataset", "mnist5k", "--strategy", "vecaf", "--budget", "30",
                     "--n-per-class", "20", "--json", "--runs-dir", str(home)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and len(out["selected"]) == 30 == len(set(out["selected"]))
    assert out["strategy"] == "vecaf" and out["budget"] == 30 and out["language"] is True and out["pool"] == 200
    assert (home / "selections" / f"{out['id']}.json").exists()
    assert sorted(sel.load_selection(out["id"], home).tolist()) == sorted(out["selected"])

    code = cli.main(["train", "--backbone", "test_clip", "--dataset", "mnist5k", "--objective", "ce", "--selection", out["id"],
                     "--steps", "3", "--batch-size", "8", "--eval-per-class", "3", "--trainable", "frozen", "--quiet",
                     "--runs-dir", str(home)])
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and run["status"] == "finished" and run["train_images"] == 30

    from core.store import RunStore
    from pages import _seeds_ui

    rec = RunStore(home).get(run["run_id"])
    assert sorted(_seeds_ui.selected_ids(rec, home).tolist()) == sorted(out["selected"])
    m = sel.pool_map(out["id"], home, max_points=80)
    assert m["xy"].shape == (80, 2) and m["selected"].sum() == 30
    from core.datasets import load_dataset

    assert (load_dataset("mnist5k", home).labels[m["ids"]] == m["labels"]).all()  # ids index the dataset's images

    # Explore shows that run's selection on the pool: the scatter component, coloured selected vs pool
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.session_state["explore_run"] = run["run_id"]
    at.switch_page("pages/explore.py").run()
    assert not at.exception, at.exception
    assert at.segmented_control(key="explore_selection_map_colour").value == "selection"
    assert any(c.value.startswith(f"Trained on selection `{out['id']}`: VeCAF") for c in at.caption)
    at.segmented_control(key="explore_selection_map_colour").set_value("label").run()
    assert not at.exception, at.exception


def test_cli_select_errors(home, capsys):
    assert cli.main(["select", "--backbone", "test_vit", "--dataset", "digits", "--strategy", "vecaf", "--budget", "10",
                     "--eta", "0.5", "--runs-dir", str(home)]) == 2  # a text tower is needed for eta > 0
    assert "CLIP" in capsys.readouterr().err
    assert cli.main(["train", "--backbone", "test_vit", "--dataset", "digits", "--selection", "missing", "--runs-dir", str(home)]) == 2
    assert "no selection 'missing'" in capsys.readouterr().err
