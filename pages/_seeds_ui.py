"""Page helpers for the two research-seed methods: content-style (seed 001) and VeCAF (seed 002).

Not a page. Every function draws with the streamlit module it is given (`st`) and holds no business
logic: the experiments live in core/curves.py, selections in core/selection.py (saved ones in
core/selections.py), the objective in core/content_style.py. Wiring points:

    from pages import _seeds_ui as seeds

    # Compare page: the seeds' plots, from stored curve experiments (python -m core label-curve / budget-curve)
    seeds.label_curve_section(st, store, key="cmp_lc")        # picker + error-vs-labels plot + table
    seeds.label_curve_launcher(st, manager, key="cmp_lc_run") # queue a label curve as background runs
    seeds.budget_curve_section(st, store, key="cmp_bc")       # picker + accuracy-vs-budget plot + table
    seeds.render_label_curve(st, rows, key=...)                # just the plot (+ table) for rows you have
    seeds.render_budget_curve(st, rows, key=...)

    # Learn page: one tab each
    seeds.learn_content_style(st)
    seeds.learn_vecaf(st)

    # Train page: extra settings, returned as TrainConfig overrides (merge into the config you build)
    overrides = seeds.content_style_settings(st, key="train_cs")     # {"labels": ..., "cs_*": ...}
    selection = seeds.selection_picker(st, root, dataset, key="train_sel")  # a saved selection id or None
    seeds.selection_maker(st, root, backbone, dataset, key="train_make")    # run a selection from the page

    # Explore page
    ids = seeds.selected_ids(run_or_config, root)   # np.ndarray of training sample ids, or None
    seeds.selection_caption(st, run_or_config, root)  # one line: "trained on selection ... (VeCAF, 200 of 3,500)"
    seeds.render_selection_map(st, selection_id, root, key=...)  # the pool, selected samples highlighted, hover images

Note for Explore: a run stores *val/test* embeddings, while a selection holds *training* ids, so the
selected ids never appear among a run's stored points. `render_selection_map` draws the training pool
itself (embedded by the selector's frozen backbone) with the selection highlighted.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from core import curves
from core.errors import EmbedLabError
from core.safe_text import md_code, md_text
from pages._wording import ui_message

STRATEGY_LABELS = dict(curves.STRATEGY_NAMES)  # random, k-center, ActiveFT, VeCAF, density
LABEL_CHOICES = ("all", 10, 100, 1000)  # the Train page's "labelled images" options


def _objective_style() -> tuple[dict, dict]:
    from core.objectives import objective_colours, objective_labels  # each objective's registry entry

    return objective_labels(), objective_colours()


# ------------------------------------------------------------------------------------- curves
def render_label_curve(st, rows: list[dict], *, key: str = "seeds_label_curve", table: bool = True) -> None:
    """Test error vs labelled images, one line per objective; `rows` from core.curves (label_curve / curve_rows)."""
    done = [r for r in rows if r.get("status") == "finished" and r.get("test_error") is not None]
    if not done:
        st.info("No finished runs in this curve yet. Make one with `python -m core label-curve --backbone B "
                "--dataset D --labels 10,100,1000,all`.")
        return
    labels, colors = _objective_style()
    st.plotly_chart(curves.label_curve_figure(rows, colors=colors, labels=labels), key=key)
    st.caption("Solid: final test error (after the last step). Dashed: best test error, at the evaluation with the "
               "highest **val** accuracy (picked on val, reported on test; the paper plots each run's best error).")
    if table:
        st.dataframe(_table(rows, ("objective", "labels", "seed", "test_error", "best_test_error", "best_step", "test_acc",
                                   "status", "run_id")), hide_index=True, key=f"{key}_table")


def label_curve_launcher(st, manager, *, key: str = "seeds_lc_run") -> list[str]:
    """A small form that queues a label curve (content-style vs CE) as ordinary background runs on `manager`
    (core.jobs.JobManager); returns the queued run ids ([] when nothing was queued)."""
    from core.train import TrainConfig

    d = TrainConfig()
    with st.expander("Run a label curve in the background", icon=":material/add_chart:"):
        cols = st.columns(3)
        backbone = cols[0].text_input("Backbone", "efficientnet_lite0", key=f"{key}_backbone")
        dataset = cols[1].text_input("Dataset", d.dataset, key=f"{key}_dataset")
        labels = cols[2].text_input("Labelled images", "10,100,all", key=f"{key}_labels", help="comma list; 'all' = every image")
        cols = st.columns(4)
        steps = int(cols[0].number_input("Steps per run", 1, 100_000, d.steps or 60, key=f"{key}_steps"))
        per_class = int(cols[1].number_input("Training images per class", 1, 1_000_000, d.n_per_class or 80, key=f"{key}_npc"))
        seeds_text = cols[2].text_input("Seeds", "0", key=f"{key}_seeds", help="comma list; each point runs once per seed")
        regulariser = cols[3].selectbox("Content-style priors", ["adversarial", "moments"], key=f"{key}_reg")
        if not st.button("Queue the runs", key=f"{key}_go", icon=":material/play_arrow:"):
            return []
        try:
            plans = curves.label_curve_plans(backbone.strip(), dataset.strip(), curves.int_list(labels, allow_all=True),
                                             ("ce", "content-style"), steps, seeds=curves.int_list(seeds_text),
                                             n_per_class=per_class, cs_regulariser=regulariser)
            ids = manager.submit_many([cfg for cfg, _ in plans])
        except EmbedLabError as exc:
            st.error(md_text(ui_message(exc)), icon=":material/error:")
            return []
        st.success(f"Queued {len(ids)} runs (experiment `{plans[0][0].experiment}`): they train one after another "
                   "(Runs page); pick the experiment above to see the curve fill in.")
        return ids


def render_budget_curve(st, rows: list[dict], *, key: str = "seeds_budget_curve", table: bool = True, store=None) -> None:
    """Test accuracy vs selection budget, one line per strategy (band: mean ± std over seeds); with `store`,
    also batches-to-accuracy from the runs' eval history. `rows` from core.curves (budget_curve / curve_rows)."""
    done = [r for r in rows if r.get("status") == "finished" and r.get("test_acc") is not None]
    if not done:
        st.info("No finished runs in this curve yet. Make one with `python -m core budget-curve` (the offline default: "
                "VeCAF, ActiveFT, k-center and random on Fashion-MNIST, 3 seeds).")
        return
    st.plotly_chart(curves.budget_curve_figure(rows, labels=STRATEGY_LABELS), key=key)
    if store is not None:
        btc = curves.batches_to_accuracy(store, rows)
        if btc["target"] is not None and btc["series"]:
            st.plotly_chart(curves.batches_figure(btc, labels=STRATEGY_LABELS), key=f"{key}_batches")
            missed = sum(r["steps"] is None for r in btc["rows"])
            st.caption(f"Batches-to-accuracy: optimizer steps until a run's logged validation accuracy first reached "
                       f"{btc['target']:.3f} (0.9 × the best run's); the paper's efficiency measure."
                       + (f" {missed} run(s) never reached it and are left out." if missed else ""))
    if table:
        st.dataframe(_table(rows, ("strategy", "budget", "seed", "test_acc", "classes_covered", "coverage_radius",
                                   "status", "run_id")), hide_index=True, key=f"{key}_table")


