"""Data-parallel training across processes (`torchrun ... -m core train ... --ddp`).

Each rank trains on its slice of every global batch; gradients are averaged by
DistributedDataParallel. Contrastive losses gather features from all ranks so they see the
global batch, as open_clip does, and their gradients are scaled back to the single-process
value (see `grad_scale`). Rank 0 alone writes to the run store, evaluates and checkpoints.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import InvalidConfig


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (every rank sees the same global order)."""
        return rows[self.rank::self.world] if self.world > 1 else rows

    def grad_scale(self, global_loss: bool) -> float:
        """A loss over gathered features back-propagates only into local rows on each rank and
        DDP averages gradients over ranks, so it needs x world to match one process."""
        return float(self.world) if global_loss and self.world > 1 else 1.0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average a per-rank scalar over ranks (for logging local-batch losses)."""
        if self.world == 1:
            return value
        value = value.detach().clone().float()
        dist.all_reduce(value)
        return value / self.world


def setup(ddp: bool, batch_size: int) -> DistContext:
    """Join the process group started by torchrun (gloo on CPU, NCCL on GPUs)."""
    if not ddp:
        return DistContext()
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise InvalidConfig("--ddp runs under torchrun: torchrun --nproc_per_node N -m core train ... --ddp")
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if batch_size % world:
        raise InvalidConfig(f"with --ddp the global batch size ({batch_size}) must be divisible by the {world} processes")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local_rank)


def teardown(ctx: DistContext) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


class NullStore:
    """The run store as seen by ranks > 0: writes go nowhere, artifacts to a scratch folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._scratch = Path(tempfile.mkdtemp(prefix="embedlab-rank-"))

    def create_run(self, config, status="queued", run_id=None):
        return run_id or "worker"

    def run_dir(self, run_id):
        return self._scratch

    def get(self, run_id):
        from .store import RunRecord

        return RunRecord(id=run_id, status="running", created=0.0, config={})

    def set_status(self, *a, **k):
        pass

    update_summary = set_progress = log_metrics = log_metric_rows = set_status

    def cancel_requested(self, run_id):
        return False
