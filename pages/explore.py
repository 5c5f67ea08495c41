"""Explore: one run's embeddings before and after fine-tuning, in the space its objective trains (or any
space the run stored), with the image under the mouse; a running run is followed live."""
from __future__ import annotations

import streamlit as st

from assets.scatter_component import COLOR_MODES, build_payload, scatter
from core import report, spaces
from core.embeddings import has_embeddings, list_snapshots, load_embeddings, load_run_embeddings
from core.errors import EmbedLabError
from core.projections import METHOD_LABELS, PROJECTION_HELP, align_frames, project, project_panes
from core.safe_text import md_code, md_text
from core.thumbnails import display_images
from pages import _seeds_ui as seeds, _url
from pages._cached import analysis as _analysis, run_view as _view, split_dataset as _split_dataset, thumbs as _thumbs
from pages._grid import grid as _grid, paged_grid
from pages._text_search import panel as text_search_panel
from pages._ui import ensure_router, get_store, pct, progressive_projection, run_labels

ensure_router()  # run inside app.py's router (sidebar, wide layout) even when deep-linked first

POINT_CAPS = [1000, 2000, 5000, 10000, 20000, 50000]  # "max points" choices (a seeded subsample beyond)
LIVE_REFRESH_S = 2.0  # a running run's latest snapshot is re-read this often (a cheap directory listing)
SPACE_HELP = ("The embedding space shown; the default is the one the run's objective trains: CE the encoder, LaCViT "
              "its projection head, FLYP the image embedding in the joint image-text space, content-style the content "
              "code. encoder: the backbone's embedding (every run); logits: the class scores (before fine-tuning: "
              "the before model's own classifier).")


# CACHED LOADERS -------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def _panes(root, run_id, split, output, method, dims, max_points, phases):
    return report.explore_data(_view(root, run_id, split), output=output, method=method, dims=dims,
                               max_points=max_points, phases=phases)


@st.cache_data(show_spinner=False, max_entries=8)
def _trajectory(root, run_id, output, method, dims, rescale):
    view = _view(root, run_id, "val")
    snaps = [(step, es) for step, es in report.load_snapshots(view.dir) if output in es.vectors]
    ys = [(es.ids, project(es.vectors[output], method, dims)) for _, es in snaps]
    frames = align_frames(ys, rescale=rescale)  # rigid Procrustes, frame t onto frame t-1 (core/projections.py)
    return [(step, y) for (step, _), y in zip(snaps, frames)], snaps[-1][1].labels if snaps else None


@st.cache_resource(show_spinner=False, max_entries=4)
def _snapshot(folder: str):
    return load_embeddings(folder)  # a written snapshot never changes (atomic rename)


# PICK A RUN ------------------------------------------------------------------------------------
st.header("Explore")
store = get_store()
root = str(store.root)
url = _url.read("explore")  # the view in the link (core/view_state.py): every value checked before use
runs = report.finished_runs(store)
live = [r for r in store.list(status=["running"]) if has_embeddings(store.run_dir(r.id), "before", "val")]
if not runs and not live:
    st.info("No finished run with stored embeddings yet. Train one on the **Train** page (or `python -m core train`), "
            "then come back.")
    st.stop()
ids = [r.id for r in runs] + [r.id for r in live]
labels = run_labels(runs)  # + the settings that differ between runs
labels.update({r.id: "● training · " + report.run_label(r.id, r.config) for r in live})
wanted = st.session_state.get("explore_run")  # set by the Runs page's "open in Explore"
default = wanted if wanted in ids else url.choice("run", ids, ids[0], what="run", label=str)

c1, c2, c3, c4 = st.columns([3, 1.4, 1.2, 1.2])  # split: val / test / ood
run_id = c1.selectbox("Run", ids, index=ids.index(default), format_func=labels.get, key="explore_run_pick")
st.session_state["explore_run"] = run_id
record = next(r for r in runs + live if r.id == run_id)
objective = record.config.get("objective", "")
run_dir = store.run_dir(run_id)