def label_curve_section(st, store, *, key: str = "seeds_lc") -> list[dict]:
    """Pick a stored label-curve experiment and draw it; returns its rows ([] when there is none)."""
    return _section(st, store, curves.LABEL_CURVE, key, render_label_curve)


def budget_curve_section(st, store, *, key: str = "seeds_bc") -> list[dict]:
    """Pick a stored budget-curve experiment and draw it; returns its rows ([] when there is none)."""
    return _section(st, store, curves.BUDGET_CURVE, key, render_budget_curve)


def _section(st, store, kind: str, key: str, render) -> list[dict]:
    experiments = curves.list_experiments(store, kind)
    if not experiments:
        cmd = ("label-curve --labels 10,100,1000,all --backbone B --dataset D" if kind == curves.LABEL_CURVE else
               "budget-curve` (offline default) or `python -m core budget-curve --backbone B --dataset D --budgets 20,50,100")
        st.info(f"No {kind} experiments yet: run `python -m core {cmd}`.")
        return []
    names = {e["experiment"]: f"{e['experiment']} · {e['backbone']} on {e['dataset']} · {e['finished']}/{e['runs']} runs"
             for e in experiments}
    tag = st.selectbox("Experiment", list(names), format_func=names.get, key=f"{key}_pick")
    rows = curves.curve_rows(store, tag)
    if render is render_budget_curve:
        render(st, rows, key=f"{key}_fig", store=store)
    else:
        render(st, rows, key=f"{key}_fig")
    return rows


