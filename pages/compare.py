"""Compare: 2-4 runs side by side (aligned projections, metrics, similarities, errors, exports)."""
from __future__ import annotations

import streamlit as st

from assets.scatter_component import COMPARE_COLOR_MODES, build_payload, scatter
from core import metrics, report, settings_diff, spaces
from core.errors import EmbedLabError
from core.projections import METHOD_LABELS, PROJECTION_HELP
from core.safe_text import md_code, md_text
from pages import _seeds_ui as seeds, _url
from pages._grid import paged_grid
from pages._cached import analysis as _analysis, run_view as _view, split_dataset as _split_dataset, thumbs as _thumbs
from pages._ui import ensure_router, get_manager, get_store, objective_label, progressive_projection, run_labels
from pages._confusion import confusion_section

ensure_router()  # run inside app.py's router (sidebar, wide layout) even when deep-linked first


# CACHED LOADERS -------------------------------------------------------------------------------


OWN_SPACE = "trained"  # the Space control's default: each run in the space its objective trains


def _outputs(views, space: str) -> list[str]:
    """Each run's space: its trained one (OWN_SPACE), or one space they all stored (core/spaces.py)."""
    return [spaces.default_space(v.objective, v.outputs()) if space == OWN_SPACE else space for v in views]


@st.cache_data(show_spinner=False, max_entries=16)
def _compare(root, run_ids, split, method, dims, align, space=OWN_SPACE):
    views = [_view(root, r, split) for r in run_ids]
    outputs = _outputs(views, space)
    results = [_analysis(root, v.id, split, o) for v, o in zip(views, outputs)]
    return report.compare_data(views, method=method, dims=dims, outputs=outputs, results=results, align=align)


# PICK RUNS -------------------------------------------------------------------------------------
st.header("Compare")
store = get_store()
root = str(store.root)
runs = report.finished_runs(store)
if len(runs) < 2:
    st.info("Compare needs at least two finished runs. Train CE, LaCViT and FLYP on the same dataset on the **Train** page.")
    st.stop()
ids = [r.id for r in runs]
labels = run_labels(runs)  # + the settings that differ between runs
url = _url.read("compare")  # the view in the link (core/view_state.py): every value checked before use
wanted = [r for r in st.session_state.get("compare_runs") or [] if r in ids] or url.choices("run", ids, limit=4, what="run")
default = wanted[:4] if len(wanted) >= 2 else report.default_compare_runs(runs)

# one comparison batch: same settings but the objective (core/settings_diff.py); picking one fills the runs below
batches = [b for b in settings_diff.comparison_batches([(r.id, r.config, r.summary) for r in runs]) if len(b.run_ids) > 1]


def _pick_batch(run_ids: dict[str, list[str]]) -> None:
    picked = run_ids.get(st.session_state.get("compare_batch"))
    if picked:
        st.session_state["compare_pick"] = picked[:4]


if batches:
    st.selectbox("Comparison batch", [b.id for b in batches], index=None, key="compare_batch",
                 format_func={b.id: b.label(objective_label) for b in batches}.get, on_change=_pick_batch,
                 args=({b.id: b.run_ids for b in batches},), placeholder="Pick the runs of one comparison…",
                 help="Runs with the same settings except the objective (and its own knobs), e.g. one `Start` on the "
                      "Train page; the first four when a batch holds more.")
chosen = st.multiselect("Runs (2 to 4)", ids, default=default, format_func=labels.get, max_selections=4, key="compare_pick")
st.session_state["compare_runs"] = list(chosen)
c1, c2, c3, c4, c5 = st.columns([1.4, 1.2, 1, 1.6, 1.6])  # split: val / test / ood
split = c1.segmented_control("Split", ["val", "test", "ood"], default=url.choice("split", ["val", "test", "ood"], "val", what="split"),
                              key="compare_split",
                              help="ood: the shifted test split (each run's ood_shift)") or "val"
method_names = list(METHOD_LABELS)
method = c2.selectbox("Projection", method_names, index=method_names.index(url.choice("proj", method_names, "pca", what="projection")),
                      format_func=METHOD_LABELS.get, key="compare_method", help=PROJECTION_HELP)
dims = c3.segmented_control("Dims", [2, 3], default=url.choice("dims", [2, 3], 2, what="dims"), format_func=lambda d: f"{d}-D",
                            key="compare_dims") or 2
