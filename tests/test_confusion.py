"""core/confusion.py: the ids in a confusion cell, the cells worth opening, paging, and the clickable figure;
Compare's cell grid (AppTest on tiny real runs)."""
import sys
from pathlib import Path

import numpy as np
import pytest

from core import confusion
from core.metrics import confusion_matrix
from core.safe_text import md_text

sys.path.insert(0, str(Path(__file__).parent))
from explore_runs import tiny_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_cell_ids_partition_the_samples_as_the_confusion_matrix_counts_them():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    ids = rng.permutation(10_000)[:300]
    cm = confusion_matrix(labels, preds, 4)
    seen = []
    for t in range(4):
        for p in range(4):
            got = confusion.cell_ids(ids, labels, preds, t, p)
            assert len(got) == cm[t, p]
            rows = np.flatnonzero(np.isin(ids, got))
            assert np.all(labels[rows] == t) and np.all(preds[rows] == p)
            assert list(got) == list(ids[rows])  # stored order
            seen += got.tolist()
    assert sorted(seen) == sorted(ids.tolist())
    with pytest.raises(ValueError, match="differ in length"):
        confusion.cell_ids(ids[:3], labels, preds, 0, 1)


def test_worst_cells_are_the_off_diagonal_ones_most_first():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 1, 1, 0, 1, 0, 1, 1, 2])
    assert confusion.worst_cells(labels, preds, 3) == [(0, 1, 2), (2, 1, 2), (1, 0, 1), (2, 0, 1)]
    assert confusion.worst_cells(labels, labels, 3) == []


def test_pages_say_k_to_m_of_n():
    items = list(range(189))
    shown, text, pages = confusion.page_of(items, 1, 48)
    assert shown == items[:48] and text == "1–48 of 189" and pages == 4
    shown, text, _ = confusion.page_of(items, 4, 48)
    assert shown == items[144:] and text == "145–189 of 189"
    assert confusion.page_of(items, 99, 48)[1] == "145–189 of 189"  # past the end: the last page
    assert confusion.page_of([], 1)[1:] == ("0 of 0", 1)


def test_every_cell_of_the_figure_is_a_click_target_that_names_its_cell():
    cm_a, cm_b = [[3, 1], [0, 4]], [[2, 2], [1, 3]]
    fig = confusion.clickable_confusion_figure(["<b>cat</b>", "dog"], [("CE", cm_a), ("FLYP", cm_b)])
    markers = [t for t in fig.data if t.type == "scatter"]
    assert len(markers) == 2 and all(len(t.customdata) == 4 for t in markers)
    cells = {confusion.point_cell({"customdata": list(c)}) for t in markers for c in t.customdata}
    assert cells == {(s, t, p) for s in (0, 1) for t in (0, 1) for p in (0, 1)}
    second = markers[1]
    k = [tuple(c) for c in second.customdata].index((1, 1, 0))
    assert second.text[k] == "1 (25%)" and second.y[k] == "dog" and second.x[k] == "&lt;b&gt;cat&lt;/b&gt;"  # names inert
    assert confusion.point_cell({"x": 1}) is None and confusion.point_cell({"customdata": ["a", 1, 2]}) is None


@pytest.fixture
def app_home(tmp_path_factory, monkeypatch):
    home, ids = tiny_runs(tmp_path_factory.getbasetemp(), ("ce", "flyp"))
    monkeypatch.setenv("EMBEDLAB_HOME", str(home))
    return home, ids


def test_compare_opens_a_confusion_cell_with_its_images(app_home):
    from streamlit.testing.v1 import AppTest

    from core import report
    from core.store import RunStore

    home, ids = app_home
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=240)
    at.session_state["compare_runs"] = [ids["ce"], ids["flyp"]]
    at = at.switch_page("pages/compare.py").run()
    assert not at.exception
    picker = at.selectbox(key="compare_confusion_cell")
    assert picker.value is None and picker.options
    view = report.load_run_view(RunStore(home), ids["flyp"], "val")
    t, p, n = confusion.worst_cells(view.after.labels, view.after.preds, len(view.after.classes))[0]
    cell = f"1:{t}:{p}"  # series 1: the FLYP run, its fullest off-diagonal cell
    assert any(o.endswith(f"true {view.after.classes[t]} → predicted {view.after.classes[p]} ({n})") for o in picker.options)
    at.selectbox(key="compare_confusion_cell").set_value(cell).run()
    assert not at.exception
    heading = next(m.value for m in at.markdown if "(misclassified) · images" in m.value)
    shown = min(n, confusion.PER_PAGE)
    assert f"true **{view.after.classes[t]}**, predicted **{view.after.classes[p]}**" in heading
    assert f"images 1–{shown} of {n}" in heading
    captions = [c for el in at.get("image") for c in el.captions]
    want = {md_text(f"#{i}") for i in confusion.cell_ids(view.after.ids, view.after.labels, view.after.preds, t, p)}
    assert want <= set(captions)
