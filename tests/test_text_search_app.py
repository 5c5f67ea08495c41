"""AppTest: Explore's text-search panel (FLYP: search, grid, star caption; CE on test_vit: why it is absent)
and Compare's confusion-cell grid, on tiny real runs (no browser)."""
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).parent))
from explore_runs import tiny_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def app_home(tmp_path_factory, monkeypatch):
    home, ids = tiny_runs(tmp_path_factory.getbasetemp(), ("ce", "flyp"))
    monkeypatch.setenv("EMBEDLAB_HOME", str(home))
    return home, ids


def _explore(run_id: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.session_state["explore_run"] = run_id
    return at.switch_page("pages/explore.py").run()


def _texts(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error])


def test_text_search_panel_searches_a_flyp_run(app_home):
    _, ids = app_home
    at = _explore(ids["flyp"])
    assert not at.exception
    assert [e.label for e in at.expander if e.label == "Search by text"]
    assert "Type a phrase" in _texts(at)
    at.text_input(key="explore_text").input("handwritten digit three").run()
    assert not at.exception
    text = _texts(at)
    assert "**after fine-tuning** · the 12 nearest images" in text and "**before fine-tuning**" in text
    assert "a photo of a handwritten digit three." in text and "(averaged)" in text  # the class-prompt templates
    assert "Black star in the plot: the phrase, placed exactly (PCA" in text
    at.segmented_control(key="explore_text_templates").set_value("never").run()
    assert not at.exception and "Embedded as `handwritten digit three`;" in _texts(at)


def test_a_hostile_phrase_stays_text(app_home):
    _, ids = app_home
    at = _explore(ids["flyp"])
    at.text_input(key="explore_text").input("<b>x</b> **bold** :red[y] [l](http://e.x)").run()
    assert not at.exception
    caption = next(c.value for c in at.caption if c.value.startswith("Embedded as"))
    assert "`<b>x</b> **bold** :red[y] [l](http://e.x)`" in caption  # one inline code span: shown, not rendered


def test_text_search_panel_says_why_a_ce_run_has_none(app_home):
    _, ids = app_home
    at = _explore(ids["ce"])
    assert not at.exception
    assert not at.text_input  # no phrase box
    assert "Text search needs a backbone with a text tower; this run's test_vit has none" in _texts(at)
