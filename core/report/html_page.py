"""Self-contained HTML reports (plotly.js inlined once, so a file opens offline): a comparison of runs and a
single run's before / after report. Every user-supplied string goes through html_text."""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..metrics import analyze
from ..safe_text import html_text
from ..settings_diff import SettingsTable, differing_labels, label_with, settings_table, value_text
from .figures import (confusion_figure, frontier_data, frontier_figure, hist_figure, per_class_figure, projection_figure,
                      wise_ft_figure)
from .lookup import RunView, positions
from .panes import anchors_for, compare_data
from .tables import metrics_table


def _table_html(results: Sequence[dict], names: Sequence[str]) -> str:
    rows, best = metrics_table(results, names)
    head = "".join(f"<th>{html_text(n)}</th>" for n in names)
    body = []
    for row in rows:
        cells = []
        for i, n in enumerate(names):
            v = row[n]
            text = "–" if v is None else f"{v:.3f}"
            ci = row.get("ci", {}).get(n)
            if ci:
                text += f" <span class='ci'>[{ci[0]:.3f}, {ci[1]:.3f}]</span>"
            cells.append(f"<td class='best'>{text} ★</td>" if best[row['metric']] == i and len(names) > 1 else f"<td>{text}</td>")
        body.append(f"<tr><th>{html_text(row['metric'])}</th>{''.join(cells)}</tr>")
    return f"<table class='metrics'><thead><tr><th>metric</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def comparison_html(views: Sequence[RunView], *, method: str = "pca", dims: int = 2, seed: int = 0,
                    outputs: Sequence[str] | None = None, data: dict | None = None, title: str = "EmbedLab comparison") -> str:
    """A self-contained HTML report: plotly.js is inlined once, so the file opens offline on its own."""
    from ..projections import METHOD_LABELS

    data = data or compare_data(views, method=method, dims=dims, seed=seed, outputs=outputs)
    results, proj = data["results"], data["projection"]
    runs = [(v.id, v.config, v.summary) for v in views]
    extra = differing_labels(runs)  # run labels carry the settings that differ
    names = [label_with(v.label, extra[v.id]) for v in views]
    figs = []
    # projections, on the ids every run shares (so that the panes are comparable)
    shared = data["shared_ids"]
    if len(shared):
        panes = []
        for v, o, pts, ext in zip(views, data["outputs"], proj["points"], proj["extra"]):
            panes.append({"title": f"{v.short} ({o})", "points": pts[positions(v.after.ids, shared)], "anchors": ext})
        labels = views[0].after.labels[positions(views[0].after.ids, shared)]
        figs.append(("Embeddings", projection_figure(panes, labels, views[0].after.classes, height=480,
                                                     title=f"{METHOD_LABELS.get(method, method)} {dims}-D, panes aligned by orthogonal "
                                                           "Procrustes onto the first run on shared samples")))
    hists = [(n, r["hist"]) for n, r in zip(names, results) if "hist" in r]
    if hists:
        figs.append(("Pair similarities", hist_figure(hists)))
    per_class = [(n, r["per_class_acc"]) for n, r in zip(names, results) if r.get("per_class_acc")]
    classes = results[0].get("classes") or views[0].after.classes
    if per_class:
        figs.append(("Per-class accuracy", per_class_figure(classes, per_class)))
    conf = [(v.short, r["confusion"]) for v, r in zip(views, results) if r.get("confusion")]
    if conf:
        figs.append(("Confusion", confusion_figure(classes, conf)))
    wise = [(n, r["wise_ft"]) for n, r in zip(names, results) if r.get("wise_ft")]
    if wise:
        figs.append(("WiSE-FT", wise_ft_figure(wise)))
    frontier = frontier_data([(n, v.config, v.summary) for n, v in zip(names, views)])
    if frontier["curves"]:
        figs.append(("ID-OOD frontier", frontier_figure(frontier)))
    return _html_page(title, views, names, results, figs, settings=settings_html(settings_table(runs, names)))


def seeds_html(views: Sequence[RunView], results: Sequence[dict]) -> str:
    """'Mean ± spread over seeds' for runs that differ only in their seed ('' when no two do)."""
    from ..metrics import mean_spread_text, seed_groups

    groups = [g for g in seed_groups([(v.id, v.config, r) for v, r in zip(views, results)]) if len(g["runs"]) > 1]
    if not groups:
        return ""
    keys = [k for k in ("val_acc", "test_acc", "knn_acc", "linear_probe_acc") if any(f"{k}_mean" in g for g in groups)]
    head = "".join(f"<th>{html_text(k)}</th>" for k in keys)
    body = "".join(f"<tr><th>{html_text(str(g['objective']))} · seeds {html_text(', '.join(map(str, g['seeds'])))}</th>"
                   + "".join(f"<td>{html_text(mean_spread_text(g, k))}</td>" for k in keys) + "</tr>" for g in groups)
    return (f"<h2>Mean ± spread over seeds</h2><table class='metrics'><thead><tr><th>runs (same settings)</th>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table><p>Spread: the sample standard deviation across seeds.</p>")


def _html_page(title: str, views: Sequence[RunView], names: Sequence[str], results: Sequence[dict], figs: Sequence[tuple[str, Any]],
               settings: str = "") -> str:
    parts = []
    for i, (heading, fig) in enumerate(figs):
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False, "showSendToCloud": False})
        parts.append(f"<section><h2>{html_text(heading)}</h2>{div}</section>")
    runs = "".join(f"<li><b>{html_text(n)}</b> <code>{html_text(v.id)}</code> split {html_text(v.split)}, "
                   f"{len(v.after)} samples</li>" for n, v in zip(names, views))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html_text(title)}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1280px; color: #222; }}
