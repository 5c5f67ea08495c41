"""Simulated faults for the reliability tests: a hook that may replace a step's loss or raise.

    EMBEDLAB_FAULT=nan:5 python -m core train ...   # the loss of step 5 becomes NaN

`core.train` calls `for_run()` once when a run starts and applies what it returns to every step's loss
(`loss = fault(step, loss)`; the identity when no fault is set), so the hot loop reads no environment.
Tests may set `HOOK` (a `(step, loss) -> loss` callable) instead of the environment variable.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch

FAULT_ENV = "EMBEDLAB_FAULT"  # kind:step, kind one of KINDS
KINDS = ("nan", "inf", "oom", "cuda_oom", "raise")
HOOK: Callable[[int, torch.Tensor], torch.Tensor] | None = None  # set by tests; wins over the environment

Fault = Callable[[int, torch.Tensor], torch.Tensor]


def no_fault(step: int, loss: torch.Tensor) -> torch.Tensor:
    return loss


def for_run() -> Fault:
    """The fault hook of a run starting now: HOOK, else EMBEDLAB_FAULT=kind:step, else the identity."""
    if HOOK is not None:
        return HOOK
    spec = os.environ.get(FAULT_ENV, "")
    if ":" not in spec:
        return no_fault
    kind, _, at = spec.partition(":")
    at = int(at)
    return lambda step, loss: inject(kind, loss) if step == at else loss


def inject(kind: str, loss: torch.Tensor) -> torch.Tensor:
    """The loss turned NaN / inf, or the error a real fault of `kind` raises."""
    if kind == "nan":
        return loss * float("nan")
    if kind == "inf":
        return loss + float("inf")
    if kind == "oom":
        raise MemoryError("simulated out-of-memory")
    if kind == "cuda_oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
    raise RuntimeError(f"simulated crash ({kind})")