def _table(rows: list[dict], cols: tuple[str, ...]) -> list[dict]:
    out = []
    for r in rows:
        row = {c: r.get(c) for c in cols}
        if "labels" in row:  # one type per column (Arrow): 'all' and counts as text
            row["labels"] = "all" if row["labels"] is None else str(row["labels"])
        if "strategy" in row:
            row["strategy"] = STRATEGY_LABELS.get(row["strategy"], row["strategy"])
        out.append(row)
    return out


# -------------------------------------------------------------------------------------- Learn
def learn_content_style(st) -> None:
    """Learn-page section for the content-style objective (seed 001): the loss, and its two regularisers compared."""
    from core.content_style import PRIOR_TEMPERATURE, style_surrogate_bias

    st.latex(r"\hat c = \mathrm{softmax}(W_c\,y),\quad s = g_s(y) \in \mathbb{R}^{8},\quad \hat y = g_d(\hat c, s)")
    st.latex(r"\mathcal{L} = \underbrace{\tfrac{1}{|M|}\textstyle\sum_{i\in M} \mathrm{CE}(W_c y_i, k_i)}_{\text{labelled only}}"
             r" + \lambda_c\,\mathrm{KL}\big(q(\hat c)\,\|\,\pi\big) + \lambda_s\,\mathrm{KL}\big(q(s)\,\|\,\mathcal{N}(0,I)\big)"
             r" + \lambda_r\,\frac{\sum_i \|\hat y_i - y_i\|^2}{\sum_i \|y_i - \bar y\|^2}")
    st.markdown(
        "The backbone's embedding $y$ (the paper's latent [CLS] token) is split into a **content** code (class "
        "probabilities, the classifier) and a small **style** code, and a decoder must rebuild $y$ from both. Only the "
        "labelled images $M$ get the cross-entropy; every image, labelled or not, is pushed to have content codes "
        r"distributed like the class prior $\pi$ (confident, classes balanced), a standard-normal style, and a faithful "
        "reconstruction. Because 8 style numbers cannot carry the whole embedding, the class information has to flow "
        "through the content code, so the unlabelled images shape the classifier too. The reconstruction target is "
        "the latent token itself, as in the paper (its gradient reaches the backbone); the error is divided by the "
        "batch's variance, so shrinking the embedding cannot cheat (the Train page's *Detach the reconstruction target* detaches it instead).")
    st.markdown("**Two ways to match the priors** (Train page: *Content-style priors*):")
    adv, mom = st.columns(2)
    adv.markdown(
        "**adversarial** (default, the paper's). Two small discriminators, as in adversarial autoencoders: $D_c$ "
        r"tells content codes from samples of a smoothed categorical prior (a class drawn from $\pi$, relaxed with "
        rf"Gumbel-softmax at temperature {PRIOR_TEMPERATURE:g}), $D_s$ tells style codes from $\mathcal{{N}}(0,I)$ draws; "
        r"the encoder is trained to fool them ($-\log D$). Both players learn in the same step: the discriminator "
        "loss sees detached codes, the encoder's loss sees the discriminators with frozen weights. Estimates the "
        "KL of the whole distribution, unbiased by the batch size, at the price of two networks and a noisier loss; "
        "spectral normalisation and label smoothing keep the game stable. Their losses are stored as run metrics "
        r"`cs_d_content`, `cs_d_style` (about $2\log 2 = 1.39$ when neither side wins).")
    mom.markdown(
        r"**moments** (a closed-form surrogate). Content: $\mathrm{KL}(\bar c\,\|\,\pi) + \frac{1}{B}\sum_i H(\hat c_i)$, "
        r"the batch's average class distribution matches $\pi$ and every code is one-hot. Style: the KL of the "
        r"batch's Gaussian fit, $\tfrac12(\mathrm{tr}\,\Sigma + \mu^\top\mu - S - \log\det\Sigma)$, which only "
        "matches the first two moments. Smooth and cheap, but **biased at small batch**: a batch drawn from "
        r"$\mathcal{N}(0,I)$ itself should score 0, and does not (table).")
    bias = style_surrogate_bias((4, 16, 64, 256), dim=8, trials=200)
    mom.dataframe([{"batch size": b, "style surrogate of a true N(0, I) batch": round(v, 3)} for b, v in bias.items()],
                  hide_index=True)
    mom.caption("Mean over 200 batches, style size 8 (computed live by `core.content_style.style_surrogate_bias`). "
                "Below batch 9 the 8x8 covariance is singular and its log det is set by the 0.001 ridge.")
    st.markdown(
        "**Key knob:** the number of labelled images (Train page: *Labelled training images*); the gain over CE is largest with few labels. "
        "In Explore, the `content` output should cluster by class and the `style` output should not. The paper's "
        "plot, test error vs labels against CE (best and final), is one click away on the Compare page "
        "(`python -m core label-curve`).")


