"""`python -m core bench [--quick] [--json]`: EmbedLab's speed, measured side by side.

Outside the library's import graph: only the command line (core/cli/bench.py) imports this package, and it
imports nothing of the UI (the Explore payload it measures is core/scatter_payload.py, which the
scatter component also uses).

Every figure that can be a ratio is one, measured in one process with the two sides interleaved
(A B A B ...) and the median taken, so a noisy shared machine moves both sides alike:

    loop_ratio      EmbedLab's training loop throughput / a bare hand-written PyTorch loop
                    (same model, batch, optimizer, augmentation, data in memory)      goal >= 0.97
    extract_ratio   embedding extraction throughput / a bare `model(x)` loop under
                    torch.inference_mode                                             goal >= 0.95
    cache_speedup   epoch time recomputing a frozen backbone / the same epoch reading
                    cached features                                                  goal >= 20
    ui_slowdown     a job's mean step time while the UI's per-second progress polling runs /
                    while it does not (alternating 2 s windows in one run)           goal <= 1.05
    pca_50k_s, umap_10k_s, tsne_5k_s   projection times on 384-d data (seconds), goals umap <= 10,
                    tsne <= 6; plus *_lever_*_s: what each UMAP / t-SNE setting buys
    quick_compare_s  wall time of the default CE + LaCViT + FLYP comparison (cold caches),
                     quick_compare_warm_s the same with caches warm
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

POLL_INTERVAL_S = 1.0  # the Train page's live fragment ticks once a second


# ------------------------------------------------------------------------------ measurement
def _interleaved(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Median throughputs of `a` and `b`, run alternately so machine noise hits both."""
    ra, rb = [], []
    for _ in range(repeats):
        ra.append(a())
        rb.append(b())
    return statistics.median(ra), statistics.median(rb)


class _StepClock:
    """Times a run's step loop from its step events (excludes set-up, evaluation, embedding).

    Times the stage called `stage`, or the last stage when None.
    """

    def __init__(self, stage: str | None = None):
        self.stage = stage
        self.times: list[tuple[int, float]] = []

    def __call__(self, event):
        if event["type"] == "step" and (self.stage is None or event["stage"] == self.stage):
            self.times.append((event["step"], time.perf_counter()))
        elif event["type"] == "stage" and self.stage is None:
            self.times.clear()

    def steps_per_s(self) -> float:
        (s0, t0), (s1, t1) = self.times[0], self.times[-1]
        return (s1 - s0) / max(t1 - t0, 1e-9)


