"""Compute device, mixed precision and network reachability.

One place decides CPU vs CUDA, which autocast dtype to use and whether the model hub can be
reached, so the training loop, the extractor, the app sidebar and the CLI all agree.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time

import torch

_logger = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"  # timm and open_clip weights come from the Hugging Face hub
_ONLINE_TTL_S = 60.0  # re-probe the network at most once a minute
_online_cache: dict[str, tuple[float, bool]] = {}  # host -> (checked_at, reachable)


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` ('cpu', 'cuda', 'cuda:1', 'auto' or None) -> a usable torch.device."""
    from .errors import InvalidConfig

    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError, ValueError):  # torch's message lists twenty device types: not ours
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InvalidConfig(f"device {requested!r} is not one EmbedLab runs on: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidConfig(f"device {requested!r} was asked for but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise InvalidConfig(f"device {requested!r} does not exist: this machine has {n} CUDA GPU(s), cuda:0..cuda:{n - 1}")
    return device


def describe(device: torch.device | None = None) -> str:
    """Human-readable device name for the sidebar and reports."""
    device = device or pick_device()
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return f"CPU: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that support it, fp16 on older ones, none on CPU (bf16 on CPU measured slower)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True):
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@functools.cache
def configure_threads(processes: int = 1) -> int:
    """Match torch's intra-op threads to the cores we may use, shared between `processes` ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, processes))
    torch.set_num_threads(threads)
    return threads


def hub_endpoint() -> str:
    """The model hub's base URL, as huggingface_hub reads it (HF_ENDPOINT; a local stand-in in the tests)."""
    return (os.environ.get("HF_ENDPOINT") or f"https://{HUB_HOST}").rstrip("/")


def hub_reachable(host: str | None = None, timeout: float = 2.0) -> bool:
    """Can weights or data be fetched? Cached for a minute.

    `host` None means the model hub at `hub_endpoint()`: reachable only when it answers an HTTP request
    within `timeout` seconds, so a hub that accepts connections but never answers counts as offline and a
    load fails at once with the offline message instead of waiting out huggingface_hub's retries. Another
    `host`: a TCP connection to `host:443` opens within `timeout`. `EMBEDLAB_OFFLINE=1` forces False, so
    tests and workshops can pin the offline behaviour.
    """
    if os.environ.get("EMBEDLAB_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    key = host or hub_endpoint()
    now = time.monotonic()
    cached = _online_cache.get(key)
    if cached and now - cached[0] < _ONLINE_TTL_S:
        return cached[1]
    if host is None:
        ok = _answers(key, timeout)
    else:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                ok = True
        except OSError:
            ok = False
    _logger.info("%s reachable: %s", key, ok)
    _online_cache[key] = (now, ok)
    return ok


def _answers(url: str, timeout: float) -> bool:
    """Does the server at `url` send an HTTP response (any status) within `timeout` seconds?"""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("HEAD", (parts.path or "") + "/")
        conn.getresponse()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
