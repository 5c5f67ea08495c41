"""A run's checkpoint: the trainable weights (safetensors) and the optimizer's state, saved atomically,
loaded with safe loaders only, and read back for resume.

    save_checkpoint(method, optimizer, run_dir, step, stage)   # checkpoint.safetensors, then trainer_state.pt
    step, stage, opt_state = load_checkpoint(method, run_dir)   # opt_state None: from another step
    load_method_weights(method, run_dir)                        # weights only (selection, analysis)
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import paths
from .diskio import write_atomic
from .errors import EmbedLabError

CHECKPOINT = paths.CHECKPOINT  # trainable weights (+ buffers) of the method, safetensors only
TRAINER_STATE = "trainer_state.pt"  # optimizer state + position, loaded with weights_only=True


def trainable_state(method: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copy of what training changes: parameters that require grad, and every persistent buffer
    (BatchNorm statistics and their counters)."""
    state = {}
    for name, p in method.named_parameters():
        if p.requires_grad:
            state[name] = p.detach().clone()
    persistent = method.state_dict().keys()  # once: building it per buffer cost ~100 ms a checkpoint
    for name, b in method.named_buffers():
        if name in persistent:
            state[name] = b.detach().clone()
    return state


def save_checkpoint(method: torch.nn.Module, optimizer, run_dir: Path, step: int, stage_index: int) -> None:
    """Write atomically: the previous checkpoint stays until the new one is complete."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in trainable_state(method).items()}
    need = sum(t.nbytes for t in state.values()) + (1 << 16)
    write_atomic(run_dir / CHECKPOINT, lambda tmp: save_file(state, str(tmp), metadata={"step": str(step), "stage": str(stage_index)}),
                 need=need, what="the checkpoint")
    opt = optimizer.state_dict()  # AdamW: two moments per trainable weight
    write_atomic(run_dir / TRAINER_STATE, functools.partial(_torch_save, {"optimizer": opt, "step": step, "stage": stage_index}),
                 need=2 * need, what="the optimizer state")


def _torch_save(obj, path: Path) -> None:
    with open(path, "wb") as f:  # a file object: a failed write's OSError (ENOSPC, EFBIG) stays in the exception chain
        torch.save(obj, f)


def load_method_weights(method: torch.nn.Module, run_dir: Path) -> dict:
    """Load a run's checkpoint into `method`; returns the safetensors metadata."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise EmbedLabError(f"run folder {run_dir} has no checkpoint yet")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    own = method.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise EmbedLabError(f"checkpoint in {run_dir} does not match this model (unexpected: {unexpected[0]})")
    device = next(method.parameters()).device
    method.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    return meta


def load_checkpoint(method: torch.nn.Module, run_dir: Path):
    """(step, stage, optimizer state or None). The checkpoint is the truth for step and stage; the optimizer
    state is used only when it is from the same step: a process killed between the two writes (checkpoint
    first, then trainer state) resumes with a fresh optimizer instead of failing or mixing steps."""
    meta = load_method_weights(method, run_dir)
    path = Path(run_dir) / TRAINER_STATE
    if not path.exists():
        return int(meta["step"]), int(meta.get("stage", 0)), None
    try:
        trainer = torch.load(path, map_location="cpu", weights_only=True)
        step, stage = int(meta.get("step", trainer["step"])), int(meta.get("stage", trainer["stage"]))
        same = int(trainer["step"]) == step and int(trainer["stage"]) == stage
    except Exception as exc:  # truncated, or a pickle that weights_only refuses to run
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EmbedLabError(f"cannot resume: {TRAINER_STATE} in {Path(run_dir).name} is unreadable or unsafe ({first})") from exc
    return step, stage, trainer["optimizer"] if same else None
