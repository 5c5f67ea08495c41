"""The scatter component's payload: colour categories and the typed arrays the browser decodes."""
import base64

import numpy as np
import pytest

from assets.scatter_component import AGREEMENT_COLOURS, CORRECT_COLOURS, agreement_categories, build_payload, categories


def _decode(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


LABELS = np.array([0, 1, 2, 1])
PREDS = np.array([0, 2, 2, 0])


def test_categories_by_label_prediction_and_correctness():
    cat, cats = categories(LABELS, PREDS, ["a", "b", "c"], "label")
    assert cat.tolist() == [0, 1, 2, 1] and [c["name"] for c in cats] == ["a", "b", "c"]
    cat, cats = categories(LABELS, PREDS, ["a", "b", "c"], "prediction")
    assert cat.tolist() == [0, 2, 2, 0] and cats[2]["name"] == "pred c"
    cat, cats = categories(LABELS, PREDS, ["a", "b", "c"], "correctness")
    assert cat.tolist() == [0, 1, 0, 1] and [c["color"] for c in cats] == list(CORRECT_COLOURS.values())
    cat, _ = categories(LABELS, None, ["a", "b", "c"], "correctness")  # no predictions: by label
    assert cat.tolist() == LABELS.tolist()


def test_agreement_counts_the_runs_that_are_right():
    run_a = np.array([0, 1, 0, 0])  # right, right, wrong, wrong
    run_b = np.array([0, 2, 1, 0])  # right, wrong, wrong, wrong
    cat, cats = agreement_categories(LABELS, [run_a, run_b])
    assert cat.tolist() == [0, 1, 2, 2]
    assert [c["name"] for c in cats] == list(AGREEMENT_COLOURS)
    cat, _ = agreement_categories(LABELS, [run_a])  # one run: right or wrong, never "some"
    assert cat.tolist() == [0, 0, 2, 2]


def _panes(preds_a, preds_b):
    pts = np.arange(8, dtype=np.float32).reshape(4, 2)
    return [{"title": "A", "points": pts, "preds": preds_a}, {"title": "B", "points": -pts, "preds": preds_b}]


def test_payload_carries_each_pane_and_its_own_predictions():
    ids = np.array([10, 11, 12, 13])
    run_a, run_b = np.array([0, 1, 0, 0]), np.array([0, 2, 1, 0])
    payload = build_payload(_panes(run_a, run_b), ids=ids, labels=LABELS, preds=None, class_names=["a", "b", "c"],
                            color_by="agreement")
    assert _decode(payload["ids"], "<i4").tolist() == ids.tolist()
    assert _decode(payload["cat"], "<u2").tolist() == [0, 1, 2, 2]
    assert payload["preds"] is None
    a, b = payload["panes"]
    assert _decode(a["preds"], "<i2").tolist() == run_a.tolist() and _decode(b["preds"], "<i2").tolist() == run_b.tolist()
    assert _decode(b["x"], "<f4").tolist() == [0.0, -2.0, -4.0, -6.0] and b["z"] is None
    by_label = build_payload(_panes(run_a, run_b), ids=ids, labels=LABELS, preds=None, class_names=["a", "b", "c"])
    assert _decode(by_label["cat"], "<u2").tolist() == LABELS.tolist()
    assert by_label["data_key"] != payload["data_key"]  # a recolour is new data for the browser


@pytest.mark.parametrize("color_by", ["agreement", "label"])
def test_agreement_without_any_predictions_falls_back_to_labels(color_by):
    payload = build_payload(_panes(None, None), ids=np.arange(4), labels=LABELS, preds=None, class_names=["a", "b", "c"],
                            color_by=color_by)
    assert _decode(payload["cat"], "<u2").tolist() == LABELS.tolist()
    assert all(p["preds"] is None for p in payload["panes"])


def test_groups_override_the_colouring():
    selected = np.array([True, False, False, True])
    groups = (np.where(selected, 0, 1), [{"name": "selected (2)", "color": "#111111"}, {"name": "rest", "color": "#c9c9c9"}])
    payload = build_payload(_panes(None, None), ids=np.arange(4), labels=LABELS, preds=PREDS, class_names=["a", "b", "c"],
                            color_by="correctness", groups=groups)
    assert _decode(payload["cat"], "<u2").tolist() == [0, 1, 1, 0]
    assert [c["name"] for c in payload["categories"]] == ["selected (2)", "rest"]


def test_explore_before_pane_is_coloured_by_its_own_predictions():
    """Issue 17.1: the before pane's correctness colours come from the before model, not the fine-tuned one."""
    before_preds = np.array([1, 1, 0, 1])  # wrong, right, wrong, right
    pts = np.zeros((4, 2))
    panes = [{"title": "before", "points": pts, "preds": before_preds, "own_preds": True},
             {"title": "after", "points": pts, "preds": PREDS, "own_preds": True}]
    payload = build_payload(panes, ids=np.arange(4), labels=LABELS, preds=PREDS, class_names=["a", "b", "c"],
                            color_by="correctness")
    assert _decode(payload["panes"][0]["cat"], "<u2").tolist() == [1, 0, 1, 0]
    assert _decode(payload["panes"][1]["cat"], "<u2").tolist() == [0, 1, 0, 1]
    old = build_payload([{**panes[0], "preds": None}, panes[1]], ids=np.arange(4), labels=LABELS, preds=PREDS,
                        class_names=["a", "b", "c"], color_by="correctness")  # an old run's before set: no preds
    assert old["panes"][0]["no_preds"] and old["categories"][-1]["name"] == "no prediction stored"
    assert set(_decode(old["panes"][0]["cat"], "<u2").tolist()) == {len(old["categories"]) - 1}
    by_label = build_payload(panes, ids=np.arange(4), labels=LABELS, preds=PREDS, class_names=["a", "b", "c"])
    assert "cat" not in by_label["panes"][0]  # label colours are the same in every pane