def _live_view() -> None:
    """A running run: its before set and its latest val snapshot, re-read every LIVE_REFRESH_S seconds."""
    before = load_run_embeddings(run_dir, "before", "val")
    space_options = list(before.vectors)
    space_default = url.choice("space", space_options, spaces.default_space(objective, space_options), what="space")
    space = c3.selectbox("Space", space_options, index=space_options.index(space_default), key="explore_output",
                         help=SPACE_HELP)
    dims = c5.segmented_control("Dims", [2, 3], default=url.choice("dims", [2, 3], 2, what="dims"),
                                format_func=lambda d: f"{d}-D", key="explore_dims") or 2
    _url.notes(url)
    _url.write({"run": run_id, "space": space, "dims": dims})

    @st.fragment(run_every=LIVE_REFRESH_S)
    def live_panel():
        rec = store.get(run_id)
        if rec.status != "running":
            st.rerun()  # finished (or failed): the whole page, now with its stored results
        snaps = [(step, folder) for step, folder in list_snapshots(run_dir)]
        progress = rec.progress or {}
        st.caption(f":material/radio_button_checked: training · step {progress.get('step', 0)} of "
                   f"{progress.get('total', '?')} · the latest val snapshot, re-read every {LIVE_REFRESH_S:g} s")
        latest = _snapshot(str(snaps[-1][1])) if snaps else None
        sets, titles = [], []
        if space in before.vectors:
            sets.append({"ids": before.ids, "vectors": before.vectors[space]})
            titles.append("before fine-tuning")
        if latest is not None and space in latest.vectors:
            sets.append({"ids": latest.ids, "vectors": latest.vectors[space]})
            titles.append(f"step {snaps[-1][0]} (latest snapshot)")
        if not sets:
            st.info(f"No snapshot with a {md_code(space)} space yet.")
            return
        proj = project_panes(sets, "pca", dims, reference=len(sets) - 1)
        panes = [{"title": title, "points": pts, "anchors": None} for title, pts in zip(titles, proj["points"])]
        st.plotly_chart(report.projection_figure(panes, before.labels, before.classes, height=460,
                                                 title=f"PCA of {space} (before rotated onto the latest snapshot)"),
                        key="explore_live_fig")

    live_panel()
    st.caption("The full view (metrics, selection, neighbours, the whole trajectory) opens when the run finishes.")


if record.status == "running":
    c5 = st.columns([1, 5])[0]
    _live_view()
    st.stop()

split_names = ["val", "test"] + (["ood"] if has_embeddings(run_dir, "after", "ood") else [])
split = c2.segmented_control("Split", split_names, default=url.choice("split", split_names, "val", what="split"),
                             key="explore_split",
                             help="ood: the test split under the run's shift (its ood_shift; see core/shifts.py)") or "val"
if split not in split_names:  # 'ood' picked on a run from before the OOD split existed
    split = "val"
try:
    view = _view(root, run_id, split)
except EmbedLabError as exc:
    st.error(md_text(exc))
    st.stop()
outputs = view.outputs()
trained = spaces.trained_space(objective)
space_default = url.choice("space", outputs, spaces.default_space(objective, outputs), what="space")
output = c3.selectbox("Space", outputs, index=outputs.index(space_default), key="explore_output",
                      format_func=lambda o: f"{o} (trained)" if o == trained else o, help=SPACE_HELP)
methods = list(METHOD_LABELS)
method = c4.selectbox("Projection", methods, index=methods.index(url.choice("proj", methods, "pca", what="projection")),
                      format_func=METHOD_LABELS.get, key="explore_method",
                      help=PROJECTION_HELP)
c5, c6, c7, c8 = st.columns([1, 1.6, 1.6, 1.2])
dims = c5.segmented_control("Dims", [2, 3], default=url.choice("dims", [2, 3], 2, what="dims"),
                            format_func=lambda d: f"{d}-D", key="explore_dims") or 2
color_by = c6.segmented_control("Colour by", list(COLOR_MODES), default=url.choice("color", list(COLOR_MODES), "label",
                                                                                   what="colouring"),
                                key="explore_color") or "label"
has_before = view.before is not None and output in view.before.vectors
pane_names = ["before + after", "after", "before"]
pane_choice = c7.segmented_control("Panes", pane_names, default=url.choice("panes", pane_names, "before + after", what="panes"),
                                   key="explore_panes", disabled=not has_before) or "before + after"