def learn_vecaf(st) -> None:
    """Learn-page section for VeCAF data selection (seed 002)."""
    st.latex(r"\min_{\theta_1..\theta_K}\; \frac{1}{\sum_i w_i}\sum_i w_i\,\log\!\Big(1 + \frac{\sum_{k'} e^{c_{k'}\cdot c_{k(i)}/T}}"
             r"{e^{z_i\cdot c_{k(i)}/T}}\Big),\quad c_k = \frac{\theta_k}{\|\theta_k\|},\; k(i) = \arg\max_k z_i\cdot c_k,\;"
             r"w_i = \frac{\ell_i}{\bar\ell}")
    st.latex(r"e_i^{\mathrm{aug}} = e_i - \eta\,\alpha_i\,(e_i - t_i),\quad "
             r"\alpha_i = \frac{e^{s\, e_i\cdot t_i}}{e^{s\, e_i\cdot t_i} + \sum_{r \ne i} e^{s\, e_i\cdot t_r}}")
    st.markdown(
        "**Objective-aware data selection (ODS).** Instead of fine-tuning on a random subset, VeCAF places $K$ "
        "continuous centroids in the model's embedding space (ActiveFT's parametric selection) so that their "
        r"distribution matches the pool's — the $-z_i\cdot c_{k(i)}$ part is the KL term, the centroids' own "
        "log-sum-exp similarity the diversity regulariser subtracted from it — and then snaps each centroid to its "
        "nearest unused image. VeCAF's change to ActiveFT is the weight $w_i$: the **current model's training loss** "
        "on image $i$ (the pretrained model's zero-shot or nearest-class-mean head in round 0, the fine-tuned "
        "run's own classifier after that), so the picks follow what the model has not learnt yet. Three selectors "
        "with different seeds are merged by votes, and rounds keep earlier picks "
        "(`python -m core select --strategy vecaf --rounds 3` or `--previous SEL --from-run RUN`).")
    st.markdown(
        "**Cross-attentive embedding augmentation (CEA).** With a CLIP-style backbone each image embedding is "
        "nudged towards the text embedding $t_i$ of **its own caption**, in proportion to how strongly the image "
        r"attends to that caption against the other captions ($\alpha_i$). Captions come from the dataset "
        "(`captions.csv` / `captions.jsonl` beside the class folders) or, where there are none, are label-free "
        "**pseudo-captions**: EfficientNet-Lite0's own top-2 ImageNet classes for that image (\"a photo of a "
        "{top-1}, or a {top-2}\"). A target-domain caption (e.g. *It is a snowy day!*) can be appended to all "
        "of them. The class-prompt variant is offered only as `--captions label-informed`: it feeds the labels into "
        "the geometry, which the baselines never get.")
    st.markdown(
        "**Compare** VeCAF with ActiveFT (the same optimisation without loss weights), k-center (farthest-first) and "
        "random selections in the accuracy-vs-budget and batches-to-accuracy plots (`python -m core budget-curve`, "
        "3 seeds; Compare page). EmbedLab's earlier greedy kernel-density selector is kept as `density`. "
        "**Not implemented:** the paper's ImageNet-scale experiments; selection happens in the top 128 principal "
        "directions of the embeddings, with minibatches on pools over 4,096 images (for speed on a CPU).")


