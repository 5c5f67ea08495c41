"""Explore: one run's embeddings before and after fine-tuning, with the image under the mouse."""
from __future__ import annotations

import streamlit as st

from assets.scatter_component import COLOR_MODES, build_payload, scatter
from core import report
from core.errors import EmbedLabError
from core.projections import METHOD_LABELS, trajectory
from core.safe_text import md_code, md_text
from core.thumbnails import display_images
from pages import _seeds_ui as seeds
from core.embeddings import has_embeddings
from pages._cached import analysis as _analysis, run_view as _view, split_dataset as _split_dataset, thumbs as _thumbs
from pages._ui import ensure_router, get_store, pct, progressive_projection, run_labels
from pages._text_search import panel as text_search_panel

ensure_router()  # run inside app.py's router (sidebar, wide layout) even when deep-linked first

POINT_CAPS = [1000, 2000, 5000, 10000, 20000, 50000]  # "max points" choices (a seeded subsample beyond)


# CACHED LOADERS -------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def _panes(root, run_id, split, output, method, dims, max_points, phases):
    return report.explore_data(_view(root, run_id, split), output=output, method=method, dims=dims,
                               max_points=max_points, phases=phases)


@st.cache_data(show_spinner=False, max_entries=8)
def _trajectory(root, run_id, output, method, dims):
    view = _view(root, run_id, "val")
    snaps = [(step, es) for step, es in report.load_snapshots(view.dir) if output in es.vectors]
    frames = trajectory([(step, es.ids, es.vectors[output]) for step, es in snaps], method, dims)
    return [(step, y) for (step, _), y in zip(snaps, frames)], snaps[-1][1].labels if snaps else None


def _grid(data, ids, captions, width=84):
    if len(ids):
        st.image(display_images(data.images[list(ids)], width), caption=[md_text(c) for c in captions], width=width)


# PICK A RUN ------------------------------------------------------------------------------------
st.header("Explore")
store = get_store()
root = str(store.root)
runs = report.finished_runs(store)
if not runs:
    st.info("No finished run with stored embeddings yet. Train one on the **Train** page (or `python -m core train`), "
            "then come back.")
    st.stop()
ids = [r.id for r in runs]
wanted = st.session_state.get("explore_run") or st.query_params.get("run")
default = ids.index(wanted) if wanted in ids else 0
if wanted and wanted not in ids:
    st.caption(f"Run {md_code(wanted)} has no stored embeddings yet (still running, failed or cancelled); showing the latest finished run.")
labels = run_labels(runs)  # + the settings that differ between runs

c1, c2, c3, c4 = st.columns([3, 1.4, 1.2, 1.2])  # split: val / test / ood
run_id = c1.selectbox("Run", ids, index=default, format_func=labels.get, key="explore_run_pick")
st.session_state["explore_run"] = run_id
if st.query_params.get("run") != run_id:
    st.query_params["run"] = run_id
split_names = ["val", "test"] + (["ood"] if has_embeddings(store.run_dir(run_id), "after", "ood") else [])
split = c2.segmented_control("Split", split_names, default="val", key="explore_split",
                             help="ood: the test split under the run's shift (its ood_shift; see core/shifts.py)") or "val"
if split not in split_names:  # 'ood' picked on a run from before the OOD split existed
    split = "val"
try:
    view = _view(root, run_id, split)
except EmbedLabError as exc:
    st.error(md_text(exc))
    st.stop()
outputs = view.outputs()
output = c3.selectbox("Output", outputs, index=outputs.index(view.main_output()), key="explore_output",
                      help="encoder: the backbone's embedding; projection: LaCViT's contrastive head; "
                           "image: FLYP's image tower; content / style: the content-style model's two factors")
method = c4.selectbox("Projection", list(METHOD_LABELS), format_func=METHOD_LABELS.get, key="explore_method",
                      help="PCA is instant; UMAP and t-SNE take a while the first time, then come from the disk cache")
c5, c6, c7, c8 = st.columns([1, 1.6, 1.6, 1.2])
dims = c5.segmented_control("Dims", [2, 3], default=2, format_func=lambda d: f"{d}-D", key="explore_dims") or 2
color_by = c6.segmented_control("Colour by", list(COLOR_MODES), default="label", key="explore_color") or "label"
has_before = view.before is not None and output in view.before.vectors
pane_choice = c7.segmented_control("Panes", ["before + after", "after", "before"], default="before + after",
                                   key="explore_panes", disabled=not has_before) or "before + after"
