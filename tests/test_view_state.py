"""core/view_state.py: the URL state of Explore / Compare, under unknown and hostile values."""
import pytest

from core.safe_text import md_text
from core.view_state import (VIEW_KEYS, UrlState, changed_params, page_bounds, page_caption, shown, to_params)

from hostile_names import HOSTILE_CLASSES

RUNS = ["20261201-0001-aaaa", "20261201-0002-bbbb", "20261201-0003-cccc"]


def test_known_values_are_read_back_as_the_options_themselves():
    url = UrlState({"run": "20261201-0002-bbbb", "dims": ["3"], "proj": "umap", "frame": "7", "rescale": "1"})
    assert url.choice("run", RUNS, RUNS[0], what="run") == RUNS[1]
    assert url.choice("dims", [2, 3], 2) == 3  # the option object, an int, not the string
    assert url.choice("proj", ["pca", "umap", "tsne"], "pca") == "umap"
    assert url.integer("frame", 0, 29, 29) == 7
    assert url.flag("rescale", False) is True
    assert url.notes == []


def test_absent_values_give_the_default_silently():
    url = UrlState({})
    assert url.choice("run", RUNS, RUNS[0]) == RUNS[0] and url.choices("run", RUNS, limit=4) == []
    assert url.integer("frame", 0, 3, 3) == 3 and url.notes == []


@pytest.mark.parametrize("value", ["no-such-run", "../../etc/passwd", "", " " * 3, "x" * 5000, *HOSTILE_CLASSES])
def test_unknown_or_hostile_values_fall_back_with_one_inert_note(value):
    url = UrlState({"run": value, "space": value, "dims": value})
    assert url.choice("run", RUNS, RUNS[0], what="run") == RUNS[0]
    assert url.choice("space", ["encoder", "projection"], "projection", what="space") == "projection"
    assert url.choice("dims", [2, 3], 2) == 2
    assert len(url.notes) == 3
    for note in url.notes:
        assert len(note) < 200 and "\n" not in note  # a 5,000-character value is not repeated whole
        rendered = md_text(note)
        for danger in ("<img", "<iframe", "](", "**"):  # nothing the Markdown renderer would act on
            assert danger not in rendered.replace("\\<", "").replace("\\]", "").replace("\\*", "")


@pytest.mark.parametrize("value", ["-1", "30", "1e3", "7.5", "0x10", "１", "99999999999999999999"])
def test_frame_must_be_a_whole_number_in_range(value):
    url = UrlState({"frame": value})
    assert url.integer("frame", 0, 29, 29, what="frame") == 29
    assert "not a whole number from 0 to 29" in url.notes[0]


def test_many_runs_keep_the_known_ones_in_order_without_repeats_and_cap():
    url = UrlState({"run": [RUNS[2], "nope", RUNS[0], RUNS[2], "<b>x</b>", RUNS[1]]})
    assert url.choices("run", RUNS, limit=2, what="run") == [RUNS[2], RUNS[0]]
    assert "'nope', '<b>x</b>'" in url.notes[0] and "left out" in url.notes[0]
    assert "showing the first 2" in url.notes[1]


def test_written_params_hold_only_view_keys_never_an_identity():
    state = {"run": RUNS[:2], "dims": 3, "rescale": False, "frame": None, "owner_id": "abc", "name": "Ann",
             "embedlab_owner": "tok", "space": "projection"}
    params = to_params(state)
    assert params == {"run": RUNS[:2], "dims": "3", "rescale": "0", "space": "projection"}
    assert set(params) <= set(VIEW_KEYS)


def test_only_changed_params_are_written():
    current = {"run": [RUNS[0]], "dims": ["2"], "other": ["kept"]}
    assert changed_params(current, {"run": RUNS[0], "dims": 2}) == {}
    assert changed_params(current, {"run": RUNS[0], "dims": 3, "split": "test"}) == {"dims": "3", "split": "test"}


def test_a_written_view_reads_back_to_itself():
    state = {"run": RUNS[1], "split": "ood", "proj": "tsne", "dims": 3, "color": "correctness", "space": "logits",
             "frame": 12, "rescale": True}
    url = UrlState(to_params(state))
    back = {"run": url.choice("run", RUNS, RUNS[0]), "split": url.choice("split", ["val", "test", "ood"], "val"),
            "proj": url.choice("proj", ["pca", "umap", "tsne"], "pca"), "dims": url.choice("dims", [2, 3], 2),
            "color": url.choice("color", ["label", "prediction", "correctness"], "label"),
            "space": url.choice("space", ["encoder", "logits"], "encoder"), "frame": url.integer("frame", 0, 29, 0),
            "rescale": url.flag("rescale", False)}
    assert back == state and url.notes == []


def test_grid_pages_cover_every_selected_image():
    assert page_bounds(189, 1, 48) == (0, 48, 4)
    assert page_bounds(189, 4, 48) == (144, 189, 4)
    assert page_bounds(189, 99, 48) == (144, 189, 4)  # clamped
    assert page_bounds(0, 1, 48) == (0, 0, 1)
    covered = [i for p in range(1, 5) for i in range(*page_bounds(189, p, 48)[:2])]
    assert covered == list(range(189))
    assert page_caption(189, 0, 48) == "48 of 189 (1–48)" and page_caption(20, 0, 20) == "all 20"
    assert shown("a\nb   c") == "a b c"