# -------------------------------------------------------------------------------------- Train
def content_style_settings(st, *, key: str = "seeds_cs", defaults: Any = None) -> dict:
    """Widgets for the content-style objective; returns TrainConfig overrides {labels, cs_*}."""
    from core.train import TrainConfig

    d = defaults or TrainConfig()
    choice = st.select_slider("Labelled training images", options=list(LABEL_CHOICES), value="all" if d.labels is None
                              else (d.labels if d.labels in LABEL_CHOICES else 100), key=f"{key}_labels",
                              help="The rest of the training split is used without labels (content-style only).")
    cols = st.columns(3)
    out = {"labels": None if choice == "all" else int(choice)}
    out["cs_style_dim"] = int(cols[0].number_input("Style size", 1, 256, d.cs_style_dim, key=f"{key}_sdim"))
    out["cs_ce_weight"] = float(cols[1].number_input("CE weight", 0.0, 100.0, d.cs_ce_weight, 0.1, key=f"{key}_wce"))
    out["cs_prior_weight"] = float(cols[2].number_input("Content-prior weight", 0.0, 100.0, d.cs_prior_weight, 0.1, key=f"{key}_wpri"))
    cols = st.columns(3)
    out["cs_entropy_weight"] = float(cols[0].number_input("Entropy share", 0.0, 10.0, d.cs_entropy_weight, 0.1, key=f"{key}_went"))
    out["cs_style_weight"] = float(cols[1].number_input("Style-prior weight", 0.0, 100.0, d.cs_style_weight, 0.1, key=f"{key}_wsty"))
    out["cs_recon_weight"] = float(cols[2].number_input("Reconstruction weight", 0.0, 100.0, d.cs_recon_weight, 0.1, key=f"{key}_wrec"))
    cols = st.columns(2)
    options = ["adversarial", "moments"]
    out["cs_regulariser"] = cols[0].selectbox(
        "Content-style priors", options, index=options.index(d.cs_regulariser), key=f"{key}_reg",
        format_func={"adversarial": "adversarial (discriminators, the paper's)", "moments": "moments (closed-form surrogate)"}.get,
        help="How content and style codes are matched to their priors; the Learn page compares the two.")
    out["cs_recon_detach"] = bool(cols[1].checkbox("Detach the reconstruction target", d.cs_recon_detach, key=f"{key}_detach",
                                                   help="Off (the paper's): the embedding itself is trained to be "
                                                        "reconstructible from content and style."))
    return out