max_points = c8.selectbox("Max points", POINT_CAPS, index=POINT_CAPS.index(20000), key="explore_max",
                          format_func=lambda n: f"{n:,}")
phases = {"before + after": ("before", "after"), "after": ("after",), "before": ("before",)}[pane_choice] if has_before else ("after",)
if color_by != "label" and view.after.preds is None:
    st.caption("This run stored no predictions; colouring by label.")

metrics_box = st.container()  # filled after the scatter: on a big run the plot comes first

# THE SCATTER -----------------------------------------------------------------------------------
# UMAP / t-SNE run in a background thread (core.projections.progressive): PCA is shown at once and
# a fragment reruns the page when the slow projection is ready (pages/_ui.progressive_projection).
if method == "pca":
    data, shown_method = _panes(root, run_id, split, output, method, dims, max_points, phases), method
else:
    data, shown_method = progressive_projection(
        f"explore/{root}/{run_id}/{split}/{output}/{method}/{dims}/{max_points}/{'+'.join(phases)}", method,
        lambda: _panes(root, run_id, split, output, "pca", dims, max_points, phases),
        lambda v=view, m=method: report.explore_data(v, output=output, method=m, dims=dims, max_points=max_points,
                                                     phases=phases))
dataset = _split_dataset(root, run_id, split)
panes = [{"title": t, "points": p, "anchors": a} for t, p, a in zip(data["titles"], data["points"], data["anchors"])]
panes = text_search_panel(root, view, data, shown_method, panes)  # a typed phrase: nearest images and a star (17.6)
shown = len(data["ids"])
sample_note = f"{shown:,} of {data['n_total']:,} samples (seeded subsample)" if shown < data["n_total"] else f"{shown:,} samples"
how = "Each pane is its own projection; 'before' is rotated onto 'after' by orthogonal Procrustes on the shared samples." \
    if len(panes) > 1 else ""
payload = build_payload(panes, ids=data["ids"], labels=data["labels"], preds=data["preds"], class_names=data["classes"],
                        color_by=color_by, thumbs=_thumbs(root, run_id, split), height=560,
                        view_key=f"{run_id}/{split}/{output}/{shown_method}/{dims}/{pane_choice}",
                        status=f"{sample_note} · hover: image · " + ("box/lasso: select (linked across panes)" if dims == 2
                                                                        else "drag: rotate (all panes turn together)") + " · click: nearest neighbours")
stars = " Stars: FLYP's class-prompt (text) embeddings, placed out of sample." if any(a is not None for a in data["anchors"]) else ""
st.caption(f"{METHOD_LABELS[shown_method]} {dims}-D of `{output}` on {split}. {how}{stars}")
clicked = st.session_state.get("explore_clicked")
neighbours = report.neighbour_grid(view, clicked, output=output) if clicked is not None and clicked in set(data["ids"].tolist()) else {}
overlay = {"center": clicked, "ids": [n["id"] for n in neighbours.get("after", [])]} if neighbours else None
event = scatter(payload, overlay=overlay, key="explore_scatter")
if event and event.get("click") and event["click"]["id"] != clicked:
    st.session_state["explore_clicked"] = event["click"]["id"]
    st.rerun()

# METRICS ---------------------------------------------------------------------------------------
with metrics_box:
    with st.spinner("Computing metrics…"):
        res = _analysis(root, run_id, split, output)
    m = st.columns(5)
    sure = ("95 % interval (Wilson). The change is coloured only when an exact McNemar test on the same images "
            "says it is not noise (p < 0.05); grey means it could be chance.")
    acc_before = res.get(f"{split}_acc_before")
    delta = None if acc_before is None or res.get("acc") is None else f"{100 * (res['acc'] - acc_before):+.1f} pts vs zero-shot"
    m[0].metric(f"{split} accuracy", pct(res.get("acc")), delta, delta_color=report.delta_colour(res.get("acc_vs_before")),
                help=f"top-1 of the fine-tuned classifier. {sure}")
    m[0].caption(report.ci_text(res.get("acc_ci95"), res.get("n")))
    for col, key, name in ((m[1], "knn_acc", "kNN accuracy"), (m[2], "linear_probe_acc", "linear probe")):
        before = res.get(f"{key}_before")
        delta = None if before is None or res.get(key) is None else f"{100 * (res[key] - before):+.1f} pts vs before"
        col.metric(name, pct(res.get(key)), delta, delta_color=report.delta_colour(res.get(f"{key}_vs_before")), help=sure)
        col.caption(report.ci_text(res.get(f"{key}_ci95")))
    for col, key, name in ((m[3], "silhouette", "silhouette"), (m[4], "cos_gap", "cos gap (same − diff.)")):
        value, before = res.get(key), res.get(f"{key}_before")
        delta = None if before is None or value is None else f"{value - before:+.3f} vs before"
        col.metric(name, "–" if value is None else f"{value:.3f}", delta, delta_color="off",
                   help="no interval for this one, so the change is not coloured")


