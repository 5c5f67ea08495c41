"""Seed 002: data selection (random, k-center, ActiveFT, VeCAF, density), saved selections, and training on one."""
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
FAST = {"steps": 80}  # ODS optimisation steps in tests (the default 300 is the reference's)


@pytest.mark.parametrize("strategy", sel.STRATEGIES)
def test_selection_unique_sized_and_deterministic(strategy):
    x, y = _clustered_pool(0)
    pool = _pool(x, y)
    a = sel.select_from_pool(pool, strategy, 25, seed=3, **FAST)
    b = sel.select_from_pool(pool, strategy, 25, seed=3, **FAST)
    assert len(a["selected"]) == 25 == len(set(a["selected"]))
    assert set(a["selected"]) <= set(pool.ids.tolist())
    assert a["selected"] == b["selected"]
    if strategy in ("random", "activeft", "vecaf"):
        assert sel.select_from_pool(pool, strategy, 25, seed=4, **FAST)["selected"] != a["selected"]


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_kcenter_activeft_and_density_cover_clusters_better_than_random():
    strategies = ("random", "kcenter", "activeft", "density")
    found = {s: [] for s in strategies}
    for seed in range(3):
        x, y = _clustered_pool(seed)
        z = sel.prepare(x)
        for strategy in strategies:
            rec = sel.select_from_pool(_pool(x, y), strategy, 20, seed=seed)
            chosen = np.asarray(rec["selected"]) - 1000
            found[strategy].append((len(np.unique(y[chosen])), rec["coverage_radius"], sel.coverage(z, chosen)["mean_distance"]))
    mean = {s: np.mean(v, axis=0) for s, v in found.items()}
    clusters, radius, mean_distance = ({s: m[i] for s, m in mean.items()} for i in range(3))
    assert clusters["kcenter"] == 20 and radius["kcenter"] < 0.6 * radius["random"]  # k-center: the radius
    assert clusters["density"] >= clusters["random"] + 3 and radius["density"] < radius["random"]
    assert mean_distance["density"] < 0.6 * mean_distance["random"]
    # ActiveFT matches the pool distribution: centroids sit in the populated regions
    assert clusters["activeft"] >= clusters["random"] + 2 and mean_distance["activeft"] < 0.7 * mean_distance["random"]


def test_density_greedy_minimises_the_documented_objective():
    """Every greedy step picks argmin_c J(S + {c}) with J computed from scratch (density_objective)."""
    x, y = _clustered_pool(1, clusters=5, dim=6)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(y), 60, replace=False))
    z = sel.prepare(x[keep])
    members = sel.density_members(z, 6, seed=0)
    chosen = sel.select_density(z, 6, seed=0, members=members)
    for t in range(len(chosen)):
        prefix = list(chosen[:t])
        scores = [np.inf if c in prefix else sel.density_objective(z, np.array(prefix + [c]), members) for c in range(len(z))]
        assert int(np.argmin(scores)) == chosen[t]
        assert scores[chosen[t]] == pytest.approx(min(scores))


# ------------------------------------------------------------------------------ ODS (VeCAF)
def test_vecaf_picks_follow_the_per_sample_loss_weights():
    """Same pool, same embeddings: only the loss weights differ, and so do the picks (towards the high-loss samples)."""
    x, y = _clustered_pool(0)
    pool = _pool(x, y)
    uniform = sel.select_from_pool(pool, "vecaf", 20, seed=0, weights=np.ones(len(y)), **FAST)
    hard = np.where(y < 5, 20.0, 0.05)  # the model gets clusters 0-4 wrong
    focused = sel.select_from_pool(pool, "vecaf", 20, seed=0, weights=hard, **FAST)
    assert focused["selected"] != uniform["selected"]
    share = lambda rec: np.mean(y[np.asarray(rec["selected"]) - 1000] < 5)  # noqa: E731
    assert share(focused) > share(uniform) + 0.2
    assert focused["mean_weight_selected"] > uniform["mean_weight_selected"]
    # without given weights, the current model's head gives them: the labels' nearest-class-mean losses here
    auto = sel.select_from_pool(pool, "vecaf", 20, seed=0, **FAST)
    assert auto["loss_head"] == "nearest-class-mean" and len(set(auto["selected"])) == 20
    losses, head = sel.head_losses(pool, sel.prepare(pool.features))
    assert head == "nearest-class-mean" and losses.shape == (len(y),) and (losses >= 0).all()
    # a fine-tuned model's classifier, when the pool carries its logits, is the head
    logits = np.eye(20)[y] * 5.0
    logits[:50] = 0.0  # unsure on the first 50 samples: high loss there
    with_head = _pool(x, y)
    with_head.logits = logits
    losses, head = sel.head_losses(with_head, sel.prepare(x))
    assert head == "classifier" and losses[:50].min() > losses[50:].max()


def test_activeft_ignores_losses_and_vecaf_differs_from_it():
    x, y = _clustered_pool(3)
    pool = _pool(x, y)
    a = sel.select_from_pool(pool, "activeft", 20, seed=0, **FAST)
    assert a["loss_head"] is None and a["members"] == 1
    v = sel.select_from_pool(pool, "vecaf", 20, seed=0, weights=np.where(y == 0, 50.0, 1.0), **FAST)
    assert v["members"] == sel.ENSEMBLE and v["selected"] != a["selected"]


