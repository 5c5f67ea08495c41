"""Hostile names stay inert (issue 15, deliverable 1): class names are the user's zip folder names, and
every page, the scatter component, the Plotly figures and the exports must show them, and dataset names,
run ids and query parameters, as text.

Pages go through AppTest: every string an element renders as Markdown (bodies, labels, captions, help,
table cells) must render to no live tag (CommonMark with raw HTML on, stricter than Streamlit), and every
string Plotly draws must start no tag. A real browser replays it in tests/e2e/test_hostile_names.py.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.safe_text import html_text, md_text, plotly_text
from core.store import RunStore
from core.train import TrainConfig

from helpers import REPO, app_manager, one_torch_thread
from hostile_names import HOSTILE_CLASSES, live_markup, markdown_problems, plotly_problems, strings_in

from .kit import InstantTrain, make_zip, png

_MARKDOWN_FIELDS = {"body", "label", "caption", "help", "text"}  # proto fields Streamlit renders as Markdown
_APP = str(REPO / "app.py")


def _hostile_zip(path, classes=HOSTILE_CLASSES, per_class=8):
    return make_zip(path, {f"{c}/{i}.png": png(seed=k * 100 + i, size=(16, 16))
                           for k, c in enumerate(classes) for i in range(per_class)})


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory):
    """An EMBEDLAB_HOME with the hostile-class dataset imported through the real import path, and a tiny
    finished CE and LaCViT run trained on it."""
    from core.dataset_import import import_dataset
    from core.train import train

    home = tmp_path_factory.mktemp("hostile-home")
    report = import_dataset(_hostile_zip(home.parent / "hostile.zip"), "hostile", root=home)
    assert sorted(report.counts) == sorted(HOSTILE_CLASSES)
    store = RunStore(home)
    with one_torch_thread():
        for objective in ("ce", "lacvit"):
            result = train(TrainConfig(objective=objective, steps=3, backbone="test_vit", dataset="hostile", n_per_class=4,
                                       eval_per_class=2, batch_size=4, trainable="all"), store=store, root=home)
            assert result["status"] == "finished", result
    return home


def _nodes(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


def _proto_strings(message, fields):
    """(field name, value) of every string field named in `fields`, anywhere inside a proto message."""
    for desc, value in message.ListFields():
        if desc.type not in (desc.TYPE_MESSAGE, desc.TYPE_STRING):
            continue
        items = [value] if isinstance(value, str) or hasattr(value, "ListFields") else list(value)  # repeated: a list
        if desc.type == desc.TYPE_MESSAGE:
            for item in items:
                yield from _proto_strings(item, fields)
        elif desc.type == desc.TYPE_STRING and desc.name in fields:
            for item in items:
                yield desc.name, item


def _problems(at) -> list[str]:
    """Everything on the rendered page that a user string turned into live markup."""
    found = []
    for node in _nodes(at._tree):
        proto = getattr(node, "proto", None)
        if proto is None:
            continue
        for field_name, text in _proto_strings(proto, _MARKDOWN_FIELDS):
            found += [f"{node.type}.{field_name}: {p} in {text!r}" for p in markdown_problems(text)]
        if node.type == "table":
            for cell in [*map(str, node.value.columns), *map(str, node.value.index)]:
                found += [f"table: {p} in {cell!r}" for p in markdown_problems(cell)]
        for _, spec in _proto_strings(proto, {"spec"}):  # st.plotly_chart
            found += [f"plotly: {s!r}" for s in plotly_problems(json.loads(spec))]
        for _, args in _proto_strings(proto, {"json_args"}):  # the scatter component: what Plotly draws
            payload = json.loads(args).get("payload") or {}
            drawn = [payload.get("categories"), [(p["title"], p["anchors"]) for p in payload.get("panes", [])]]
            found += [f"scatter payload: {s!r}" for s in plotly_problems(drawn)]
    return found


def _page(page: str, *, state=None, query=None) -> AppTest:
    at = AppTest.from_file(_APP, default_timeout=180)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    if page != "pages/train.py":
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _shown(at) -> str:
    """All Markdown sources on the page, one string (to look for the escaped names)."""
    return "\n".join(text for node in _nodes(at._tree) if getattr(node, "proto", None) is not None
                     for _, text in _proto_strings(node.proto, _MARKDOWN_FIELDS))


def test_a_hostile_class_name_is_text_on_the_train_page(hostile_home, monkeypatch):
    """Row: a zip class folder named `<iframe srcdoc=...>` ran its script for every user who picked the dataset."""
    monkeypatch.setenv("EMBEDLAB_HOME", str(hostile_home))
    with app_manager(hostile_home, monkeypatch, InstantTrain()):
        at = _page("pages/train.py", state={"dataset": "hostile"})
    assert _problems(at) == []
    assert not [m for m in at.markdown if m.proto.allow_html]  # no HTML in the preview at all
    shown = _shown(at)
    for name in HOSTILE_CLASSES:  # the preview names every class, escaped, as text
        assert md_text(name) in shown, name
    counts = next(c for c in at.get("plotly_chart") if "class_counts" in c.proto.id)
    assert sorted(json.loads(counts.proto.spec)["data"][0]["y"]) == sorted(map(plotly_text, HOSTILE_CLASSES))


@pytest.mark.parametrize("page", ["pages/train.py", "pages/explore.py", "pages/compare.py", "pages/runs.py",
                                  "pages/learn.py"])
def test_hostile_class_names_are_text_on_every_page(hostile_home, monkeypatch, page):
    monkeypatch.setenv("EMBEDLAB_HOME", str(hostile_home))
    at = _page(page, state={"dataset": "hostile"})
    assert _problems(at) == []


def test_the_scatter_component_builds_text_nodes_and_cannot_run_markup():
    """Row: a class named `<img src=x onerror=...>` ran when hovering a point in Explore (tooltip innerHTML;
    the component's iframe reaches the app page)."""
    from assets.scatter_component import build_payload

    frontend = REPO / "assets" / "scatter_component" / "frontend"
    for js in (REPO / "assets").rglob("*.js"):
        text = js.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "window.top", "parent.document"):
            assert sink not in text, (js, sink)
        # the frame speaks to its parent only through Streamlit's postMessage protocol, and listens only to it
        assert set(re.findall(r"window\.parent\.?\w*", text)) <= {"window.parent.postMessage", "window.parent"}, js
    assert "ev.source !== window.parent" in (frontend / "main.js").read_text()
    html = (frontend / "index.html").read_text()
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp and html.index(csp.group(0)) < html.index("<script"), "the policy must come before any script"
    policy = dict(part.strip().split(" ", 1) for part in csp.group(1).split(";"))
    assert policy["script-src"].split() == ["'self'", "'unsafe-eval'"]  # no 'unsafe-inline': no handler, no inline script
    assert policy["object-src"] == "'none'" and policy["frame-src"] == "'none'" and policy["base-uri"] == "'none'"

    pts = np.zeros((4, 2), np.float32)
    payload = build_payload([{"title": HOSTILE_CLASSES[0], "points": pts, "anchors": np.zeros((4, 2))}],
                            ids=np.arange(4), labels=np.arange(4), preds=np.arange(4), class_names=HOSTILE_CLASSES)
    drawn = [payload["categories"], [(p["title"], p["anchors"]) for p in payload["panes"]]]
    assert plotly_problems(drawn) == []  # legend names, pane titles, anchor labels: escaped for Plotly
    assert payload["class_names"] == HOSTILE_CLASSES  # raw: the tooltip puts them in text nodes