# SELECTION AND NEIGHBOURS ----------------------------------------------------------------------
names = data["classes"]
pos = {int(i): k for k, i in enumerate(data["ids"])}


def _caption(sample_id: int) -> str:
    k = pos.get(int(sample_id))
    label = names[data["labels"][k]]
    if data["preds"] is None:
        return label
    pred = names[data["preds"][k]]
    return f"{label} ✓" if pred == label else f"{label} → {pred} ✗"


selection = (event or {}).get("selection")
if neighbours:
    st.subheader(f"Nearest neighbours of #{clicked}", anchor=False)
    left, right = st.columns([1, 6])
    left.image(display_images(dataset.images[[clicked]], 120), caption=[md_text(_caption(clicked))], width="stretch")
    with right:
        for phase in ("before", "after"):
            if phase in neighbours:
                near = neighbours[phase]
                same = sum(n["label"] == data["labels"][pos[clicked]] for n in near)
                st.markdown(f"**{phase} fine-tuning** · {same}/{len(near)} of the same class (cosine, in the `{output}` space)")
                _grid(dataset, [n["id"] for n in near], [f"{names[n['label']]} · cos {n['cos']:.2f}" for n in near])
if selection and selection.get("ids"):
    sel = [i for i in selection["ids"] if int(i) in pos]
    wrong = sum(1 for i in sel if "✗" in _caption(i))
    pane = data["phases"][selection["pane"]] if selection["pane"] < len(data["phases"]) else ""
    st.subheader(f"Selected {len(sel)} samples", anchor=False)
    st.caption(f"in the '{pane}' pane · {wrong} misclassified · captions: label → prediction"
               + (" · first 48 shown" if len(sel) > 48 else ""))
    _grid(dataset, sel[:48], [_caption(i) for i in sel[:48]])
elif not neighbours:
    st.caption("Select points with the box or lasso tool to see their images; click a point for its nearest neighbours.")

# TRAJECTORY ------------------------------------------------------------------------------------
with st.expander("Training trajectory (val snapshots)", icon=":material/animation:"):
    if st.toggle("Show how the embedding moved during training", key="explore_traj"):
        with st.spinner("Projecting the snapshots…"):
            frames, traj_labels = _trajectory(root, run_id, output, method, dims)
        if len(frames) < 2:
            st.info(f"This run kept fewer than two snapshots with a `{output}` output.")
        else:
            st.plotly_chart(report.trajectory_figure(frames, traj_labels, names), key="explore_traj_fig")

# DATA SELECTION (seed 002) ---------------------------------------------------------------------
record = next(r for r in runs if r.id == run_id)
if record.config.get("selection"):
    with st.expander("Training data selection", icon=":material/filter_alt:"):
        seeds.selection_caption(st, record, root)
        st.caption("A run stores val/test embeddings while a selection holds training images, so the selection is drawn "
                   "on the training pool itself (the selector's frozen embeddings).")
        seeds.render_selection_map(st, record.config["selection"], root, key="explore_selection_map")

# EXPORT ----------------------------------------------------------------------------------------
with st.expander("Export this run", icon=":material/download:"):
    sets = lambda: report.export_sets(view, phases=("before", "after"), output=output)  # noqa: E731
    e1, e2, e3 = st.columns(3)
    e1.download_button("HTML report", lambda: report.run_report_html(view, method=method, dims=dims, output=output),
                       file_name=f"{run_id}-report.html", mime="text/html", on_click="ignore", key="explore_dl_html")
    e2.download_button("Projector TSV (zip)", lambda: report.projector_zip({run_id: sets()}), file_name=f"{run_id}-projector.zip",
                       mime="application/zip", on_click="ignore", key="explore_dl_tsv",
                       help="vectors.tsv + metadata.tsv for projector.tensorflow.org (before and after, phase column)")
    e3.download_button("Parquet", lambda: report.export_parquet(sets()), file_name=f"{run_id}.parquet",
                       mime="application/octet-stream", on_click="ignore", key="explore_dl_parquet")
