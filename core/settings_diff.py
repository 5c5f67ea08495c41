"""Like with like: the settings of compared runs side by side, which differ, and whether the runs differ in
anything but the objective.

    table = settings_table([(run_id, config, summary), ...], names)
    table.rows      -> [SettingRow(key, label, values, differs, warns)]: rows = settings, columns = runs
    table.warnings  -> ["steps: 1500 vs 20", ...]; empty when the runs compare like with like
    comparison_batches(runs)   -> [Batch]: runs with the same settings but the objective (pick one on Compare)
    differing_labels(runs)     -> {run_id: "steps 1500 · lr 10"}: what run labels add so that a difference shows

What counts as a difference worth a warning (`warns`):
- every setting that changes what a run learns or is scored on (data, budget, optimisation, depth, seed, shift);
- an objective's own knobs only among the runs whose objective reads them: LaCViT's temperature means
  nothing to CE, so CE at τ 0.1 beside LaCViT at τ 0.5 is like with like, two LaCViT runs at 0.1 and 0.5 are not;
- the backbone, except the text-tower twin an objective needs: offline, FLYP runs on `lite0-minilm`, whose
  image tower *is* `efficientnet_lite0` (core/lite0_minilm.py), so that pair is the default comparison's one model family;
- the seed, except in a multi-seed comparison (every objective run on the same set of seeds);
- not the settings that only change how a run is watched or where it runs (eval_every, snapshots, device, amp,
  experiment, eval_test), nor the derived `training images`: they are shown and highlighted, never warned.

Pure functions on plain config dicts (a TrainConfig is accepted too); no torch, no streamlit.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The settings table's rows, in order: (config key, label). A TrainConfig field missing here still gets a row
# (labelled by its key, after these), so a new setting is never hidden.
SETTINGS: tuple[tuple[str, str], ...] = (
    ("objective", "objective"), ("dataset", "dataset"), ("backbone", "backbone"), ("weights", "weights"),
    ("n_per_class", "images per class"), ("labels", "labelled images"), ("selection", "data selection"),
    ("train_images", "training images"), ("eval_per_class", "val/test images per class"), ("image_size", "image size"),
    ("steps", "steps"), ("epochs", "epochs"), ("batch_size", "batch size"),
    ("lr", "lr"), ("backbone_lr", "backbone lr"), ("weight_decay", "weight decay"), ("warmup", "warm-up"),
    ("optimizer", "optimizer"), ("grad_clip", "gradient clip"), ("trainable", "trainable depth"), ("seed", "seed"),
    ("shift", "OOD shift"), ("cache_features", "cache features"), ("feature_views", "feature views"), ("ddp", "DDP"),
    ("temperature", "temperature τ"), ("stage1_fraction", "stage 1 fraction"), ("stage2_train_encoder", "stage 2 trains encoder"),
    ("probe_lr", "probe lr"), ("wise_alphas", "WiSE-FT alphas"), ("ce_zero_shot_head", "CE zero-shot head"),
    ("eval_every", "eval every"), ("snapshots", "snapshots"), ("device", "device"), ("amp", "mixed precision"),
    ("experiment", "experiment"), ("eval_test", "eval test"),
)
LABELS = dict(SETTINGS)
WATCH_ONLY = frozenset({"eval_every", "snapshots", "device", "amp", "experiment", "eval_test"})  # how a run is watched / where it runs
DERIVED = frozenset({"train_images"})  # follows from other rows (n_per_class, labels, selection, the objective)
IN_LABEL = ("objective", "backbone", "dataset")  # what run_label already names: differing_labels leaves them out


def _lacvit(c: dict) -> bool:
    return c.get("objective") == "lacvit"


# Objective knobs -> whether a run's objective reads it. Here until each objective carries its own config
# section in the objectives registry (issue 18.3); content-style's cs_* knobs by prefix, see knob_used.
KNOBS: dict[str, Callable[[dict], bool]] = {
    "temperature": _lacvit, "stage1_fraction": _lacvit, "stage2_train_encoder": _lacvit,
    "probe_lr": _lacvit,  # the head lr of a stage with a frozen encoder: only LaCViT's stage 2 has one
    "wise_alphas": lambda c: c.get("objective") == "flyp" or (c.get("objective") == "ce" and bool(c.get("ce_zero_shot_head"))),
    "ce_zero_shot_head": lambda c: c.get("objective") == "ce",
}
TEXT_TOWER_TWINS = {"lite0-minilm": "efficientnet_lite0"}  # backbone -> the image-only backbone whose image tower it shares


def knob_used(key: str, config: dict) -> bool:
    """Whether `config`'s objective reads setting `key` (True for every setting that is no objective's knob)."""
    if key.startswith("cs_"):
        return config.get("objective") == "content-style"
    return KNOBS[key](config) if key in KNOBS else True


@dataclass
class SettingRow:
    """One setting across the compared runs."""

    key: str
    label: str
    values: list  # one per run; None where the run's objective does not read this knob (see used)
    used: list[bool]  # per run: does its objective read the setting
    differs: bool  # the runs that read it hold more than one value
    warns: bool  # the difference goes into the warnings (see the module docstring)
    note: str = ""  # why a highlighted difference does not warn


@dataclass
class SettingsTable:
    names: list[str]  # one column per run
    rows: list[SettingRow]
    warnings: list[str] = field(default_factory=list)  # "steps: 1500 vs 20"

    def differing(self) -> list[SettingRow]:
        return [r for r in self.rows if r.differs]

    def shown(self, everything: bool = False) -> list[SettingRow]:
        """The rows a page shows: differing rows and the main settings (all rows with `everything`); never a
        knob no compared objective reads."""
        main = {"objective", "dataset", "backbone", "steps", "batch_size", "lr", "n_per_class", "trainable", "seed"}
        return [r for r in self.rows if any(r.used) and (everything or r.differs or r.key in main)]

    def records(self, everything: bool = False) -> list[dict[str, Any]]:
        """[{"setting": label, <name>: text, ..., "differs": bool}] for a table widget."""
        return [{"setting": r.label, **{n: value_text(v, u) for n, v, u in zip(self.names, r.values, r.used)}, "differs": r.differs}
                for r in self.shown(everything)]


def as_config(config: Any) -> dict:
    """A stored config dict as it is, a TrainConfig as its dict."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return dict(config or {})


