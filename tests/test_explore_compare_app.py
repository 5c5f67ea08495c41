"""AppTest: the Explore and Compare pages render on tiny real runs (no browser)."""
import json
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).parent))
from explore_runs import tiny_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory.getbasetemp())


@pytest.fixture
def app_home(runs, monkeypatch):
    home, ids = runs
    monkeypatch.setenv("EMBEDLAB_HOME", str(home))
    return home, ids


def _page(name: str, *, state: dict | None = None, query: dict | None = None) -> AppTest:
    """app.py (the router) run and switched to pages/<name>.py, with session state / query params set first."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at.switch_page(f"pages/{name}.py").run()


def test_explore_renders_latest_run(app_home):
    _, ids = app_home
    at = _page("explore")
    assert not at.exception
    assert at.selectbox(key="explore_run_pick").value == ids["flyp"]  # the newest finished run
    assert [m.label for m in at.metric][:3] == ["val accuracy", "kNN accuracy", "linear probe"]
    assert at.session_state["explore_run"] == ids["flyp"]
    assert at.query_params["run"] in (ids["flyp"], [ids["flyp"]])


def test_explore_session_state_run_controls_neighbours_and_trajectory(app_home):
    _, ids = app_home
    at = _page("explore", state={"explore_run": ids["lacvit"]})
    assert not at.exception
    assert at.selectbox(key="explore_run_pick").value == ids["lacvit"]
    assert at.selectbox(key="explore_output").options == ["encoder", "projection (trained)", "logits"]
    at.selectbox(key="explore_output").select("logits").run()
    assert not at.exception
    at.segmented_control(key="explore_color").set_value("correctness")
    at.segmented_control(key="explore_dims").set_value(3).run()
    assert not at.exception
    from core.embeddings import load_run_embeddings
    from core.store import RunStore

    store = RunStore(app_home[0])
    some_id = int(load_run_embeddings(store.run_dir(ids["lacvit"]), "after", "val").ids[5])
    at.session_state["explore_clicked"] = some_id  # what a click in the scatter sets
    at.segmented_control(key="explore_dims").set_value(2)
    at.selectbox(key="explore_output").select("encoder").run()
    assert not at.exception
    assert any(f"Nearest neighbours of #{some_id}" in s.value for s in at.subheader)
    at.toggle(key="explore_traj").set_value(True).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1  # the trajectory animation


def test_explore_opens_each_run_in_its_trained_space_with_before_and_after(app_home):
    """Issue 17.1: LaCViT in its projection head's space, FLYP in the joint image space, CE in the encoder's;
    both panes, and the before pane's colours from the before model's own predictions, said in the caption."""
    _, ids = app_home
    for objective, space, source in (("lacvit", "projection", "nearest class mean"), ("flyp", "image", "zero-shot"),
                                     ("ce", "encoder", "nearest class mean")):
        at = _page("explore", state={"explore_run": ids[objective]})
        assert not at.exception
        assert at.selectbox(key="explore_output").value == space
        assert not at.segmented_control(key="explore_panes").disabled  # the before set has this space too
        assert any(f"the space {objective} trains" in c.value for c in at.caption)
        silhouette = next(m for m in at.metric if m.label == "silhouette")
        assert "vs before" in (silhouette.delta or "")  # a before value in this very space
        at.segmented_control(key="explore_color").set_value("correctness").run()
        assert not at.exception
        assert any(f"before model's own predictions: {source}" in c.value for c in at.caption)
        assert at.query_params["space"] in (space, [space])


def test_explore_reads_its_view_from_the_url_and_writes_it_back(app_home):
    _, ids = app_home
    query = {"run": ids["ce"], "split": "test", "space": "logits", "proj": "pca", "dims": "3", "color": "correctness",
             "panes": "after"}
    at = _page("explore", query=query)
    assert not at.exception
    assert at.selectbox(key="explore_run_pick").value == ids["ce"]
    assert at.segmented_control(key="explore_split").value == "test"
    assert at.selectbox(key="explore_output").value == "logits"
    assert at.segmented_control(key="explore_dims").value == 3
    assert at.segmented_control(key="explore_color").value == "correctness"
    assert at.segmented_control(key="explore_panes").value == "after"
    assert not [c for c in at.caption if "link_off" in c.value]  # nothing refused
    assert {k: at.query_params[k] for k in query} in ({k: v for k, v in query.items()}, {k: [v] for k, v in query.items()})
    at.segmented_control(key="explore_dims").set_value(2).run()
    assert at.query_params["dims"] in ("2", ["2"])  # a widget change reaches the link


def test_picking_another_run_opens_it_in_its_own_space_without_a_note(app_home):
    """The link's space belongs to the run it opened: a run picked later opens in its own trained space, and the
    stale value in the URL is not reported as a bad link."""
    _, ids = app_home
    at = _page("explore", query={"run": ids["lacvit"], "space": "projection"})
    assert at.selectbox(key="explore_output").value == "projection"
    at.selectbox(key="explore_run_pick").select(ids["flyp"]).run()
    assert not at.exception
    assert at.selectbox(key="explore_output").value == "image"
    assert not [c for c in at.caption if "link_off" in c.value]
    assert at.query_params["space"] in ("image", ["image"])


def test_explore_refuses_unknown_and_hostile_url_values_with_a_note(app_home):
    _, ids = app_home
    hostile = "<img src=x onerror=alert(1)>[x](javascript:alert(1))"
    at = _page("explore", query={"run": hostile, "space": "no-such-space", "dims": "9", "color": "**bold**"})
    assert not at.exception
    assert at.selectbox(key="explore_run_pick").value == ids["flyp"]  # the newest run: the default
    assert at.selectbox(key="explore_output").value == "image"  # FLYP's trained space
    assert at.segmented_control(key="explore_dims").value == 2
    notes = [c.value for c in at.caption if "link_off" in c.value]
    assert len(notes) == 4 and all("not available here" in n for n in notes)
    joined = " ".join(notes)
    assert "<img" not in joined.replace("\\<img", "") and "\\<img" in joined and "\\*\\*bold" in joined
    assert "javascript" not in at.query_params.get("run", "")  # the refused value is replaced in the link


def test_explore_follows_a_running_run_from_its_latest_snapshot(app_home, tmp_path, monkeypatch):
    """Issue 17.5: a run still training is listed, opens in its trained space, and shows its before set next to
    its latest val snapshot (the page re-reads it in a run_every fragment; AppTest reruns it by hand)."""
    import shutil

    from core.embeddings import list_snapshots
    from core.store import RunStore

    home, ids = app_home
    finished = RunStore(home)
    src_dir = finished.run_dir(ids["lacvit"])
    store = RunStore(tmp_path)
    run_id = store.create_run(finished.get(ids["lacvit"]).config, status="queued")
    store.set_status(run_id, "running")  # owned by this (live) process: not recovered as interrupted
    shutil.copytree(src_dir / "embeddings" / "before-val", store.run_dir(run_id) / "embeddings" / "before-val")
    first_step, first = list_snapshots(src_dir)[0]
    shutil.copytree(first, store.run_dir(run_id) / "snapshots" / first.name)
    store.set_progress(run_id, {"step": first_step, "total": 6})
    monkeypatch.setenv("EMBEDLAB_HOME", str(tmp_path))
    at = _page("explore")
    assert not at.exception
    assert at.selectbox(key="explore_run_pick").value == run_id
    assert at.selectbox(key="explore_output").value == "projection"
    assert len(at.get("plotly_chart")) == 1
    assert any(f"training · step {first_step} of 6" in c.value for c in at.caption)
    last_step, last = list_snapshots(src_dir)[-1]  # the run moves on: a newer snapshot appears
    shutil.copytree(last, store.run_dir(run_id) / "snapshots" / last.name)
    store.set_progress(run_id, {"step": last_step, "total": 6})
    at.run()
    assert not at.exception and any(f"training · step {last_step} of 6" in c.value for c in at.caption)
    titles = str(json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["annotations"])
    assert "before fine-tuning" in titles and f"step {last_step} (latest snapshot)" in titles


def test_an_old_run_without_the_before_spaces_still_opens_with_a_note(app_home, tmp_path, monkeypatch):
    """A LaCViT run stored before every space was kept: its before set holds only `encoder` and no predictions.
    Explore opens it in `projection` with the after pane only and says why; coloured by correctness, it works."""
    import shutil

    from core.store import RunStore

    home, ids = app_home
    finished = RunStore(home)
    src = finished.get(ids["lacvit"])
    store = RunStore(tmp_path)
    run_id = store.create_run(src.config, status="queued")
    store.set_status(run_id, "running")
    shutil.copytree(finished.run_dir(src.id) / "embeddings", store.run_dir(run_id) / "embeddings")
    for split in ("val", "test", "ood"):  # what the old code stored before fine-tuning
        folder = store.run_dir(run_id) / "embeddings" / f"before-{split}"
        meta = json.loads((folder / "meta.json").read_text())
        meta.pop("pred_source")
        meta["outputs"] = ["encoder"]
        (folder / "meta.json").write_text(json.dumps(meta))
        for name in ("vec-projection.npy", "vec-logits.npy", "preds.npy"):
            (folder / name).unlink()
    store.update_summary(run_id, src.summary)
    store.set_status(run_id, "finished")
    monkeypatch.setenv("EMBEDLAB_HOME", str(tmp_path))
    at = _page("explore", query={"color": "correctness"})
    assert not at.exception
    assert at.selectbox(key="explore_output").value == "projection"
    assert at.segmented_control(key="explore_panes").disabled
    assert any("has no `projection` space" in c.value for c in at.caption)
    at.selectbox(key="explore_output").select("encoder").run()  # both panes; the before one has no predictions
    assert not at.exception and not at.segmented_control(key="explore_panes").disabled


def test_explore_trajectory_frame_and_rescale_come_from_the_link(app_home):
    _, ids = app_home
    at = _page("explore", query={"run": ids["lacvit"], "frame": "4", "rescale": "1"})  # snapshots at steps 0, 3, 6
    assert not at.exception
    assert at.toggle(key="explore_traj").value and at.toggle(key="explore_rescale").value
    assert at.select_slider(key="explore_frame").value == 3  # the nearest stored frame
    assert at.query_params["frame"] in ("3", ["3"]) and at.query_params["rescale"] in ("1", ["1"])
    at.select_slider(key="explore_frame").set_value(0).run()
    assert not at.exception and at.query_params["frame"] in ("0", ["0"])
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert fig["layout"]["sliders"][0]["active"] == 0


def test_explore_query_param_picks_the_run(app_home):
    _, ids = app_home
    at = _page("explore", query={"run": ids["ce"]})
    assert not at.exception
    assert at.selectbox(key="explore_run_pick").value == ids["ce"]


def test_compare_defaults_to_the_trio(app_home):
    _, ids = app_home
    at = _page("compare")
    assert not at.exception
    assert at.multiselect(key="compare_pick").value == [ids["ce"], ids["lacvit"], ids["flyp"]]
    assert len(at.table) == 1
    charts = at.get("plotly_chart")
    assert len(charts) == 5  # histograms, per-class accuracy, confusion matrices, WiSE-FT, ID-OOD frontier
    assert len(at.get("download_button")) == 3


def test_explore_and_compare_show_the_ood_split(app_home):
    _, ids = app_home
    at = _page("explore", state={"explore_run": ids["ce"]})
    assert "ood" in at.segmented_control(key="explore_split").options
    at.segmented_control(key="explore_split").set_value("ood").run()
    assert not at.exception
    assert at.metric[0].label == "ood accuracy"
    at = _page("compare", state={"compare_split": "ood"})
    assert not at.exception
    assert any(row == "OOD accuracy (top-1, shifted test)" for row in at.table[0].value.index)


def test_compare_shows_each_run_in_its_own_trained_space_and_can_share_one(app_home):
    """Issue 17.1: CE in its encoder space, LaCViT in its projection head's, FLYP in its image embedding's;
    the encoder (and logits) space every run stored can be shared instead, and the choice is in the link."""
    _, ids = app_home
    at = _page("compare")
    assert not at.exception
    control = at.segmented_control(key="compare_space")
    assert control.value == "trained" and control.options == ["each run's trained space", "shared: encoder", "shared: logits"]
    caption = next(c.value for c in at.caption if "the space its objective trains" in c.value)
    assert caption.index("`encoder`") < caption.index("`projection`") < caption.index("`image`")
    assert at.query_params["space"] in ("trained", ["trained"])
    control.set_value("encoder").run()
    assert not at.exception
    assert any("every run in the shared `encoder` space" in c.value for c in at.caption)
    assert at.query_params["space"] in ("encoder", ["encoder"])


def test_compare_reads_its_view_from_the_url_and_leaves_out_unknown_runs(app_home):
    _, ids = app_home
    at = _page("compare", query={"run": [ids["ce"], "no-such-run", ids["flyp"]], "space": "logits", "dims": "3",
                                 "align": "sideways"})
    assert not at.exception
    assert at.multiselect(key="compare_pick").value == [ids["ce"], ids["flyp"]]
    assert at.segmented_control(key="compare_space").value == "logits"
    assert at.segmented_control(key="compare_dims").value == 3
    assert at.segmented_control(key="compare_align").value == "procrustes"
    notes = [c.value for c in at.caption if "link_off" in c.value]
    assert len(notes) == 2 and "no-such-run" in notes[0] and "left out" in notes[0] and "sideways" in notes[1]


def test_compare_reads_session_state_and_needs_two(app_home):
    _, ids = app_home
    at = _page("compare", state={"compare_runs": [ids["ce"], ids["lacvit"]]})
    assert not at.exception
    assert at.multiselect(key="compare_pick").value == [ids["ce"], ids["lacvit"]]
    assert len(at.get("plotly_chart")) == 3  # no FLYP: no WiSE-FT curve
    at.multiselect(key="compare_pick").set_value([ids["ce"]]).run()
    assert not at.exception and "at least two" in at.info[0].value


def test_pages_without_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDLAB_HOME", str(tmp_path))
    for name in ("explore", "compare"):
        at = _page(name)
        assert not at.exception
        assert at.info and "Train" in at.info[0].value


def test_compare_colours_by_agreement(app_home):
    _, ids = app_home
    at = _page("compare")
    at.segmented_control(key="compare_color").set_value("agreement").run()
    assert not at.exception
    assert any("right in every run" in c.value for c in at.caption)


def _wait_for_projections():
    from core import projections

    for future, _ in list(projections._JOBS.values()):
        future.exception(timeout=300)


def test_explore_shows_pca_at_once_then_umap_with_intervals(app_home):
    _, ids = app_home
    at = _page("explore", state={"explore_run": ids["ce"], "explore_method": "umap"})
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "95 % CI" in captions  # every accuracy shows its interval
    if "computing…" in captions:  # the first visit: PCA now, UMAP in the background
        assert "PCA 2-D of" in captions
    _wait_for_projections()
    at.run()
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "UMAP 2-D of" in captions and "computing…" not in captions


def test_compare_shows_intervals_and_umap_when_ready(app_home):
    at = _page("compare", state={"compare_method": "umap"})
    assert not at.exception
    _wait_for_projections()
    at.run()
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "95 % CI" in captions and "UMAP 2-D" in captions
