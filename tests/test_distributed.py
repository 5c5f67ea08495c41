"""Data-parallel training: `torchrun --nproc_per_node 2 -m core train ... --ddp` on the CPU (gloo) matches
a single process on the same global batch, for a local loss (CE) and a gathered one (LaCViT).

The last 2 blocks train on cached features of the frozen prefix, whose views are fixed: the two
runs then see the same inputs, and only the split of each batch over processes differs."""
import json
import os
import socket
import subprocess
import sys

import pytest

from core.store import RunStore
from helpers import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(home, objective: str, ddp: bool) -> dict:
    args = ["-m", "core", "train", "--backbone", "test_vit", "--dataset", "digits", "--objective", objective,
            "--steps", "8", "--batch-size", "16", "--n-per-class", "12", "--eval-per-class", "3", "--trainable", "2",
            "--eval-every", "100", "--quiet", "--runs-dir", str(home)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    if ddp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
               *args, "--ddp"]
    else:
        cmd = [sys.executable, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])  # rank 0 alone prints the summary
    assert result["status"] == "finished", result
    return result


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["ce", "lacvit"])
def test_two_process_ddp_matches_one_process(tmp_path, objective):
    single, ddp = _train(tmp_path / "single", objective, False), _train(tmp_path / "ddp", objective, True)
    curves = []
    for home, result in ((tmp_path / "single", single), (tmp_path / "ddp", ddp)):
        store = RunStore(home)
        assert [r.id for r in store.list()] == [result["run_id"]]  # ranks > 0 never write runs
        curves.append(store.metrics(result["run_id"], ["loss"])["loss"])
    (one, two) = curves
    assert [s for s, _ in one] == [s for s, _ in two] == list(range(1, 9))
    for (_, a), (_, b) in zip(one, two):
        assert b == pytest.approx(a, rel=2e-3, abs=2e-3)