table.metrics {{ border-collapse: collapse; margin: 8px 0 24px; }}
table.metrics th, table.metrics td {{ border-bottom: 1px solid #ddd; padding: 4px 12px; text-align: right; }}
table.metrics th:first-child {{ text-align: left; font-weight: normal; }}
td.best {{ font-weight: 700; background: #e8f5e9; }}
.ci {{ color: #777; font-size: 85%; font-weight: 400; }}
section {{ margin: 24px 0; }}
table.settings tr.differs th, table.settings tr.differs td {{ background: #fff3e0; font-weight: 700; }}
p.warn {{ background: #fff3e0; border-left: 4px solid #e65100; padding: 8px 12px; }}
</style></head><body>
<h1>{html_text(title)}</h1>
<p>Generated {time.strftime('%Y-%m-%d %H:%M')} by EmbedLab. Best value per row marked ★ (alignment, uniformity and
different-class cosine: lower is better; an accuracy only when its 95 % interval clears every other run's). Accuracies
carry their Wilson 95 % interval in brackets. kNN: leave-one-out on the split, k=20, cosine. Linear probe: logistic
regression, 5-fold cross-validated below 1,000 samples (else a stratified 70/30 split).</p>
<ul>{runs}</ul>
{settings}
<h2>Metrics</h2>
{_table_html(results, names)}
{seeds_html(views, results)}
{''.join(parts)}
</body></html>
"""


def run_report_html(view: RunView, *, method: str = "pca", dims: int = 2, seed: int = 0, output: str | None = None) -> str:
    """A single-run report: before vs after, metrics, histograms, per-class accuracy, confusion, WiSE-FT."""
    from ..projections import METHOD_LABELS, project_panes

    output = output or view.main_output()
    result = analyze(view.dir, split=view.split, output=output, details=True)
    figs = []
    sets = [{"ids": view.after.ids, "vectors": view.after.vectors[output], "extra": anchors_for(view.after, output)}]
    titles = [f"after ({output})"]
    if view.before is not None and output in view.before.vectors:
        sets.insert(0, {"ids": view.before.ids, "vectors": view.before.vectors[output], "extra": anchors_for(view.before, output)})
        titles.insert(0, f"before ({output})")
    proj = project_panes(sets, method, dims, seed=seed)
    panes = [{"title": t, "points": p, "anchors": e} for t, p, e in zip(titles, proj["points"], proj["extra"])]
    title = f"{METHOD_LABELS.get(method, method)} {dims}-D, before aligned onto after (Procrustes)"
    figs.append(("Embeddings", projection_figure(panes, view.after.labels, view.after.classes, title=title)))
    hists = [("after", result["hist"])] + ([("before", result["hist_before"])] if "hist_before" in result else [])
    figs.append(("Pair similarities", hist_figure(hists)))
    if result.get("per_class_acc"):
        figs.append(("Per-class accuracy", per_class_figure(result["classes"], [("after", result["per_class_acc"])])))
        figs.append(("Confusion", confusion_figure(result["classes"], [("after", result["confusion"])])))
    if result.get("wise_ft"):
        figs.append(("WiSE-FT", wise_ft_figure([(view.label, result["wise_ft"])])))
        frontier = frontier_data([(view.label, view.config, view.summary)])
        if frontier["curves"]:
            figs.append(("ID-OOD frontier", frontier_figure(frontier)))
    before = {k[:-7]: v for k, v in result.items() if k.endswith("_before")}
    if before:
        before["val_acc"] = before.get("acc")
    results, names = [result], [f"{view.label} (after)"]
    if before:
        results.insert(0, before)
        names.insert(0, "before fine-tuning")
    return _html_page(f"EmbedLab report: {view.label}", [view] * len(names), names, results, figs,
                      settings=settings_html(settings_table([(view.id, view.config, view.summary)], [view.label])))


def settings_html(table: SettingsTable) -> str:
    """The runs' settings (rows) per run (columns), differing rows marked, and the warning when the runs differ in
    more than the objective: a comparison's difference is then not the objective's alone."""
    head = "".join(f"<th>{html_text(n)}</th>" for n in table.names)
    body = "".join(("<tr class='differs'>" if r.differs else "<tr>") + f"<th>{html_text(r.label)}{' ≠' if r.differs else ''}</th>"
                   + "".join(f"<td>{html_text(value_text(v, u))}</td>" for v, u in zip(r.values, r.used)) + "</tr>"
                   for r in table.shown())
    warn = ("<p class='warn'><b>Not like with like:</b> these runs differ in more than the objective ("
            + html_text("; ".join(table.warnings)) + "), so their differences are not the objective's alone.</p>"
            if table.warnings else "")
    notes = [f"{r.label}: {r.note}" for r in table.differing() if r.note]
    note = f"<p>Differing but comparable: {html_text('; '.join(notes))}.</p>" if notes else ""
    return (f"<h2>Settings</h2>{warn}<table class='metrics settings'><thead><tr><th>setting</th>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table><p>Rows marked ≠ differ between the runs; n/a: a knob the run's objective "
            f"does not read.</p>{note}")
