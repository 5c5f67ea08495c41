"""Label and budget curves (core/curves.py), their figures, and the page helpers (pages/_seeds_ui.py)."""
import json

import numpy as np
import pytest

from core import cli, curves
from core.errors import InvalidConfig
from core.store import RunStore


class FakeSt:
    """Records the streamlit calls a helper makes; widgets return their default."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name == "selectbox":
                return args[1][kwargs.get("index", 0)]
            if name == "columns":
                return [self] * (args[0] if isinstance(args[0], int) else len(args[0]))
            if name == "number_input":
                return args[3]
            if name == "select_slider":
                return kwargs["value"]
            return None
        return call

    def names(self):
        return [c[0] for c in self.calls]


def _rows():
    rows = []
    for seed, (ce, cs) in enumerate([(0.40, 0.30), (0.50, 0.34)]):
        for labels, shift in ((10, 0.0), (100, -0.2), (None, -0.3)):
            for objective, err in (("ce", ce), ("content-style", cs)):
                rows.append({"curve": curves.LABEL_CURVE, "objective": objective, "labels": labels, "seed": seed,
                             "n_labels": labels or 1000, "status": "finished", "test_error": err + shift,
                             "test_acc": 1 - err - shift, "best_test_error": err + shift - 0.05})
    rows.append({"curve": curves.LABEL_CURVE, "objective": "ce", "labels": 10, "n_labels": 10, "status": "failed",
                 "test_error": None, "test_acc": None})
    return rows


def test_summarise_means_and_spreads():
    series = curves.summarise(_rows(), "objective", "n_labels", "test_error")
    assert set(series) == {"ce", "content-style"}
    x, mean, sd, n = series["ce"][0]
    assert (x, n) == (10.0, 2) and mean == pytest.approx(0.45) and sd == pytest.approx(0.05)  # the failed run is left out
    assert [p[0] for p in series["ce"]] == [10.0, 100.0, 1000.0]


def test_figures():
    fig = curves.label_curve_figure(_rows())  # final (solid) and best-on-val (dashed) test error per objective
    assert [t.name for t in fig.data] == ["ce · final", "content-style · final", "ce · best", "content-style · best"]
    assert fig.layout.xaxis.type == "log" and fig.data[0].error_y.visible
    assert list(fig.data[1].y) == pytest.approx([0.32, 0.12, 0.02])
    assert list(fig.data[3].y) == pytest.approx([0.27, 0.07, -0.03]) and fig.data[3].line.dash == "dash"
    assert fig.data[1].line.dash is None and fig.data[1].line.color == fig.data[3].line.color
    rows = [{"curve": curves.BUDGET_CURVE, "strategy": s, "budget": b, "status": "finished", "test_acc": a}
            for s, a in (("random", 0.5), ("kcenter", 0.6), ("vecaf", 0.7)) for b in (20, 50)]
    fig = curves.budget_curve_figure(rows)
    assert sorted(t.name for t in fig.data) == ["VeCAF", "k-center", "random"]
    assert {t.name: list(t.y) for t in fig.data}["VeCAF"] == pytest.approx([0.7, 0.7])
    assert not fig.data[0].error_y.visible


def test_label_curve_runs_and_is_found_again(home):
    store = RunStore(home)
    seen = []
    rows = curves.label_curve("test_vit", "digits", labels=[20, None], objectives=("ce", "content-style"), steps=2,
                              n_per_class=10, eval_per_class=3, batch_size=8, trainable="frozen", experiment="lc-test",
                              store=store, on_row=seen.append)
    assert len(rows) == 4 == len(seen) and all(r["status"] == "finished" for r in rows), rows
    by = {(r["objective"], r["labels"]): r for r in rows}
    assert by[("ce", 20)]["train_images"] == 20 and by[("content-style", 20)]["train_images"] == 100  # + 80 unlabelled
    assert by[("ce", None)]["n_labels"] == 100 and by[("ce", 20)]["n_labels"] == 20
    assert store.get(by[("ce", 20)]["run_id"]).config["batch_size"] == 8
    again = curves.curve_rows(store, "lc-test")
    assert [(r["objective"], r["labels"], r["test_error"]) for r in again] == [(r["objective"], r["labels"], r["test_error"]) for r in rows]
    assert curves.list_experiments(store)[0]["experiment"] == "lc-test"
    assert len(curves.label_curve_figure(again).data) == 4  # final + best per objective
    for r in rows:  # best: the test error at the step with the highest val accuracy, logged at every evaluation
        assert store.get(r["run_id"]).config["eval_test"] is True
        metrics = store.metrics(r["run_id"])
        val, test = dict(metrics["val_acc"]), dict(metrics["test_acc"])
        assert r["best_val_acc"] == max(val.values()) and r["best_test_acc"] == test[r["best_step"]]
        assert r["best_test_error"] == pytest.approx(1 - test[r["best_step"]])
        assert test[max(test)] == pytest.approx(r["test_acc"])  # the last evaluation is the final model
    assert [r["best_test_error"] for r in again] == [r["best_test_error"] for r in rows]

    from pages import _seeds_ui

    st = FakeSt()
    assert len(_seeds_ui.label_curve_section(st, store)) == 4
    assert "plotly_chart" in st.names() and "dataframe" in st.names()


def test_best_on_val_picks_on_val_and_reports_test():
    class Store:
        def metrics(self, run_id, keys=None):
            return {"val_acc": [(0, 0.1), (5, 0.8), (10, 0.9), (15, 0.9), (20, 0.7)],
                    "test_acc": [(0, 0.12), (5, 0.85), (10, 0.75), (15, 0.95), (20, 0.72)]}

    best = curves.best_on_val(Store(), "r")
    assert best == {"best_step": 10, "best_val_acc": 0.9, "best_test_acc": 0.75, "best_test_error": pytest.approx(0.25)}
    # not the best test error (0.05 at step 15): that would be picking on test; a val tie goes to the earlier step

    class NoTest:
        def metrics(self, run_id, keys=None):
            return {"val_acc": [(0, 0.1)]}

    assert curves.best_on_val(NoTest(), "r") == {}


def test_label_curve_rejects_bad_settings(home):
    with pytest.raises(InvalidConfig):
        curves.label_curve("test_vit", "digits", labels=[0], steps=2, root=home)
    with pytest.raises(InvalidConfig):
        curves.label_curve("test_vit", "digits", labels=[10], steps=2, root=home, not_a_setting=1)


def test_budget_curve_cli(home, capsys):
    code = cli.main(["budget-curve", "--backbone", "test_vit", "--dataset", "digits", "--budgets", "10,20", "--steps", "4",
                     "--seeds", "0", "--ods-steps", "20", "--n-per-class", "10", "--eval-per-class", "3", "--trainable", "frozen",
                     "--experiment", "bc-test", "--json", "--runs-dir", str(home)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["status"] == "finished" and out["experiment"] == "bc-test"
    rows = out["rows"]
    strategies = ("vecaf", "activeft", "kcenter", "random")  # the default: the paper's figure
    assert sorted((r["strategy"], r["budget"]) for r in rows) == sorted((s, b) for s in strategies for b in (10, 20))
    assert all(r["train_images"] == r["budget"] for r in rows)
    from core.selection import load_selection

    for r in rows:
        assert len(load_selection(r["selection"], home)) == r["budget"] == len(set(load_selection(r["selection"], home)))
    again = curves.curve_rows(RunStore(home), "bc-test")
    assert {(r["strategy"], r["budget"]) for r in again} == {(r["strategy"], r["budget"]) for r in rows}
    assert len(curves.budget_curve_figure(again).data) == 4
    btc = out["batches_to_accuracy"]  # steps to the target, from each run's logged val_acc history
    assert btc["target"] is not None and len(btc["rows"]) == 8
    assert any(r["steps"] is not None for r in btc["rows"])
    assert all(r["steps"] is None or 0 <= r["steps"] <= 4 for r in btc["rows"])


def test_budget_curve_defaults_are_the_offline_papers_figure(home, capsys, monkeypatch):
    seen = {}

    def fake(backbone, dataset, budgets, strategies, steps, **kw):
        seen.update(backbone=backbone, dataset=dataset, budgets=budgets, strategies=strategies, **kw)
        return []

    monkeypatch.setattr(curves, "budget_curve", fake)
    cli.main(["budget-curve", "--json", "--runs-dir", str(home)])
    assert seen["backbone"] == "efficientnet_lite0" and seen["dataset"] == "fashion-mnist"
    assert seen["strategies"] == ["vecaf", "activeft", "kcenter", "random"] and seen["seeds"] == [0, 1, 2]
    assert seen["budgets"] == [50, 100, 200]


def test_batches_to_accuracy_reads_the_eval_history(home):
    store = RunStore(home)
    rows = []
    for strategy, curve in (("vecaf", [0.5, 0.8, 0.9]), ("random", [0.3, 0.5, 0.85])):
        for seed in (0, 1):
            run = store.create_run({"objective": "ce", "backbone": "test_vit", "dataset": "digits"}, status="finished")
            store.log_metric_rows(run, [(10 * (i + 1), {"val_acc": v - 0.01 * seed}) for i, v in enumerate(curve)])
            rows.append({"curve": curves.BUDGET_CURVE, "strategy": strategy, "budget": 50, "seed": seed, "run_id": run,
                         "status": "finished"})
    out = curves.batches_to_accuracy(store, rows, target=0.78)
    steps = {(r["strategy"], r["seed"]): r["steps"] for r in out["rows"]}
    assert steps == {("vecaf", 0): 20, ("vecaf", 1): 20, ("random", 0): 30, ("random", 1): 30}
    assert out["series"]["vecaf"] == [(50.0, 20.0, 0.0, 2)]
    assert curves.batches_to_accuracy(store, rows, target=0.95)["series"] == {}  # nobody reached it
    assert curves.batches_to_accuracy(store, rows)["target"] == pytest.approx(0.81)  # 0.9 x the best run's 0.9
    assert len(curves.batches_figure(out).data) == 4  # a band and a line per strategy


def test_budget_figure_draws_a_spread_band_over_seeds():
    rows = [{"curve": curves.BUDGET_CURVE, "strategy": s, "budget": b, "seed": seed, "status": "finished",
             "test_acc": 0.5 + 0.001 * b + 0.02 * seed} for s in ("vecaf", "activeft", "kcenter", "random")
            for b in (50, 100, 200) for seed in (0, 1, 2)]
    fig = curves.budget_curve_figure(rows)
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 4 and len(fig.data) == 8 and "3 seeds" in fig.layout.title.text
    assert {t.name for t in fig.data if t.fill != "toself"} == {"VeCAF", "ActiveFT", "k-center", "random"}


def test_label_curve_cli_parses_all(home, capsys, monkeypatch):
    seen = {}

    def fake(backbone, dataset, labels, objectives, steps, **kw):
        seen.update(backbone=backbone, labels=labels, objectives=objectives, steps=steps, **kw)
        return [{"status": "finished"}]

    monkeypatch.setattr(curves, "label_curve", fake)
    code = cli.main(["label-curve", "--backbone", "test_vit", "--dataset", "digits", "--labels", "10,100,all",
                     "--seeds", "0,1", "--trainable", "frozen", "--regulariser", "moments", "--runs-dir", str(home)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["kind"] == "label-curve"
    assert seen["labels"] == [10, 100, None] and seen["objectives"] == ["ce", "content-style"] and seen["steps"] == 200
    assert seen["seeds"] == [0, 1] and seen["trainable"] == "frozen" and seen["cs_regulariser"] == "moments"


# -------------------------------------------------------------------------------- page helpers
def test_page_helpers_draw():
    from pages import _seeds_ui

    for fn in (_seeds_ui.learn_content_style, _seeds_ui.learn_vecaf):
        st = FakeSt()
        fn(st)
        assert st.names().count("latex") >= 1 and "markdown" in st.names()
    st = FakeSt()
    _seeds_ui.render_label_curve(st, _rows(), key="k")
    assert st.names() == ["plotly_chart", "caption", "dataframe"]
    st = FakeSt()
    _seeds_ui.render_budget_curve(st, [], key="k")
    assert st.names() == ["info"]
    st = FakeSt()
    overrides = _seeds_ui.content_style_settings(st)
    assert overrides["labels"] is None and overrides["cs_style_dim"] == 8 and overrides["cs_recon_weight"] == 1.0
    assert overrides["cs_regulariser"] == "adversarial" and overrides["cs_recon_detach"] is False
    assert _seeds_ui.selected_ids({"selection": None}) is None
    assert _seeds_ui.selected_ids({"config": {"selection": "gone"}}) is None


def test_selection_picker_lists_saved(home):
    from core.selection import save_selection
    from pages import _seeds_ui

    save_selection({"id": "s1", "selected": [1, 2], "strategy": "vecaf", "budget": 2, "dataset": "digits"}, home)
    save_selection({"id": "s2", "selected": [1], "strategy": "random", "budget": 1, "dataset": "mnist5k"}, home)
    st = FakeSt()
    assert _seeds_ui.selection_picker(st, home, "digits") is None  # default: no selection
    options = st.calls[0][1][1]
    assert options == [None, "s1"]
    assert np.array_equal(_seeds_ui.selected_ids({"selection": "s1"}, home), [1, 2])


def test_compare_page_draws_a_stored_label_curve(home, monkeypatch):
    """The Compare page's seed section finds the experiment and draws error vs labels."""
    from helpers import REPO
    from streamlit.testing.v1 import AppTest

    from pages import _ui

    store = RunStore(home)
    curves.label_curve("test_vit", "digits", labels=[20, None], objectives=("ce", "content-style"), steps=2,
                       n_per_class=10, eval_per_class=3, batch_size=8, trainable="frozen", experiment="lc-page",
                       store=store)
    queued = []

    class Manager:  # the page queues a label curve on the job manager: ordinary background runs
        def active(self):
            return []

        def submit_many(self, cfgs):
            queued.extend(cfgs)
            return [f"run-{i}" for i in range(len(cfgs))]

    monkeypatch.setattr(_ui, "get_store", lambda: store)
    monkeypatch.setattr(_ui, "get_manager", lambda: Manager())
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="compare_label_curve_pick").value == "lc-page"
    assert any("No budget-curve experiments yet" in i.value for i in at.info)
    at.text_input(key="compare_label_curve_run_backbone").set_value("test_vit")
    at.text_input(key="compare_label_curve_run_dataset").set_value("digits")
    at.text_input(key="compare_label_curve_run_labels").set_value("20,all")
    at.button(key="compare_label_curve_run_go").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert [(c.objective, c.labels) for c in queued] == [("ce", 20), ("content-style", 20), ("ce", None),
                                                         ("content-style", None)]
    assert len({c.experiment for c in queued}) == 1 and all(c.eval_test and c.backbone == "test_vit" for c in queued)
    assert any("Queued 4 runs" in m.value for m in at.success)
    at.text_input(key="compare_label_curve_run_labels").set_value("ten")
    at.button(key="compare_label_curve_run_go").click().run()
    assert any("whole numbers" in e.value for e in at.error) and len(queued) == 4  # a bad list queues nothing