def selection_picker(st, root: str | Path | None, dataset: str | None = None, *, key: str = "seeds_sel") -> str | None:
    """A selectbox of saved selections (of `dataset` when given); returns the chosen id or None (= no selection)."""
    from core.selections import list_selections, selection_info

    options: dict[str | None, str] = {None: "none (the usual class-balanced subset)"}
    for sid in list_selections(root):
        try:
            info = selection_info(sid, root)
        except EmbedLabError:
            continue
        if dataset and info.get("dataset") != dataset:
            continue
        options[sid] = f"{sid} · {STRATEGY_LABELS.get(info['strategy'], info['strategy'])}, {info['budget']} images"
    return st.selectbox("Train on a data selection", list(options), format_func=options.get, key=key,
                        help="Make one with `python -m core select --strategy vecaf --budget N ...`.")


def selection_maker(st, root: str | Path | None, backbone: str, dataset: str, *, key: str = "seeds_make",
                    manager=None) -> None:
    """A small form that runs core.selection.select for the current backbone and dataset in the background,
    on the JobManager's task runner (core/tasks.py: `manager.tasks`, default the app's one manager), so the
    page stays responsive, every session's selections share one queue, and the outcome survives a rerun;
    a fragment polls it. The new selection then appears in `selection_picker`.

    Selections are not training runs, so they do not take a place in the run queue; big pools and
    multi-round VeCAF (`--rounds`) are better run from the CLI."""
    from core.selection import STRATEGIES, select

    if manager is None:
        from pages._ui import get_manager

        manager = get_manager()
    cols = st.columns([2, 2, 1])
    strategy = cols[0].selectbox("Strategy", list(STRATEGIES), format_func=lambda s: STRATEGY_LABELS.get(s, s),
                                 key=f"{key}_strategy", index=list(STRATEGIES).index("vecaf"))
    budget = int(cols[1].number_input("Budget (images)", 2, 1_000_000, 200, 10, key=f"{key}_budget"))
    job = st.session_state.get(f"{key}_job")
    busy = job is not None and job["task"].active
    if cols[2].button("Select", key=f"{key}_go", icon=":material/filter_alt:", disabled=busy):
        home_root = Path(root) if root else None

        def work(progress):  # no streamlit calls in here: the task carries progress, result and error back
            return select(backbone, dataset, strategy, budget, root=home_root, on_progress=progress)

        try:
            task = manager.tasks.submit("selection", f"{STRATEGY_LABELS.get(strategy, strategy)}, {budget}", work)
        except EmbedLabError as exc:
            st.error(md_text(str(exc)))
            return
        # "thread": the task's own thread, which ends with the selection (tests join it)
        job = {"task": task, "thread": task.thread, "what": task.label}
        st.session_state[f"{key}_job"] = job
    if job is not None:
        _selection_status(st, key, job)


def _selection_status(st, key: str, job: dict) -> None:
    task = job["task"]

    @st.fragment(run_every=1.0 if task.active else None)
    def status():
        if task.status == "queued":
            st.info(f"Selection ({md_text(job['what'])}) waits for another selection to finish… "
                    f"{time.time() - task.submitted:.0f} s.")
        elif task.status == "running":
            doing = f": {md_text(task.progress)}" if task.progress else ""
            st.info(f"Selecting ({md_text(job['what'])}) in the background{doing}… {task.elapsed():.0f} s. "
                    "Embedding a large pool the first time takes a while; later selections reuse it.")
        elif task.error:
            st.error(md_text(ui_message(task.error)))
        else:
            record = task.result
            st.session_state[f"{key}_made"] = record["id"]
            st.success(f"Saved selection {md_code(record['id'])} ({record['seconds']:.0f} s): pick it above to train on it.")
        if not task.active and not job.get("shown"):
            job["shown"] = True
            st.rerun()  # the whole page: the picker lists the new selection, the Select button is enabled again

    status()


