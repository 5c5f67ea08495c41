"""AppTest: Compare shows the runs' settings, warns when they differ beyond the objective, and picks a batch."""
import json
import shutil
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).parent))
from explore_runs import tiny_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _copy_run(src, run_id, dst, **changes) -> str:
    """A finished run in store `dst` with run_id's stored embeddings and summary, its config changed by `changes`
    (as if trained with those settings: what Compare reads is the stored config)."""
    rec = src.get(run_id)
    config = {**rec.config, **changes}
    new = dst.create_run(config, status="finished")
    shutil.copytree(src.run_dir(run_id), dst.run_dir(new), dirs_exist_ok=True)
    (dst.run_dir(new) / "config.json").write_text(json.dumps(config))
    dst.update_summary(new, {**rec.summary, "steps": config["steps"]})
    dst.set_status(new, "finished")
    return new


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A home with CE at 6 steps, then LaCViT and CE at 20 steps (the last two: one comparison batch)."""
    from core.store import RunStore

    home, ids = tiny_runs(tmp_path_factory.getbasetemp(), objectives=("ce", "lacvit"))
    src, dst = RunStore(home), RunStore(tmp_path_factory.mktemp("mixed-home"))
    short_ce = _copy_run(src, ids["ce"], dst)
    lacvit = _copy_run(src, ids["lacvit"], dst, steps=20)
    long_ce = _copy_run(src, ids["ce"], dst, steps=20)
    return dst.root, {"ce6": short_ce, "lacvit20": lacvit, "ce20": long_ce}


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