def test_compare_page_draws_a_stored_budget_curve_with_batches_to_accuracy(home, monkeypatch):
    from helpers import REPO
    from streamlit.testing.v1 import AppTest

    from pages import _ui

    store = RunStore(home)
    curves.budget_curve("test_vit", "digits", budgets=[6], strategies=("vecaf", "activeft", "kcenter", "random"), steps=3,
                        seeds=(0,), ods_steps=10, n_per_class=6, eval_per_class=3, trainable="frozen", experiment="bc-page",
                        store=store)
    monkeypatch.setattr(_ui, "get_store", lambda: store)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="compare_budget_curve_pick").value == "bc-page"
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) >= 2  # accuracy vs budget, and steps to the target
    assert any("Batches-to-accuracy" in c.value for c in at.caption)


def test_selection_maker_selects_in_the_background(home):
    from streamlit.testing.v1 import AppTest

    def page(root):
        import streamlit as st

        from pages import _seeds_ui

        _seeds_ui.selection_maker(st, root, "test_vit", "digits", key="mk")

    at = AppTest.from_function(page, args=(str(home),), default_timeout=120).run()
    at.selectbox(key="mk_strategy").set_value("activeft").run()
    at.number_input(key="mk_budget").set_value(5).run()
    at.button(key="mk_go").click().run()
    assert not at.exception, at.exception
    job = at.session_state["mk_job"]
    job["thread"].join(120)  # the page returned at once; the selection ran on its own thread
    at.run()
    assert not at.exception, at.exception
    made = at.session_state["mk_made"]
    from core.selection import selection_info

    info = selection_info(made, home)
    assert info["strategy"] == "activeft" and len(set(info["selected"])) == 5