@pytest.mark.parametrize("wanted", ["[click](https://evil.example/)", "x` [click](https://evil.example/) `y",
                                    "<img src=x onerror=alert(1)>", "https://evil.example/"])
def test_a_hostile_run_query_parameter_is_text_on_explore(hostile_home, monkeypatch, wanted):
    """Row: `?run=` with Markdown in it on Explore rendered a live link in the caption."""
    monkeypatch.setenv("EMBEDLAB_HOME", str(hostile_home))
    at = _page("pages/explore.py", query={"run": wanted})
    note = [c.value for c in at.caption if "The link's run" in c.value]  # core/view_state.py's note, via md_text
    assert len(note) == 1 and "is not available here; showing" in note[0], [c.value for c in at.caption]
    assert markdown_problems(note[0]) == [] and _problems(at) == []


def test_an_overwritten_dataset_is_previewed_anew(tmp_path, monkeypatch):
    """Row: re-import with --overwrite while the app shows the old preview: it stayed until a restart."""
    from core.dataset_import import import_dataset
    from pages import _cached

    home = tmp_path / "home"
    monkeypatch.setenv("EMBEDLAB_HOME", str(home))
    import_dataset(_hostile_zip(tmp_path / "old.zip", ["tabby", "beagle"], 4), "pets", root=home)
    with app_manager(home, monkeypatch, InstantTrain()):
        at = _page("pages/train.py", state={"dataset": "pets"})
        assert "tabby" in _shown(at) and "beagle" in _shown(at)
        assert _cached.dataset(str(home), "pets").classes == ["beagle", "tabby"]
        new = ["robin", "trout", HOSTILE_CLASSES[0]]
        import_dataset(_hostile_zip(tmp_path / "new.zip", new, 4), "pets", root=home, overwrite=True)
        at.run()  # the same session, the same server process
        assert not at.exception
        shown = _shown(at)
        assert all(md_text(c) in shown for c in new) and "tabby" not in shown and "beagle" not in shown
        assert _problems(at) == []
    assert _cached.dataset(str(home), "pets").classes == sorted(new)