align = c4.segmented_control("Alignment", ["procrustes", "shared-pca"],
                             default=url.choice("align", ["procrustes", "shared-pca"], "procrustes", what="alignment"),
                             key="compare_align",
                             format_func={"procrustes": "Procrustes", "shared-pca": "shared PCA"}.get,
                             help="Procrustes: each run is projected on its own, then rotated / reflected / scaled onto the "
                                  "first run on the shared samples. Shared PCA: one PCA basis for all runs (PCA only, and "
                                  "only when the runs' embeddings have the same dimension; otherwise Procrustes).") or "procrustes"
color_by = c5.segmented_control("Colour by", list(COMPARE_COLOR_MODES),
                                default=url.choice("color", list(COMPARE_COLOR_MODES), "label", what="colouring"), key="compare_color",
                                help="label: the true class. agreement: green where every run is right, amber where "
                                     "only some are (where the objectives differ), red where all are wrong. Hover "
                                     "shows each pane's own prediction.") or "label"
if len(chosen) < 2:
    _url.notes(url)
    st.info("Pick at least two runs.")
    st.stop()
try:
    shared_names = spaces.shared_spaces([_view(root, r, split).outputs() for r in chosen])
except EmbedLabError:
    shared_names = []  # a run without this split: the error is shown below
space_names = [OWN_SPACE] + shared_names
space = st.segmented_control(
    "Space", space_names, default=url.choice("space", space_names, OWN_SPACE, what="space"), key="compare_space",
    format_func=lambda s: "each run's trained space" if s == OWN_SPACE else f"shared: {s}",
    help="Each run's trained space: CE's encoder, LaCViT's projection head, FLYP's image embedding, content-style's "
         "content code (each run shown where its objective acts). Shared: a space every chosen run stored, so all are "
         "compared in the same kind of space: encoder (the backbone's embedding, before any objective's head; the "
         "same network when the runs share a backbone), logits (one axis per class). Spaces are shared by name.") \
    or OWN_SPACE
_url.notes(url)
_url.write({"run": list(chosen), "split": split, "proj": method, "dims": dims, "align": align, "color": color_by,
            "space": space})

try:
    with st.spinner("Computing metrics and projections…"):
        data = _compare(root, tuple(chosen), split, "pca", dims, align, space)  # PCA first; UMAP / t-SNE below
except EmbedLabError as exc:
    st.error(md_text(exc))
    st.stop()
views = [_view(root, r, split) for r in chosen]
if method != "pca":  # UMAP / t-SNE in the background: PCA until it is ready
    pca_data = data
    data, method = progressive_projection(
        f"compare/{root}/{'+'.join(chosen)}/{split}/{method}/{dims}/{align}/{space}", method, lambda: pca_data,
        lambda m=method, d=pca_data: report.compare_data(views, method=m, dims=dims, outputs=d["outputs"],
                                                        results=d["results"], align=align))
differences = settings_diff.differing_labels([(v.id, v.config, v.summary) for v in views])  # names carry them
names = [settings_diff.label_with(v.short if len({w.short for w in views}) == len(views) else v.label, differences[v.id])
         for v in views]
results = data["results"]

# SETTINGS (like with like) ---------------------------------------------------------------------
settings = settings_diff.settings_table([(v.id, v.config, v.summary) for v in views], names)
if settings.warnings:
    st.warning("**Not like with like:** these runs differ in more than the objective ("
               + md_text("; ".join(settings.warnings)) + "), so their differences are not the objective's alone."
               + (" Pick the runs of one **Comparison batch** above." if batches else ""), icon=":material/warning:")
n_differ = len(settings.differing())
with st.expander(f"Settings ({n_differ} differ{'s' if n_differ == 1 else ''})", expanded=bool(settings.warnings),
                 icon=":material/tune:"):
    all_settings = st.toggle("All settings", key="compare_settings_all")
    settings_df, differing = report.settings_dataframe(settings, everything=all_settings)
    st.dataframe(settings_df.style.apply(lambda row: ["background-color: #ffe0b2; font-weight: 700" if row.name in differing
                                                      else ""] * len(row), axis=1), key="compare_settings")
    notes = [f"{r.label}: {r.note}" for r in settings.differing() if r.note]
    st.caption("Highlighted: settings that differ between the runs; n/a: a knob the run's objective does not read."
               + (" Differing but comparable: " + md_text("; ".join(notes)) + "." if notes else ""))