def test_ods_optimisation_lowers_its_objective():
    import torch

    z = sel.prepare(_clustered_pool(4)[0])

    def objective(c):
        sim = torch.from_numpy(z).float() @ torch.from_numpy(c).float().T / sel.ODS_TEMPERATURE
        pos, k = sim.max(1)
        spread = torch.logsumexp(torch.from_numpy(c @ c.T).float() / sel.ODS_TEMPERATURE, 0)
        return float(torch.nn.functional.softplus(spread[k] - pos).mean())

    start = z[np.random.default_rng(0).choice(len(z), 15, replace=False)]
    assert objective(sel.ods_centroids(z, 15, seed=0, steps=150)) < objective(start) - 0.05


@pytest.mark.parametrize("strategy", ["vecaf", "activeft", "kcenter", "random"])
def test_second_round_keeps_the_first_rounds_picks(strategy):
    x, y = _clustered_pool(1)
    pool = _pool(x, y)
    first = sel.select_from_pool(pool, strategy, 12, seed=0, **FAST)
    second = sel.select_from_pool(pool, strategy, 30, seed=0, keep=first["selected"], **FAST)
    assert second["selected"][:12] == first["selected"] and second["kept"] == 12
    assert len(second["selected"]) == 30 == len(set(second["selected"]))
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, strategy, 10, keep=first["selected"])  # budget below what is kept
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, strategy, 20, keep=[1, 2, 3])  # not pool ids


def test_snap_gives_distinct_samples_and_skips_taken():
    z = sel.normalise(np.random.default_rng(0).normal(size=(30, 4)))
    same = np.repeat(z[:1], 5, axis=0)  # five centroids on one sample
    picks, _ = sel.snap(z, same, taken=np.array([0]))
    assert len(set(picks.tolist())) == 5 and 0 not in picks


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


@pytest.mark.parametrize("strategy", ["vecaf", "density"])
def test_cea_with_and_without_captions(strategy):
    x, y = _clustered_pool(2, clusters=8)
    rng = np.random.default_rng(0)
    pool = _pool(x, y)
    pool.captions = rng.normal(size=(8, x.shape[1]))[y]  # one caption embedding per image (8 distinct ones here)
    pool.caption_source = "pseudo"
    with_lang = sel.select_from_pool(pool, strategy, 16, seed=0, **FAST)
    without = sel.select_from_pool(pool, strategy, 16, seed=0, eta=0.0, **FAST)
    assert with_lang["language"] is True and with_lang["eta"] == sel.DEFAULT_ETA and 0 < with_lang["mean_alpha"] <= 1
    assert with_lang["captions"] == "pseudo" and without["language"] is False and without["captions"] == "none"
    for rec in (with_lang, without):
        assert len(set(rec["selected"])) == 16
    strong = sel.select_from_pool(pool, strategy, 16, seed=0, eta=1.0, **FAST)
    assert strong["selected"] != without["selected"]  # the captions change the geometry the selector sees
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(_pool(x, y), strategy, 16, eta=0.5)  # no captions
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, strategy, 16, eta=1.5)


def test_bad_requests():
    x, y = _clustered_pool(0, clusters=3)
    pool = _pool(x, y)
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, "random", len(y) + 1)
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, "random", 0)
    with pytest.raises(UnknownName):
        sel.select_from_pool(pool, "coreset", 5)
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, "vecaf", 5, steps=0)
    with pytest.raises(InvalidConfig):
        sel.select_from_pool(pool, "density", 8, keep=pool.ids[:3])  # density has no rounds


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


def test_cli_rounds_keep_earlier_picks_and_use_the_fine_tuned_model(home, capsys):
    """VeCAF's loop: round 2 keeps round 1's picks, and its loss weights come from round 1's fine-tuned classifier."""
    code = cli.main(["select", "--backbone", "test_vit", "--dataset", "digits", "--strategy", "vecaf", "--budget", "16",
                     "--rounds", "2", "--round-steps", "2", "--ods-steps", "20", "--n-per-class", "10", "--json",
                     "--runs-dir", str(home)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and len(last["rounds"]) == 2 and len(last["round_runs"]) == 1
    first = sel.selection_info(last["rounds"][0], home)
    assert first["budget"] == 8 and first["loss_head"] == "nearest-class-mean" and first["from_run"] is None
    assert last["selected"][:8] == first["selected"] and len(set(last["selected"])) == 16
    assert last["kept"] == 8 and last["previous"] == first["id"] and last["from_run"] == last["round_runs"][0]
    assert last["loss_head"] == "classifier"  # the CE run's own head gives round 2's per-sample losses
    # one round by hand: --previous keeps a saved selection's picks
    code = cli.main(["select", "--backbone", "test_vit", "--dataset", "digits", "--strategy", "kcenter", "--budget", "20",
                     "--previous", last["id"], "--n-per-class", "10", "--json", "--runs-dir", str(home)])
    more = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and more["selected"][:16] == last["selected"] and len(set(more["selected"])) == 20
