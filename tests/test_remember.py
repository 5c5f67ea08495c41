"""core/remember.py: the Train page's per-person memory (form values and batches of runs)."""
import pytest

from core.errors import UnsafePath
from core.remember import MAX_BATCHES, forget_batches, recall_batches, recall_form, remember_batch, remember_form


def test_form_values_are_kept_per_person_plain_values_only(tmp_path):
    remember_form(tmp_path, "a" * 32, {"steps": 400, "objectives": ["ce"], "lr": 1e-3, "upload": object()})
    assert recall_form(tmp_path, "a" * 32) == {"steps": 400, "objectives": ["ce"], "lr": 1e-3}
    assert recall_form(tmp_path, "b" * 32) == {}  # someone else's form is not yours


def test_batches_newest_first_capped_and_forgotten(tmp_path):
    for i in range(MAX_BATCHES + 3):
        remember_batch(tmp_path, "local", [f"run-{i}"])
    batches = recall_batches(tmp_path, "local")
    assert len(batches) == MAX_BATCHES and batches[0] == [f"run-{MAX_BATCHES + 2}"]
    forget_batches(tmp_path, "local", [["run-1"]])
    assert recall_batches(tmp_path, "local") == [["run-1"]]


def test_a_broken_file_reads_empty_and_an_unsafe_owner_is_refused(tmp_path):
    (tmp_path / "people").mkdir()
    (tmp_path / "people" / "local.json").write_text("{not json")
    assert recall_form(tmp_path, "local") == {} and recall_batches(tmp_path, "local") == []
    with pytest.raises(UnsafePath):
        remember_form(tmp_path, "../etc", {})

