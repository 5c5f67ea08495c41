"""AppTest: Compare shows the runs' settings, warns when they differ beyond the objective, and picks a batch."""
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).parent))
from explore_runs import mixed_step_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return mixed_step_runs(tmp_path_factory.getbasetemp())


def _settings(at):
    """The settings table (the dataframe indexed by setting; AppTest gives dataframes no key)."""
    return next(d.value for d in at.dataframe if d.value.index.name == "setting")


def _compare(home, monkeypatch, state=None) -> AppTest:
    monkeypatch.setenv("EMBEDLAB_HOME", str(home))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    return at.switch_page("pages/compare.py").run()


def test_compare_warns_when_runs_differ_beyond_the_objective(mixed, monkeypatch):
    home, ids = mixed
    at = _compare(home, monkeypatch, {"compare_runs": [ids["ce6"], ids["lacvit20"]]})
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("Not like with like" in w and "steps: 6 vs 20" in w for w in warnings), warnings
    settings = _settings(at)
    assert list(settings.loc["steps"]) == ["6", "20"]
    assert [c.split(" · ")[-1] for c in settings.columns] == ["steps 6", "steps 20"]  # labels carry the difference
    assert len(at.table) == 1 and "steps 20" in " ".join(at.table[0].value.columns)  # the metrics table's columns too


def test_compare_picks_one_comparison_batch_and_then_does_not_warn(mixed, monkeypatch):
    home, ids = mixed
    at = _compare(home, monkeypatch, {"compare_runs": [ids["ce6"], ids["lacvit20"]]})
    picker = at.selectbox(key="compare_batch")
    assert picker.options and len(picker.options) == 1  # the 6-step CE has no partner: no batch of its own
    assert picker.options[0].startswith("LaCViT, CE · digits · steps 20 · lr 0.001 · batch 16")
    picker.select(f"{ids['lacvit20']}+{ids['ce20']}").run()  # a batch's value: its run ids, in submission order
    assert not at.exception
    assert sorted(at.multiselect(key="compare_pick").value) == sorted([ids["lacvit20"], ids["ce20"]])
    assert not any("Not like with like" in w.value for w in at.warning)
    assert "steps" in _settings(at).index  # still shown, not highlighted