# ALIGNED PROJECTIONS ---------------------------------------------------------------------------
shared = data["shared_ids"]
proj = data["projection"]
if len(shared) == 0:
    st.warning("These runs share no samples (different datasets or splits), so their projections cannot be aligned.")
else:
    first = views[0]
    rows0 = report.positions(first.after.ids, shared)
    panes = []
    for n, v, o, pts, ext in zip(names, views, data["outputs"], proj["points"], proj["extra"]):
        rows = report.positions(v.after.ids, shared)
        panes.append({"title": f"{n} ({o})", "points": pts[rows], "anchors": ext,
                      "preds": None if v.after.preds is None else v.after.preds[rows]})
    same_data = len({v.dataset for v in views}) == 1
    payload = build_payload(panes, ids=shared, labels=first.after.labels[rows0], preds=None, class_names=first.after.classes,
                            color_by=color_by,
                            thumbs=_thumbs(root, first.id, split) if same_data else None, height=520,
                            view_key=f"{'/'.join(chosen)}/{split}/{method}/{dims}/{align}/{space}",
                            status=f"{len(shared):,} shared samples · hover: image · "
                                   + ("box/lasso: select (linked across runs)" if dims == 2 else "drag: rotate (all panes turn together)"))
    how = ("one PCA basis fitted on all runs" if proj["align"] == "shared-pca" else
           "each run projected on its own, then rotated onto the first run by orthogonal Procrustes on the shared samples")
    colour = ("true label" if color_by == "label" else
              "green = right in every run, amber = right in some, red = wrong in all (by each run's own predictions)")
    where = ("each run in the space its objective trains (" + ", ".join(f"{md_text(n)}: {md_code(o)}" for n, o in zip(names, data["outputs"]))
             + ")" if space == OWN_SPACE else f"every run in the shared {md_code(space)} space")
    st.caption(f"{METHOD_LABELS[method]} {dims}-D of {where}; {how}. Colour: {colour}.")
    event = scatter(payload, key="compare_scatter")
    selection = (event or {}).get("selection")
    if selection and selection.get("ids"):
        sel = [int(i) for i in selection["ids"]]
        st.subheader(f"Selected {len(sel)} samples", anchor=False)
        parts = []
        for v in views:
            if v.after.preds is not None:
                pos = report.positions(v.after.ids, sel)
                parts.append(f"{v.short}: {int((v.after.preds[pos] == v.after.labels[pos]).sum())}/{len(sel)} correct")
        st.caption(md_text(" · ".join(parts)))
        if same_data:
            data_ = _split_dataset(root, first.id, split)  # the OOD split's images as shifted, like the hover
            cls = first.after.classes
            lab = dict(zip(sel, first.after.labels[report.positions(first.after.ids, sel)].tolist()))
            paged_grid(data_, sel, lambda i: cls[lab[int(i)]], key="compare_sel")

# METRICS ---------------------------------------------------------------------------------------
st.subheader("Metrics", anchor=False)
st.caption(" · ".join(f"**{md_text(n)}**: {md_text(v.label)} ({md_code(v.id)})" for n, v in zip(names, views)))
df, best = report.metrics_dataframe(results, [md_text(n) for n in names])  # st.table renders Markdown


def _mark_best(row):
    return ["background-color: #d7f0dc; font-weight: 700" if col == best.get(row.name) else "" for col in row.index]


st.table(df.style.apply(_mark_best, axis=1).format("{:.3f}", na_rep="–"))
st.caption(" · ".join(f"**{md_text(n)}** {row['metric']}: {report.ci_text(ci)}" for row in report.metrics_table(results, names)[0]
                      for n, ci in row.get("ci", {}).items() if ci))
st.caption(f"Best per row highlighted (alignment, uniformity and different-class cosine: lower is better; an accuracy "
           f"only when its 95 % interval clears every other run's). Metrics on the "
           f"{split} split in the space shown for each run ({', '.join(data['outputs'])}). kNN: leave-one-out, k=20, cosine; "
           "linear probe: logistic regression, 5-fold cross-validated below 1,000 samples (else a stratified 70/30 split).")