def resolved_settings(config: Any, summary: dict | None = None) -> dict[str, Any]:
    """The run's settings with what the run itself resolved, from its summary: the steps it took when it was
    given epochs, the OOD shift 'default' stood for, the training images it saw."""
    c, s = as_config(config), summary or {}
    if c.get("steps") is None and s.get("steps") is not None:
        c["steps"] = s["steps"]
    if s.get("ood_shift") and c.get("shift") in (None, "default"):
        c["shift"] = s["ood_shift"]
    if s.get("train_images") is not None:
        c["train_images"] = s["train_images"]
    return c


def value_text(value: Any, used: bool = True) -> str:
    """A setting's value as a table cell: 'n/a' for a knob the run's objective does not read."""
    if not used:
        return "n/a"
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _same_backbone(values: Sequence[Any]) -> bool:
    return len({TEXT_TOWER_TWINS.get(v, v) for v in values}) == 1


def _multi_seed(configs: Sequence[dict]) -> bool:
    """Every objective was run on the same set of seeds (and some on more than one): mean ± spread compares them."""
    seeds: dict[Any, set] = {}
    for c in configs:
        seeds.setdefault(c.get("objective"), set()).add(c.get("seed"))
    sets = list(seeds.values())
    return len(sets) > 0 and all(s == sets[0] for s in sets) and len(sets[0]) > 1


def _keys(configs: Sequence[dict]) -> list[str]:
    extra = sorted({k for c in configs for k in c} - set(LABELS))
    return [k for k, _ in SETTINGS if any(k in c for c in configs)] + extra


def settings_table(runs: Sequence[tuple[str, Any, dict | None]], names: Sequence[str] | None = None) -> SettingsTable:
    """The settings of `runs` = [(run_id, config, summary)] side by side, differences marked, and the warnings.

    names: the column names (default: the run ids)."""
    configs = [resolved_settings(c, s) for _, c, s in runs]
    names = list(names) if names is not None else [r[0] for r in runs]
    multi_seed = _multi_seed(configs)
    rows, warnings = [], []
    for key in _keys(configs):
        used = [knob_used(key, c) for c in configs]
        values = [c.get(key) if u else None for c, u in zip(configs, used)]
        distinct = list(dict.fromkeys(json.dumps(v, sort_keys=True, default=str) for v, u in zip(values, used) if u))
        differs = len(distinct) > 1
        warns, note = differs and key != "objective", ""
        if warns and key in WATCH_ONLY:
            warns, note = False, "changes how the run is watched or where it runs, not what it learns"
        elif warns and key in DERIVED:
            warns, note = False, "follows from the data settings and the objective"
        elif warns and key == "backbone" and _same_backbone([v for v, u in zip(values, used) if u]):
            warns, note = False, "the text-tower twin of the same image tower"
        elif warns and key == "seed" and multi_seed:
            warns, note = False, "a multi-seed comparison: every objective on the same seeds"
        row = SettingRow(key, LABELS.get(key, key), values, used, differs, warns, note)
        rows.append(row)
        if warns:
            shown = [value_text(v) for v, u in zip(values, used) if u]
            warnings.append(f"{row.label}: {' vs '.join(dict.fromkeys(shown))}")
    return SettingsTable(names, rows, warnings)