def _bench_cfg(**kw):
    from ..train import TrainConfig

    base = dict(objective="ce", backbone="efficientnet_lite0", dataset="fashion-mnist", n_per_class=40,
                eval_per_class=4, batch_size=32, image_size=64, trainable="all", cache_features=False,
                eval_every=10_000, snapshots=2, steps=20, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _dataset_name(root: Path) -> str:
    from ..datasets import DEBIAN_FASHION_DIR

    return "fashion-mnist" if DEBIAN_FASHION_DIR.exists() else "mnist5k"


def loop_ratio(root: Path, *, steps: int, repeats: int) -> dict:
    """EmbedLab's `train()` step loop vs the same work written as a bare loop."""
    from .. import datasets as ds
    from ..backbones import create_backbone
    from ..store import RunStore
    from ..train import train

    cfg = _bench_cfg(dataset=_dataset_name(root), steps=steps)
    store = RunStore(root)

    def embedlab() -> float:
        clock = _StepClock()
        result = train(cfg, store=store, root=root, on_event=clock)
        assert result["status"] == "finished", result
        return clock.steps_per_s()

    data = ds.load_dataset(cfg.dataset, root)
    train_split = ds.splits(data, n_per_class=cfg.n_per_class, eval_per_class=cfg.eval_per_class, seed=cfg.seed)["train"]
    images = torch.from_numpy(np.ascontiguousarray(train_split.images))
    labels = torch.from_numpy(train_split.labels)

    def bare() -> float:
        torch.manual_seed(0)
        backbone = create_backbone(cfg.backbone, image_size=cfg.image_size, trainable="all").use_channels_last()
        prep = dataclasses.replace(backbone.preprocess, hflip=data.hflip)
        head = torch.nn.Linear(backbone.embed_dim, data.num_classes)
        opt = torch.optim.AdamW([{"params": list(head.parameters()), "lr": cfg.lr},
                                 {"params": list(backbone.parameters()), "lr": cfg.lr / 10}], weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(0)
        backbone.train()
        params = list(head.parameters()) + list(backbone.parameters())
        t0 = None
        for step in range(steps):
            if step == 1:
                t0 = time.perf_counter()  # like the step clock: from the first step's end
            idx = torch.randint(len(images), (cfg.batch_size,), generator=gen)
            x = prep.train(images[idx], gen)
            loss = F.cross_entropy(head(backbone.encode_image(x)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)  # the same math EmbedLab does
            opt.step()
        loss.item()
        return (steps - 1) / (time.perf_counter() - t0)

    ours, theirs = _interleaved(embedlab, bare, repeats)
    return {"loop_ratio": ours / theirs, "loop_steps_per_s": ours, "bare_steps_per_s": theirs}


def cpu_levers(*, repeats: int, steps: int = 6) -> dict:
    """Speed-ups of the levers EmbedLab switches on or leaves off, one training step side by side:
    NHWC memory format (on for convnets) and bf16 autocast on the CPU (off)."""
    from ..backbones import create_backbone

    y = torch.randint(0, 10, (32,))

    def steps_per_s(channels_last: bool, bf16: bool) -> Callable[[], float]:
        def run() -> float:
            backbone = create_backbone("efficientnet_lite0", image_size=64, trainable="all")
            if channels_last:
                backbone.use_channels_last()
            head = torch.nn.Linear(backbone.embed_dim, 10)
            opt = torch.optim.AdamW(list(backbone.parameters()) + list(head.parameters()), lr=1e-4)
            x = torch.randn(32, 3, 64, 64)
            backbone.train()
            t0 = None
            for step in range(steps + 1):
                if step == 1:
                    t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = F.cross_entropy(head(backbone.encode_image(x)).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return steps / (time.perf_counter() - t0)
        return run

    nhwc, nchw = _interleaved(steps_per_s(True, False), steps_per_s(False, False), repeats)
    bf16, fp32 = _interleaved(steps_per_s(False, True), steps_per_s(False, False), repeats)
    return {"channels_last_train_speedup": nhwc / nchw, "bf16_cpu_train_speedup": bf16 / fp32}


def compile_speedup(steps: int = 8) -> dict:
    """torch.compile on the CPU: steady-state step rate vs eager, and what the first call costs.
    Not in the default run (the compile alone takes about a minute on 2 cores): `--only compile`."""
    from ..backbones import create_backbone

    def build():
        backbone = create_backbone("efficientnet_lite0", image_size=64, trainable="all").use_channels_last()
        head = torch.nn.Linear(backbone.embed_dim, 10)
        return backbone, head, torch.optim.AdamW(list(backbone.parameters()) + list(head.parameters()), lr=1e-4)

    x, y = torch.randn(32, 3, 64, 64).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (32,))

    def rate(model, head, opt) -> tuple[float, float]:
        t_first = time.perf_counter()
        for step in range(steps + 1):
            if step == 1:
                first, t0 = time.perf_counter() - t_first, time.perf_counter()
            loss = F.cross_entropy(head(model(x)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps / (time.perf_counter() - t0), first

    backbone, head, opt = build()
    eager, _ = rate(backbone.model, head, opt)
    backbone, head, opt = build()
    compiled, first = rate(torch.compile(backbone.model), head, opt)
    return {"compile_train_speedup": compiled / eager, "compile_first_step_s": round(first, 1)}


def extract_ratio(root: Path, *, n: int, repeats: int) -> dict:
    """`compute_embeddings` vs a bare `model(x)` loop under inference_mode (same batches)."""
    from .. import datasets as ds
    from ..backbones import ImageEncoder, create_backbone
    from ..embeddings import compute_embeddings
    from ..features import ImageSource
    from ..objectives import create_method

    data = ds.load_dataset(_dataset_name(root), root)
    split = ds.splits(data, n_per_class=max(1, n // data.num_classes), seed=0)["train"]
    backbone = create_backbone("efficientnet_lite0", image_size=112, trainable="frozen").use_channels_last()
    method = create_method("ce", backbone, ImageEncoder(backbone), data.num_classes)
    device = torch.device("cpu")
    source = ImageSource(split, backbone.preprocess, device)
    batch = 256

    def embedlab() -> float:
        t0 = time.perf_counter()
        compute_embeddings(method, source, split, device, batch_size=batch)
        return len(split) / (time.perf_counter() - t0)

    images = source.images

    def bare() -> float:
        backbone.eval()
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                backbone.encode_image(backbone.preprocess.eval(images[start:start + batch])).numpy()
        return len(images) / (time.perf_counter() - t0)

    ours, theirs = _interleaved(embedlab, bare, repeats)
    return {"extract_ratio": ours / theirs, "extract_images_per_s": ours, "bare_images_per_s": theirs}


def cache_speedup(root: Path, *, n_per_class: int, repeats: int) -> dict:
    """One epoch of head training on a frozen backbone: recomputing it vs reading the cache."""
    from ..store import RunStore
    from ..train import train

    store = RunStore(root)
    dataset = _dataset_name(root)
    steps = max(2, (n_per_class * 10) // 32)  # one epoch at batch 32

    def epoch(cache: bool) -> Callable[[], float]:
        def run() -> float:
            clock = _StepClock()
            cfg = _bench_cfg(dataset=dataset, n_per_class=n_per_class, trainable="frozen", image_size=112,
                             cache_features=cache, steps=steps)
            result = train(cfg, store=store, root=root, on_event=clock)
            assert result["status"] == "finished", result
            return clock.steps_per_s()
        return run

    epoch(True)()  # build the cache once; the comparison is about reusing it
    cached, recomputed = _interleaved(epoch(True), epoch(False), repeats)
    return {"cache_speedup": cached / recomputed, "cached_steps_per_s": cached, "recomputed_steps_per_s": recomputed}


def ui_slowdown(root: Path, *, steps: int, window_s: float = 2.0) -> dict:
    """Mean step time while the UI's per-second polling runs / while it does not, in one run.

    The poller is switched on and off in alternating `window_s` windows during a single training run,
    and every step is credited to the window it ended in: both sides share the model, the data and
    whatever else the machine is doing at that moment.
    """
    from ..store import RunStore
    from ..train import train

    store = RunStore(root)
    cfg = _bench_cfg(dataset=_dataset_name(root), steps=steps)
    run_id = store.create_run(cfg.to_dict())
    t_start = time.perf_counter()
    polling = lambda t: int((t - t_start) / window_s) % 2 == 1  # noqa: E731 - odd windows poll
    ends: list[float] = []
    stop = threading.Event()

    def on_event(event):
        if event["type"] == "step":
            ends.append(time.perf_counter())

    poller = threading.Thread(target=_poll_like_the_ui, args=(RunStore(root), run_id, stop, polling), daemon=True)
    poller.start()
    try:
        train(cfg, store=store, root=root, run_id=run_id, on_event=on_event)
    finally:
        stop.set()
        poller.join()
    durations = {True: [], False: []}
    for prev, end in zip(ends, ends[1:]):
        durations[polling(end)].append(end - prev)
    polled, quiet = (statistics.mean(durations[k]) if durations[k] else float("nan") for k in (True, False))
    return {"ui_slowdown": polled / quiet, "step_s_polled": polled, "step_s_unpolled": quiet,
            "ui_steps_polled": len(durations[True]), "ui_steps_unpolled": len(durations[False])}


def _poll_like_the_ui(store, run_id: str, stop: threading.Event, active: Callable[[float], bool] = lambda t: True) -> None:
    """What one tick of the live fragment does, once a second while `active(now)`: read the run, its
    metrics, draw the curves."""
    import plotly.graph_objects as go

    while not stop.wait(POLL_INTERVAL_S):
        if not active(time.perf_counter()):
            continue
        store.list(limit=50)
        record = store.get(run_id)
        series = store.metrics(run_id, ["loss", "val_acc"])
        fig = go.Figure()
        for key, points in series.items():
            fig.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=key)
        fig.update_layout(title=f"{record.status} {record.progress.get('step')}")
        fig.to_json()


PROJECTION_LEVERS = {  # name -> (method, params): each lever alone, then all together (the defaults)
    "umap": {"before": {"pre_pca": False, "n_epochs": 500}, "pca50": {"pre_pca": True, "n_epochs": 500},
             "epochs200": {"pre_pca": False, "n_epochs": 200}, "now": {}},
    "tsne": {"pca50": {"pre_pca": True}, "all_cores": {"n_jobs": 2}, "now": {}},
}  # umap "before": the old code's settings (umap's own n_epochs at 10k is 500); t-SNE's defaults did not change


def projection_times(root: Path, *, quick: bool, sizes: dict[str, int] | None = None, levers: bool = True,
                     params: dict[str, dict] | None = None) -> dict:
    """Seconds to project clustered 384-d data: PCA 50k, UMAP 10k, t-SNE 5k (2-D), with the defaults;
    `levers`: each speed lever of UMAP / t-SNE alone and all together, the settings run one after
    another on the same data (`<method>_<n>k_lever_<name>_s`); `params`: per-method settings under
    every lever (the test's small form uses few t-SNE iterations). `projection_jit_warmup_s` is the first
    tiny UMAP + t-SNE in this process: numba loading its kernels from the disk cache on a warm machine,
    compiling them (15-20 s) only the first time on a machine."""
    from .. import projections

    sizes = {"pca": 50_000, "umap": 10_000, "tsne": 5_000, **(sizes or {})}
    params_all = params or {}
    rng = np.random.default_rng(0)

    def clustered(n: int) -> np.ndarray:
        centres = rng.normal(size=(10, 384)).astype(np.float32)
        return (centres[rng.integers(0, 10, n)] + 0.5 * rng.normal(size=(n, 384))).astype(np.float32)

    out = {}
    out["projection_jit_warmup_s"] = round(projections.warm_up(), 2)
    for method in ("pca", "umap", "tsne"):
        n = sizes[method]
        x = clustered(n)
        tag = f"{method}_{n // 1000}k" if n >= 1000 else f"{method}_{n}"
        runs = {"now": {}}
        if levers and method in PROJECTION_LEVERS:
            runs = PROJECTION_LEVERS[method]
        for name, lever in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            projections.project(x, method=method, dims=2, seed=0, cache=False, **{**(params_all.get(method) or {}), **lever})
            key = tag if name == "now" else f"{tag}_lever_{name}"
            out[f"{key}_s"] = round(time.perf_counter() - t0, 2)
            # CPU seconds of all threads: on a shared machine wall time mostly measures the neighbours
            out[f"{key}_cpu_s"] = round(time.process_time() - c0, 2)
    return out


def explorer_scale(sizes=(10_000, 50_000, 100_000), max_points: int = 50_000) -> dict:
    """The Explore page's server side at scale: PCA of two panes (before/after, 384-d) and the payload
    sent to the browser. Above `max_points` the page draws a seeded subsample, as it does in the app."""
    from .. import projections
    from ..scatter_payload import build_payload, payload_bytes

    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        shown = min(n, max_points)
        labels = rng.integers(0, 10, n)
        centres = rng.normal(size=(10, 384)).astype(np.float32)
        t0 = time.perf_counter()
        panes = []
        for shift in (0.8, 0.4):  # 'before' blurrier than 'after'
            x = (centres[labels] + shift * rng.normal(size=(n, 384))).astype(np.float16)
            keep = np.sort(rng.choice(n, shown, replace=False)) if shown < n else np.arange(n)
            panes.append({"title": f"pane {shift}", "points": projections.project(x[keep], method="pca", dims=2, seed=0, cache=False)})
        project_s = time.perf_counter() - t0
        payload = build_payload(panes, ids=keep, labels=labels[keep], preds=labels[keep], class_names=[str(i) for i in range(10)])
        tag = f"{n // 1000}k"
        out[f"explore_{tag}_pca_2panes_s"] = round(project_s, 2)
        out[f"explore_{tag}_payload_mb"] = round(payload_bytes(payload) / 1e6, 2)
        out[f"explore_{tag}_points_drawn"] = shown
    return out


def quick_compare(*, dataset: str | None = None) -> dict:
    """Wall time of the no-typing default: CE, LaCViT and FLYP one after another, cold then warm."""
    from ..store import RunStore
    from ..train import TrainConfig, train

    out = {}
    with tempfile.TemporaryDirectory(prefix="embedlab-bench-") as tmp:
        root = Path(tmp)
        store = RunStore(root)
        for label in ("quick_compare_s", "quick_compare_warm_s"):
            t0 = time.perf_counter()
            accs = {}
            for objective in ("ce", "lacvit", "flyp"):
                cfg = TrainConfig(objective=objective, **({"dataset": dataset} if dataset else {}))
                result = train(cfg, store=store, root=root)
                assert result["status"] == "finished", result
                accs[objective] = result["val_acc"]
            out[label] = round(time.perf_counter() - t0, 1)
            out[label.replace("_s", "_val_acc")] = accs
    return out


def online_default_available() -> str | None:
    """The online default CLIP model if its weights are already in the local hub cache."""
    from ..backbones import CPU_ONLINE_DEFAULT

    try:
        import open_clip
        from huggingface_hub import try_to_load_from_cache

        model, _, tag = CPU_ONLINE_DEFAULT.partition("/")
        cfg = open_clip.get_pretrained_cfg(model, tag)
        repo = cfg.get("hf_hub", "").rstrip("/")
        if repo and try_to_load_from_cache(repo, "open_clip_pytorch_model.bin") or \
                repo and try_to_load_from_cache(repo, "open_clip_model.safetensors"):
            return CPU_ONLINE_DEFAULT
    except Exception:
        return None
    return None


def gpu_throughput(*, backbone: str = "ViT-B-16/laion2b_s34b_b88k", image_size: int = 224, batch_size: int = 128,
                   steps: int = 30, dataset: str = "mnist5k", device: str = "cuda") -> dict:
    """FLYP and LaCViT step throughput with AMP: EmbedLab's loop vs a bare AMP loop (random weights).

    The prepared script for a lent GPU machine (`python -m core bench --gpu --json`): images/s,
    the ratio to a bare loop doing the same forward/backward, and peak GPU memory.
    """
    from ..backbones import create_backbone
    from ..objectives import ClipLoss, SupConLoss
    from ..store import RunStore
    from ..train import TrainConfig, train

    dev = torch.device(device)
    out: dict = {"gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "gpu_backbone": backbone,
                 "gpu_image_size": image_size, "gpu_batch_size": batch_size}
    with tempfile.TemporaryDirectory(prefix="embedlab-gpu-") as tmp:
        root = Path(tmp)
        store = RunStore(root)
        for objective in ("flyp", "lacvit"):
            cfg = TrainConfig(objective=objective, backbone=backbone, weights="random", dataset=dataset, image_size=image_size,
                              batch_size=batch_size, steps=steps, trainable="all", cache_features=False, n_per_class=None,
                              eval_per_class=2, eval_every=10_000, snapshots=2, wise_alphas=1, device=device,
                              stage1_fraction=0.95)
            clock = _StepClock("contrastive" if objective == "lacvit" else None)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            result = train(cfg, store=store, root=root, on_event=clock)
            assert result["status"] == "finished", result
            ours = clock.steps_per_s() * batch_size
            peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
            bare = _bare_amp_images_per_s(create_backbone(backbone, weights="random", image_size=image_size).to(dev),
                                          objective, batch_size, steps, dev, ClipLoss if objective == "flyp" else SupConLoss)
            out.update({f"gpu_{objective}_images_per_s": round(ours, 1), f"gpu_{objective}_bare_images_per_s": round(bare, 1),
                        f"gpu_{objective}_loop_ratio": round(ours / bare, 3),
                        f"gpu_{objective}_peak_mem_gib": None if peak is None else round(peak, 2)})
    return out


def _bare_amp_images_per_s(backbone, objective: str, batch_size: int, steps: int, dev, loss_cls) -> float:
    """The same step written by hand: AMP forward, loss, backward, AdamW, random input in memory."""
    from ..device import autocast

    x = torch.randn(batch_size, 3, backbone.preprocess.image_size, backbone.preprocess.image_size, device=dev)
    y = torch.randint(0, 10, (batch_size,), device=dev)
    tokens = backbone.tokenize([f"a photo of a {i}." for i in range(10)])
    proj = torch.nn.Sequential(torch.nn.Linear(backbone.embed_dim, backbone.embed_dim), torch.nn.ReLU(),
                               torch.nn.Linear(backbone.embed_dim, 128)).to(dev)
    loss_fn = loss_cls() if objective == "flyp" else loss_cls(0.1)
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(proj.parameters()), lr=1e-5)
    backbone.train()
    t0 = None
    for step in range(steps):
        if step == 1:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
        with autocast(dev):
            if objective == "flyp":
                img = F.normalize(backbone.encode_image(x), dim=-1)
                txt = F.normalize(backbone.encode_text(tokens), dim=-1)[y]
                loss = loss_fn(img, txt, backbone.logit_scale.exp())
            else:
                z = torch.cat([F.normalize(proj(backbone.encode_image(v)), dim=-1) for v in (x, x.flip(-1))])
                loss = loss_fn(z, y.repeat(2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(backbone.parameters()) + list(proj.parameters()), 1.0)
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (steps - 1) * batch_size / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------- entry
def run_bench(quick: bool = True, *, log: Callable[[str], None] = lambda s: None, only: list[str] | None = None) -> dict:
    from ..device import configure_threads, describe

    configure_threads()
    results: dict = {"machine": describe(), "torch": torch.__version__, "quick": quick,
                     "commit": _git_commit()}
    reps = 3 if quick else 5
    with tempfile.TemporaryDirectory(prefix="embedlab-bench-") as tmp:
        root = Path(tmp)
        from ..projections import prepare_numba

        prepare_numba()  # the machine's numba cache (the real EMBEDLAB_HOME), not the throw-away home's
        os.environ.setdefault("EMBEDLAB_HOME", str(root))
        parts = [
            ("loop", lambda: loop_ratio(root, steps=12 if quick else 30, repeats=reps)),
            ("extract", lambda: extract_ratio(root, n=256 if quick else 1024, repeats=reps)),
            ("levers", lambda: cpu_levers(repeats=reps)),
            ("cache", lambda: cache_speedup(root, n_per_class=16 if quick else 64, repeats=reps)),
            ("ui", lambda: ui_slowdown(root, steps=60 if quick else 200)),
            ("projections", lambda: projection_times(root, quick=quick)),
            ("quick_compare", quick_compare),
            ("scale", explorer_scale),
            ("compile", compile_speedup),
        ]
        for name, fn in parts:
            if (only and name not in only) or (not only and name in OPT_IN_PARTS):
                continue
            t0 = time.perf_counter()
            log(f"bench: {name} ...")
            results.update(fn())
            log(f"bench: {name} done in {time.perf_counter() - t0:.0f} s")
    online = online_default_available()
    results["quick_compare_online_s"] = None
    results["quick_compare_online_note"] = (f"{online} weights are cached: run `python -m core bench` online to time it"
                                            if online else "no online default weights in the local cache (offline machine)")
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}


OPT_IN_PARTS = ("compile",)  # slow one-off measurements: run with --only
GOALS = {"loop_ratio": (">=", 0.97), "extract_ratio": (">=", 0.95), "cache_speedup": (">=", 20.0), "ui_slowdown": ("<=", 1.05),
         "umap_10k_s": ("<=", 10.0), "tsne_5k_s": ("<=", 6.0)}


def format_table(results: dict) -> str:
    lines = [f"{'figure':<24} {'value':>10}  goal", "-" * 48]
    for key, value in results.items():
        if isinstance(value, (dict, list)) or key in ("machine", "torch", "quick", "commit"):
            continue
        goal = GOALS.get(key)
        goal_text = ""
        if goal and isinstance(value, (int, float)):
            ok = value >= goal[1] if goal[0] == ">=" else value <= goal[1]
            goal_text = f"{goal[0]} {goal[1]}  {'ok' if ok else 'MISSED'}"
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<24} {shown:>10}  {goal_text}")
    return "\n".join(lines)


def _git_commit() -> str | None:
    try:
        import subprocess

        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:
        return None