# CHARTS ----------------------------------------------------------------------------------------
classes = results[0].get("classes") or views[0].after.classes
hists = [(n, r["hist"]) for n, r in zip(names, results) if "hist" in r]
if hists:
    st.plotly_chart(report.hist_figure(hists, title="Cosine similarity of same-class (solid) and different-class (dashed) pairs"),
                    key="compare_hist")
per_class = [(n, r["per_class_acc"]) for n, r in zip(names, results) if r.get("per_class_acc")]
if per_class:
    st.plotly_chart(report.per_class_figure(classes, per_class), key="compare_per_class")
confusion_section(root, views, names, results, classes, split)  # clickable cells open their images (17.6)
wise = [(n, r["wise_ft"]) for n, r in zip(names, results) if r.get("wise_ft")]
if wise:
    st.plotly_chart(report.wise_ft_figure(wise), key="compare_wise")
frontier = report.frontier_data([(n, v.config, v.summary) for n, v in zip(names, views)])
if frontier["curves"]:
    st.plotly_chart(report.frontier_figure(frontier), key="compare_frontier")
    st.caption("The ID-OOD frontier (the FLYP and WiSE-FT papers' main figure): x = val accuracy, y = accuracy on the "
               "shifted test split, one point per WiSE-FT alpha from zero-shot to fine-tuned; the other runs of this "
               "comparison as reference points. Both axes share one range of at least 30 points, so noise stays small."
               + (f" {len(frontier['skipped'])} compared run(s) not drawn: another dataset, shift, budget or seed, "
                  "or no OOD number." if frontier["skipped"] else ""))

# MULTI-SEED ------------------------------------------------------------------------------------
seed_groups = [g for g in metrics.seed_groups([(r.id, r.config, r.summary) for r in runs]) if len(g["runs"]) > 1]
if seed_groups:
    st.subheader("Mean ± spread over seeds", anchor=False)
    st.dataframe([{"objective": g["objective"], "seeds": ", ".join(map(str, g["seeds"])),
                   "val accuracy": metrics.mean_spread_text(g, "val_acc"), "test accuracy": metrics.mean_spread_text(g, "test_acc"),
                   "runs": " ".join(g["runs"])} for g in seed_groups], hide_index=True, key="compare_seeds")
    st.caption("Finished runs with the same settings except the seed (`python -m core train --seeds 3`). "
               "Spread: the sample standard deviation across seeds.")

# RESEARCH SEEDS ----------------------------------------------------------------------------------
st.subheader("Label and budget curves", anchor=False)
st.caption("Content-style: test error vs labelled images, against CE (`python -m core label-curve`). "
           "VeCAF data selection: accuracy vs selection budget and batches-to-accuracy for VeCAF, ActiveFT, k-center and random over 3 seeds "
           "(`python -m core budget-curve`).")
label_tab, budget_tab = st.tabs(["Error vs labels", "Accuracy vs budget"])
with label_tab:
    seeds.label_curve_section(st, store, key="compare_label_curve")
    seeds.label_curve_launcher(st, get_manager(), key="compare_label_curve_run")
with budget_tab:
    seeds.budget_curve_section(st, store, key="compare_budget_curve")

# EXPORT ----------------------------------------------------------------------------------------
st.subheader("Export", anchor=False)
e1, e2, e3 = st.columns(3)
stem = "embedlab-compare-" + "-".join(r.rsplit("-", 1)[-1] for r in chosen)
e1.download_button("HTML report", lambda: report.comparison_html(views, method=method, dims=dims, data=data),
                   file_name=f"{stem}.html", mime="text/html", on_click="ignore", key="compare_dl_html",
                   help="one self-contained file (plotly.js inlined): opens offline")
e2.download_button("Projector TSV (zip)",
                   lambda: report.projector_zip({v.id: report.export_sets(v, phases=("before", "after")) for v in views}),
                   file_name=f"{stem}-projector.zip", mime="application/zip", on_click="ignore", key="compare_dl_tsv",
                   help="per run: vectors.tsv + metadata.tsv (with header) for projector.tensorflow.org")
e3.download_button("Parquet", lambda: report.export_parquet([s for v in views for s in report.export_sets(v, phases=("before", "after"))]),
                   file_name=f"{stem}.parquet", mime="application/octet-stream", on_click="ignore", key="compare_dl_parquet",
                   help="one row per sample, run and phase; the vector as list<float32>")