# ------------------------------------------------------------------------------------- Explore
def _config_of(run: Any) -> dict:
    if run is None:
        return {}
    if isinstance(run, dict):
        return run.get("config", run) if "config" in run and isinstance(run["config"], dict) else run
    if hasattr(run, "config") and isinstance(run.config, dict):  # core.store.RunRecord
        return run.config
    if hasattr(run, "to_dict"):  # core.train.TrainConfig
        return run.to_dict()
    return {}


def selected_ids(run: Any, root: str | Path | None = None) -> np.ndarray | None:
    """Training sample ids of the selection a run trained on (RunRecord, config dict or TrainConfig);
    None when it used no selection or the selection file is gone."""
    from core.selections import load_selection

    sid = _config_of(run).get("selection")
    if not sid:
        return None
    try:
        return load_selection(sid, root)
    except EmbedLabError:
        return None


def selection_caption(st, run: Any, root: str | Path | None = None) -> None:
    """One caption line about the run's selection (nothing when it has none)."""
    from core.selections import selection_info

    sid = _config_of(run).get("selection")
    if not sid:
        return
    try:
        info = selection_info(sid, root)
    except EmbedLabError:
        st.caption(f"Trained on selection {md_code(sid)} (its file is gone).")
        return
    st.caption(f"Trained on selection {md_code(sid)}: {STRATEGY_LABELS.get(info['strategy'], info['strategy'])}, "
               f"{info['budget']:,} of {info['pool']:,} training images, {info['classes_covered']}/{info['classes']} classes.")


def render_selection_map(st, selection: str, root: str | Path | None = None, *, key: str = "seeds_sel_map",
                         max_points: int = 4000) -> None:
    """The selection's training pool (2-D PCA of the embeddings it was chosen on), the selected samples
    highlighted; hover shows the image, a box / lasso lists the images under it."""
    from assets.scatter_component import build_payload, scatter, thumbs_for
    from core.paths import home
    from core.thumbnails import display_images
    from pages._cached import dataset as cached_dataset, pool_map

    root = str(root or home())
    try:
        m = pool_map(root, selection, max_points)
    except EmbedLabError as exc:
        st.error(md_text(exc))
        return
    selected_ids = m["ids"][m["selected"]]
    colour = st.segmented_control("Colour", ["selection", "label"], default="selection", key=f"{key}_colour",
                                  format_func={"selection": "selected vs pool", "label": "class"}.get) or "selection"
    groups = None
    if colour == "selection":
        groups = (np.where(m["selected"], 0, 1), [{"name": f"selected ({len(selected_ids)})", "color": "#111111"},
                                                  {"name": "rest of the pool", "color": "#c9c9c9"}])
    data = cached_dataset(root, m["dataset"])
    title = f"{STRATEGY_LABELS.get(m['strategy'], m['strategy'])} selection: {len(selected_ids)} of {m['pool']:,} (PCA of the pool)"
    payload = build_payload([{"title": title, "points": m["xy"]}], ids=m["ids"], labels=m["labels"], preds=None,
                            class_names=m["classes"], groups=groups, thumbs=thumbs_for(data, m["ids"]), height=460,
                            view_key=f"pool/{selection}", status=f"{len(m['ids']):,} of the pool's images · hover: image · "
                                                                 "box/lasso: list the images")
    event = scatter(payload, key=key)
    lasso = [int(i) for i in ((event or {}).get("selection") or {}).get("ids", [])]
    if lasso:
        picked = set(selected_ids.tolist())
        lasso.sort(key=lambda i: i not in picked)  # the selected images first
        st.caption(f"{len(lasso)} images under the lasso, {sum(i in picked for i in lasso)} of them selected "
                   "(captions marked ●); the first 48:")
        labels = dict(zip(m["ids"].tolist(), m["labels"].tolist()))
        st.image(display_images(data.images[lasso[:48]], 84), width=84,
                 caption=[("● " if i in picked else "") + md_text(m["classes"][labels[i]]) for i in lasso[:48]])