max_points = c8.selectbox("Max points", POINT_CAPS, index=POINT_CAPS.index(20000), key="explore_max",
                          format_func=lambda n: f"{n:,}")
phases = {"before + after": ("before", "after"), "after": ("after",), "before": ("before",)}[pane_choice] if has_before else ("after",)
if color_by != "label" and view.after.preds is None:
    st.caption("This run stored no predictions; colouring by label.")
if not has_before and view.before is not None:
    st.caption(f"This run's before-fine-tuning set has no {md_code(output)} space (it was stored before every space "
               "was kept): after pane only. Pick `encoder` for both panes.")
_url.notes(url)
view_params = {"run": run_id, "split": split, "space": output, "proj": method, "dims": dims, "color": color_by,
               "panes": pane_choice}
_url.write(view_params)  # the address bar opens this view (the trajectory adds frame / rescale below)

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
pane_preds = spaces.phase_predictions({"before": view.before, "after": view.after}, data["ids"])
panes = []
for phase, title, pts, anchors in zip(data["phases"], data["titles"], data["points"], data["anchors"]):
    preds_, source = pane_preds.get(phase, (None, None))
    short = f" · preds: {source}" if phase == "before" and color_by != "label" and source else ""
    panes.append({"title": title + short, "points": pts, "anchors": anchors, "preds": preds_, "own_preds": True})
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
legend = ""
if color_by != "label" and "before" in data["phases"]:
    before_source = pane_preds.get("before", (None, None))[1]
    legend = (f" Before pane coloured by the before model's own predictions: {md_text(spaces.pred_source_text(before_source))};"
              f" after pane by {md_text(spaces.pred_source_text(pane_preds.get('after', (None, None))[1]))}.")
st.caption(f"{METHOD_LABELS[shown_method]} {dims}-D of {md_code(output)}"
           f"{' (the space ' + md_text(objective) + ' trains)' if output == trained else ''} on {split}. {how}{stars}{legend}")
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
    before_source = view.before.pred_source if view.before is not None else None
    vs = {"zero-shot": "zero-shot", "nearest class mean": "before (nearest class mean)"}.get(before_source or "zero-shot", "before")
    delta = None if acc_before is None or res.get("acc") is None else f"{100 * (res['acc'] - acc_before):+.1f} pts vs {vs}"
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
    paged_grid(dataset, sel, _caption, key="explore_sel",
               note=f"in the '{md_text(pane)}' pane · {wrong} misclassified · captions: label → prediction (after)")
elif not neighbours:
    st.caption("Select points with the box or lasso tool to see their images; click a point for its nearest neighbours.")

# TRAJECTORY ------------------------------------------------------------------------------------
n_snaps = len(list_snapshots(run_dir))
with st.expander(f"Training trajectory ({n_snaps} val snapshots)", icon=":material/animation:", expanded=url.has("frame")):
    if st.toggle("Show how the embedding moved during training", value=url.has("frame"), key="explore_traj"):
        rescale = st.toggle("Rescale each frame", value=url.flag("rescale", False, what="rescale"), key="explore_rescale",
                            help="off: fixed axes, so a space that tightens is seen to tighten; on: every frame "
                                 "centred and scaled to the same spread (its shape at each step)")
        with st.spinner("Projecting the snapshots…"):
            frames, traj_labels = _trajectory(root, run_id, output, method, dims, rescale)
        if len(frames) < 2:
            st.info(f"This run kept fewer than two snapshots with a {md_code(output)} space.")
        else:
            steps = [step for step, _ in frames]
            at_step = url.integer("frame", 0, 10**9, steps[-1], what="frame")
            at_step = min(steps, key=lambda s: abs(s - at_step))  # the nearest stored frame
            step = st.select_slider("Frame (training step)", steps, value=at_step, key="explore_frame",
                                    help="or press ▶ play on the figure")
            st.plotly_chart(report.trajectory_figure(frames, traj_labels, names, active=steps.index(step),
                                                     title=f"{METHOD_LABELS[method]} of {output} along training, each "
                                                           "frame aligned to the previous one (rigid Procrustes)"),
                            key="explore_traj_fig")
            _url.write({**view_params, "frame": step, "rescale": rescale})
            _url.notes(url)

# DATA SELECTION (seed 002) ---------------------------------------------------------------------
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