def comparison_key(config: Any) -> str:
    """What the runs of one comparison batch share: every setting that may warn, bar the objective, its knobs
    and the seed (a multi-seed batch holds several), with a text-tower twin counted as its image tower."""
    c = as_config(config)
    kept = {k: v for k, v in c.items() if k not in ("objective", "seed", *WATCH_ONLY, *DERIVED)
            and not k.startswith("cs_") and k not in KNOBS}
    if "backbone" in kept:
        kept["backbone"] = TEXT_TOWER_TWINS.get(kept["backbone"], kept["backbone"])
    return json.dumps(kept, sort_keys=True, default=str)


@dataclass
class Batch:
    """Runs of one comparison: same settings but the objective (and its knobs), at most one run per objective and seed."""

    key: str  # comparison_key of its runs
    run_ids: list[str]  # oldest first, as they were submitted
    objectives: list[str]  # per run
    seeds: list  # per run
    config: dict  # the first run's settings (for the label)

    @property
    def id(self) -> str:
        return "+".join(self.run_ids)

    def label(self, objective_label: Callable[[str], str] = str) -> str:
        """'CE, LaCViT, FLYP · digits · steps 60 · lr 0.001 · 20261202-0040' (the batch's time from its first run id)."""
        c = self.config
        when = "-".join(self.run_ids[0].split("-")[:2])
        objectives = ", ".join(dict.fromkeys(objective_label(o) for o in self.objectives))
        parts = [objectives, str(c.get("dataset", "")), f"steps {value_text(c.get('steps'))}", f"lr {value_text(c.get('lr'))}",
                 f"batch {value_text(c.get('batch_size'))}", when]
        if len(self.run_ids) > len(set(self.objectives)):
            parts.insert(1, f"{len(self.run_ids)} runs")
        return " · ".join(parts)


def comparison_batches(runs: Sequence[tuple[str, Any, dict | None]]) -> list[Batch]:
    """Group runs (newest first, as finished_runs lists them) into comparison batches, newest batch first.

    Runs share a batch when their comparison_key matches; walking them in submission order, a run whose
    objective and seed the open batch already holds starts a new batch (the same comparison submitted again).
    The store keeps no batch tag, and the Train page's `Start` queues one run per objective with the same
    settings, so a `Start` of the default comparison is one batch, and so are runs of it started one by one."""
    open_batches: dict[str, Batch] = {}
    done: list[Batch] = []
    for run_id, config, summary in reversed(list(runs)):
        c = resolved_settings(config, summary)
        key = comparison_key(c)
        b = open_batches.get(key)
        slot = (c.get("objective"), c.get("seed"))
        if b is not None and slot in set(zip(b.objectives, b.seeds)):
            done.append(b)
            b = None
        if b is None:
            b = open_batches[key] = Batch(key, [], [], [], c)
        b.run_ids.append(run_id)
        b.objectives.append(c.get("objective", ""))
        b.seeds.append(c.get("seed"))
    done.extend(open_batches.values())
    order = {r[0]: i for i, r in enumerate(runs)}
    return sorted(done, key=lambda b: min(order[r] for r in b.run_ids))


def differing_labels(runs: Sequence[tuple[str, Any, dict | None]], *, limit: int = 3) -> dict[str, str]:
    """{run_id: 'steps 1500 · lr 10'}: the values of the (warned) settings in which the runs differ, for run labels,
    leaving out what run_label names already; '' for every run when they compare like with like."""
    table = settings_table(runs)
    rows = [r for r in table.rows if r.warns and r.key not in IN_LABEL][:limit]
    out = {}
    for i, (run_id, _, _) in enumerate(runs):
        out[run_id] = " · ".join(f"{r.label} {value_text(r.values[i])}" for r in rows if r.used[i])
    return out


def label_with(label: str, differences: str) -> str:
    """'CE · 81b8' + 'steps 1500' -> 'CE · 81b8 · steps 1500' (the label alone when nothing differs)."""
    return f"{label} · {differences}" if differences else label
