"""What every benchmark part shares: A/B interleaving, a per-step clock, the bench's tiny configs."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

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
