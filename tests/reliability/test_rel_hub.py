"""The online paths, run against a local stand-in for the Hugging Face hub.

A threaded http.server on 127.0.0.1 serves files in the hub's URL layout (`/{repo_id}/resolve/{revision}/{file}`,
HEAD and GET, with the ETag / X-Repo-Commit / Content-Length headers huggingface_hub reads), and the hub client
is pointed at it through HF_ENDPOINT. huggingface_hub reads that variable when it is imported, so each load runs
in a fresh `python` process, with HF_HOME in a temporary folder: nothing leaks into the user's cache. The weights
are random tensors of the real architectures, generated here, so the test knows what a correct load holds.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import core.device as device_mod
from helpers import cli_env

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TIMM_NAME = "test_vit.r160_in1k"  # timm's pretrained cfg: hf_hub_id timm/test_vit.r160_in1k, model.safetensors
# the smallest open_clip architecture whose pretrained tag is fetched from the hub (hf_hub timm/resnet50_clip.openai):
# 102M parameters, served in fp16 (205 MB); every smaller open_clip config has no hub weights
CLIP_NAME, CLIP_REPO = "RN50/openai", "timm/resnet50_clip.openai"


class _Hub(BaseHTTPRequestHandler):
    files: dict[tuple[str, str], Path] = {}
    requests: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def _serve(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        m = re.fullmatch(r"/(.+)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
        path = self.files.get((m.group(1), m.group(3))) if m else None
        if path is None:
            self.send_response(200 if self.path == "/" else 404)  # "/": hub_reachable's probe
            self.send_header("Content-Length", "0")
            if m:
                self.send_header("X-Error-Code", "EntryNotFound")  # what the hub says for a missing file
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')  # an LFS file's etag is its sha256
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(endpoint URL, folder of served files); the server runs for the module."""
    folder = tmp_path_factory.mktemp("hub")
    _Hub.files, _Hub.requests = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def _serve(hub, repo: str, filename: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    path = hub[1] / repo.replace("/", "--") / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in state.items()}
    save_file(state, str(path))
    _Hub.files[(repo, filename)] = path
    return state


def _load(endpoint: str, name: str, tensor: str, hf_home: Path, timeout: float = 300) -> dict:
    """create_backbone(name, weights='pretrained') in a fresh process pointed at `endpoint`: its report, with the
    seconds from the probe to the model (or the error)."""
    script = f"""
import json, sys, time
from core.backbones import create_backbone
from core.device import hub_reachable
from core.errors import EmbedLabError
t0 = time.monotonic()  # after the imports: on a loaded machine they alone take seconds
online = hub_reachable()
try:
    b = create_backbone({name!r}, weights="pretrained")
except EmbedLabError as exc:
    print(json.dumps({{"online": online, "error": str(exc), "seconds": time.monotonic() - t0}}))
    sys.exit(0)
t = dict(b.model.named_parameters())[{tensor!r}].detach().double()
print(json.dumps({{"online": online, "weights_id": b.weights_id, "sum": float(t.sum()), "abs": float(t.abs().sum()),
                  "type": type(b).__name__, "seconds": time.monotonic() - t0}}))
"""
    env = cli_env()
    env.pop("EMBEDLAB_OFFLINE", None)
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sums(t: torch.Tensor) -> tuple[float, float]:
    t = t.double()
    return float(t.sum()), float(t.abs().sum())


def test_hub_reachable_says_online_against_the_stand_in(hub, monkeypatch):
    monkeypatch.delenv("EMBEDLAB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub[0])
    monkeypatch.setattr(device_mod, "_online_cache", {})
    assert device_mod.hub_endpoint() == hub[0]
    assert device_mod.hub_reachable() is True
    assert "HEAD /" in _Hub.requests


@pytest.mark.slow  # 4.8 s
def test_a_timm_model_tag_loads_the_hubs_weights(hub, tmp_path):
    import timm

    model = timm.create_model("test_vit", pretrained=False)  # the architecture of test_vit.r160_in1k, other values
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02, generator=torch.Generator().manual_seed(7))
    state = _serve(hub, "timm/test_vit.r160_in1k", "model.safetensors", model.state_dict())
    report = _load(hub[0], TIMM_NAME, "patch_embed.proj.weight", tmp_path / "hf")
    assert report["online"] is True, report
    assert report["type"] == "TimmBackbone" and report["weights_id"] == "pretrained:r160_in1k", report
    assert (report["sum"], report["abs"]) == pytest.approx(_sums(state["patch_embed.proj.weight"]), rel=1e-9)
    assert any(r.startswith("GET /timm/test_vit.r160_in1k/resolve/main/model.safetensors") for r in _Hub.requests)
    assert list((tmp_path / "hf").rglob("model.safetensors"))  # in the HF_HOME given, nowhere else


@pytest.mark.slow
def test_an_open_clip_pretrained_tag_loads_the_hubs_weights(hub, tmp_path):
    import open_clip

    model = open_clip.create_model("RN50", pretrained=None)
    state = _serve(hub, CLIP_REPO, "open_clip_model.safetensors", {k: v.half() for k, v in model.state_dict().items()})
    del model
    report = _load(hub[0], CLIP_NAME, "visual.conv1.weight", tmp_path / "hf")
    assert report["online"] is True and report["type"] == "OpenClipBackbone", report
    assert report["weights_id"] == "pretrained:openai", report
    assert (report["sum"], report["abs"]) == pytest.approx(_sums(state["visual.conv1.weight"].float()), rel=1e-6)
    assert any(r.startswith(f"GET /{CLIP_REPO}/resolve/main/open_clip_model.safetensors") for r in _Hub.requests)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_an_unreachable_hub_fails_within_seconds_with_the_offline_message(tmp_path):
    report = _load(f"http://127.0.0.1:{_closed_port()}", TIMM_NAME, "patch_embed.proj.weight", tmp_path / "hf")
    assert report["online"] is False
    assert report["error"].startswith(f"cannot load pretrained weights for {TIMM_NAME!r}: the model hub cannot be reached "
                                      "(offline) and they are not in the local cache. Use a local weights file"), report
    assert report["seconds"] < 10, report


@pytest.mark.slow  # 4.8 s
def test_a_hub_that_accepts_and_never_answers_fails_within_seconds(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the backlog; nothing is ever read or sent
    try:
        report = _load(f"http://127.0.0.1:{silent.getsockname()[1]}", TIMM_NAME, "patch_embed.proj.weight",
                                tmp_path / "hf")
    finally:
        silent.close()
    assert report["online"] is False and "the model hub cannot be reached (offline)" in report["error"], report
    assert report["seconds"] < 10, report