def test_the_reports_and_every_figure_keep_hostile_names_as_text(hostile_home):
    """The HTML reports, every Plotly figure of core.report and the projector TSV, with hostile class names."""
    from core import report

    store = RunStore(hostile_home)
    views = [report.load_run_view(store, r.id) for r in report.finished_runs(store)]
    assert len(views) == 2 and views[0].after.classes == sorted(HOSTILE_CLASSES)
    pages = [report.run_report_html(views[0]), report.comparison_html(views)]
    for page in pages:
        outside_scripts = re.sub(r"(?is)<script\b[^>]*>.*?</script>", "", page)
        assert live_markup(outside_scripts) == ["<meta>", "<style>"]  # the report's own charset and styles, nothing else
        assert "<img" not in outside_scripts and "<iframe" not in outside_scripts
        assert "onerror=" not in outside_scripts.replace(html_text(HOSTILE_CLASSES[0]), "")
        for name in HOSTILE_CLASSES[:2]:
            assert name not in page  # neither raw in the markup nor in the figures' JSON
    classes = views[0].after.classes
    labels = views[0].after.labels
    pts = np.zeros((len(labels), 2))
    run = HOSTILE_CLASSES[0]  # a series (run) name can carry a user string too: dataset, backbone, tag
    figures = [
        report.projection_figure([{"title": run, "points": pts, "anchors": np.zeros((len(classes), 2))}], labels, classes),
        report.hist_figure([(run, {"bin_edges": [0, 0.5, 1], "pos_hist": [1, 0], "neg_hist": [0, 1]})]),
        report.per_class_figure(classes, [(run, [0.5] * len(classes))]),
        report.confusion_figure(classes, [(run, np.eye(len(classes)).tolist())]),
        report.wise_ft_figure([(run, [{"alpha": 0.0, "val_acc": 0.4}, {"alpha": 1.0, "val_acc": 0.9}])]),
        report.trajectory_figure([(0, pts), (1, pts)], labels, classes),
    ]
    for fig in figures:
        spec = fig.to_plotly_json()
        assert plotly_problems(spec) == [], plotly_problems(spec)
        assert any(plotly_text(HOSTILE_CLASSES[0]) in s for s in strings_in(spec))  # shown, as text
    _, metadata = report.projector_files(report.export_sets(views[0]))
    rows = metadata.splitlines()
    assert len(rows) == 1 + len(views[0].after) and {len(r.split("\t")) for r in rows} == {len(report.METADATA_HEADER)}


def test_a_tab_or_line_break_in_a_class_name_adds_no_projector_column_or_row(tmp_path):
    from core import report
    from core.embeddings import EmbeddingSet

    es = EmbeddingSet("val", np.arange(2), np.array([0, 1]), {"encoder": np.zeros((2, 3), np.float16)},
                      classes=["a\tb", "c\nd\re\u2028f"], preds=np.array([1, 0]))
    _, metadata = report.projector_files([report.ExportSet("run", "after", es, "encoder")])
    rows = metadata.split("\n")[:-1]
    assert len(rows) == 3 and all(len(r.split("\t")) == len(report.METADATA_HEADER) for r in rows)
    assert rows[1].split("\t")[2] == "a b" and rows[2].split("\t")[2] == "c d e f"


def test_the_content_stamp_moves_with_the_dataset_and_only_then(tmp_path):
    """What the page caches key on: cheap (folders, not files), and it changes with every re-import or edit."""
    from core.dataset_import import import_dataset
    from core.datasets import content_stamp

    home = tmp_path / "home"
    assert content_stamp("digits", home) == ""  # built-in: fixed by the code
    import_dataset(_hostile_zip(tmp_path / "a.zip", ["tabby", "beagle"], 3), "pets", root=home)
    first = content_stamp("pets", home)
    assert first and content_stamp("pets", home) == first  # nothing changed, nothing reloads
    import_dataset(_hostile_zip(tmp_path / "b.zip", ["tabby", "beagle"], 3), "pets", root=home, overwrite=True)
    second = content_stamp("pets", home)
    assert second != first  # the same class names and file names, re-imported: new data
    (home / "datasets" / "pets" / "tabby" / "extra.png").write_bytes(png(seed=99))
    assert content_stamp("pets", home) != second


def test_html_reaches_streamlit_only_escaped():
    """A guard for new code: every `unsafe_allow_html=True` in the app is fed a constant or `html_text(...)` values."""
    import ast

    offenders = []
    for path in [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not any(
                    k.arg == "unsafe_allow_html" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords):
                continue
            body = node.args[0] if node.args else None
            parts = body.values if isinstance(body, ast.JoinedStr) else [body]
            safe = all(isinstance(p, ast.Constant) or (isinstance(p, ast.FormattedValue) and isinstance(p.value, ast.Call)
                                                       and getattr(p.value.func, "id", "") == "html_text") for p in parts)
            if not safe:
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
