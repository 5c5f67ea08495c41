"""The loop's parts: TrainConfig's objective sections, validation once per run, the fault hook."""
from __future__ import annotations

import dataclasses

import pytest

import core.datasets as ds
import core.faults as faults
from core.content_style import ContentStyleConfig
from core.errors import InvalidConfig
from core.jobs import JobManager
from core.store import RunStore
from core.train import RANGES, SECTIONS, TrainConfig, train, validate

from helpers import one_torch_thread

TINY = dict(backbone="test_vit", dataset="digits", n_per_class=10, eval_per_class=3, batch_size=8, steps=3)


# --------------------------------------------------------------------------- config sections
def test_content_style_settings_are_a_section_stored_as_flat_keys():
    cfg = TrainConfig(objective="content-style", cs_style_dim=4, cs_regulariser="moments")
    assert cfg.content_style == ContentStyleConfig(style_dim=4, regulariser="moments")
    assert cfg.cs_style_dim == 4 and cfg.content_style.style_dim == 4
    d = cfg.to_dict()
    assert "content_style" not in d and d["cs_style_dim"] == 4 and d["cs_regulariser"] == "moments"  # the stored layout
    keys = list(d)
    assert keys.index("probe_lr") < keys.index("cs_style_dim") < keys.index("cs_recon_detach") < keys.index("seed")
    assert TrainConfig.from_dict(d) == cfg  # round trip
    assert TrainConfig.from_dict({"objective": "content-style", "content_style": {"style_dim": 4}}).cs_style_dim == 4
    with pytest.raises(InvalidConfig, match="unknown setting.*cs_nope"):
        TrainConfig.from_dict({"content_style": {"nope": 1}})
    with pytest.raises(InvalidConfig, match="unknown setting.*cs_nope"):
        TrainConfig.from_dict({"cs_nope": 1})


def test_a_copied_config_has_its_own_section():
    cfg = TrainConfig(objective="content-style")
    other = dataclasses.replace(cfg, cs_recon_weight=0.5, seed=3)
    assert (other.cs_recon_weight, cfg.cs_recon_weight) == (0.5, 1.0) and other.content_style is not cfg.content_style
    other.cs_style_dim = 2  # a flat name writes into the section, never beside it
    assert other.content_style.style_dim == 2 and cfg.cs_style_dim == 8 and "cs_style_dim" not in vars(other)


def test_every_numeric_section_setting_has_a_range_row():
    for prefix, cls in SECTIONS.values():
        numeric = {prefix + f.name for f in dataclasses.fields(cls) if any(t in str(f.type) for t in ("int", "float"))}
        assert numeric and numeric - set(RANGES) == set()


def test_section_ranges_are_checked(home):
    with pytest.raises(InvalidConfig, match=r"style dimension must be a whole number in \[1, 1024\], not 0"):
        validate(TrainConfig(objective="content-style", cs_style_dim=0, **TINY))
    with pytest.raises(InvalidConfig, match="prior weight must be a number"):
        validate(TrainConfig(objective="content-style", cs_prior_weight=-1.0, **TINY))


# ---------------------------------------------------------------------------- once per run
@pytest.fixture
def quiet_torch():
    with one_torch_thread():
        yield


def test_submit_validates_and_splits_once_per_run(home, monkeypatch, quiet_torch):
    calls = []
    real = ds.splits

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(ds, "splits", counting)
    m = JobManager(RunStore(home))
    try:
        run_id = m.submit(TrainConfig(objective="ce", **TINY))
        assert m.wait(run_id, 120)
    finally:
        m.shutdown(timeout=10)
    assert m.store.get(run_id).status == "finished"
    assert len(calls) == 1  # in submit; the worker trains on that split


# ---------------------------------------------------------------------------------- faults
def test_a_fault_hook_set_by_a_test_reaches_the_loss(home, monkeypatch, quiet_torch):
    monkeypatch.delenv(faults.FAULT_ENV, raising=False)
    monkeypatch.setattr(faults, "HOOK", lambda step, loss: loss * float("nan") if step == 2 else loss)
    r = train(TrainConfig(objective="ce", **TINY), root=home)
    assert r["status"] == "failed" and r["error"].startswith("diverged at step 2:"), r["error"]


def test_the_fault_env_is_read_once_at_run_start(monkeypatch):
    import torch

    monkeypatch.setenv(faults.FAULT_ENV, "inf:3")
    fault = faults.for_run()
    monkeypatch.delenv(faults.FAULT_ENV)  # later changes do not reach a running loop
    one = torch.tensor(1.0)
    assert fault(2, one) is one and torch.isinf(fault(3, one))
    assert faults.for_run() is faults.no_fault
