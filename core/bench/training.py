"""The training side of `python -m core bench`: the loop, extraction, the CPU levers, the feature cache, the
UI's polling, the default comparison's wall time and the GPU script, each against a bare PyTorch twin."""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._measure import _bench_cfg, _dataset_name, _interleaved, _StepClock

POLL_INTERVAL_S = 1.0  # the Train page's live fragment ticks once a second


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
