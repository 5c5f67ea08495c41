"""Run lookup: which finished runs there are, one run by id / prefix / 'latest', and its stored embeddings.

    resolve_run(store, "20261130-0229")      -> RunRecord (exact id, unique prefix or 'latest')
    load_run_view(store, run_id, "val")      -> RunView: before / after EmbeddingSets + summary
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..embeddings import EmbeddingSet, list_snapshots, load_embeddings, load_run_embeddings
from ..errors import EmbedLabError, UnknownName
from ..metrics import default_output
from ..objectives import objective_label

OBJECTIVE_ORDER = ("ce", "lacvit", "flyp")  # the trio compared by default


@dataclass
class RunView:
    """One finished run, as the Explore / Compare pages and the report see it."""

    id: str
    config: dict
    summary: dict
    dir: Path
    split: str
    after: EmbeddingSet | None
    before: EmbeddingSet | None = None

    @property
    def objective(self) -> str:
        return self.config.get("objective", "")

    @property
    def dataset(self) -> str:
        return self.config.get("dataset", "")

    @property
    def label(self) -> str:
        return run_label(self.id, self.config)

    @property
    def short(self) -> str:
        return run_short(self.id, self.config)

    def outputs(self) -> list[str]:
        return list(self.after.vectors) if self.after is not None else []

    def main_output(self) -> str:
        return default_output(self.after)


def run_label(run_id: str, config: dict) -> str:
    """'LaCViT · test_vit · mnist5k · 81b8' (short and unique enough for legends and columns)."""
    obj = config.get("objective", "")
    return f"{objective_label(obj)} · {config.get('backbone', '')} · {config.get('dataset', '')} · {run_id.rsplit('-', 1)[-1]}"


def run_short(run_id: str, config: dict) -> str:
    """'LaCViT · 81b8': for pane titles and table columns, where space is tight."""
    obj = config.get("objective", "")
    return f"{objective_label(obj)} · {run_id.rsplit('-', 1)[-1]}"


def has_results(store, run_id: str) -> bool:
    return (store.run_dir(run_id) / "embeddings" / "after-val" / "meta.json").exists()


def finished_runs(store) -> list:
    """Finished runs that have stored embeddings, newest first."""
    return [r for r in store.list(status=["finished"]) if has_results(store, r.id)]


def resolve_run(store, name: str):
    """A run by exact id, unique id prefix, or 'latest' (the newest finished run)."""
    if name == "latest":
        runs = finished_runs(store)
        if not runs:
            raise UnknownName(f"no finished runs in {store.root}")
        return runs[0]
    if store.exists(name):
        return store.get(name)
    matches = [r for r in store.list() if r.id.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UnknownName(f"run {name!r} is ambiguous: {', '.join(r.id for r in matches[:5])}")
    raise UnknownName(f"no run {name!r} in {store.root} (see `python -m core runs`)")


def default_compare_runs(runs: Sequence) -> list[str]:
    """The latest CE / LaCViT / FLYP runs on one dataset (the dataset of the newest run that has at
    least two of them); else the two newest runs. `runs` newest first."""
    for dataset in dict.fromkeys(r.dataset for r in runs):
        trio = {}
        for r in runs:
            if r.dataset == dataset and r.objective in OBJECTIVE_ORDER and r.objective not in trio:
                trio[r.objective] = r.id
        if len(trio) >= 2:
            return [trio[o] for o in OBJECTIVE_ORDER if o in trio]
    return [r.id for r in runs[:2]]


def load_run_view(store, run_id: str, split: str = "val") -> RunView:
    rec = resolve_run(store, run_id)
    run_dir = store.run_dir(rec.id)
    after = load_run_embeddings(run_dir, "after", split)
    if after is None:
        raise EmbedLabError(f"run {rec.id!r} has no stored '{split}' embeddings ({rec.status}); only finished runs can be explored")
    return RunView(rec.id, rec.config, rec.summary, run_dir, split, after, load_run_embeddings(run_dir, "before", split))


def positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row positions of the sample ids `wanted` in `ids` (every wanted id must be present)."""
    index = {int(v): i for i, v in enumerate(np.asarray(ids))}
    return np.array([index[int(w)] for w in np.asarray(wanted)], dtype=np.int64)


def load_snapshots(run_dir: Path) -> list[tuple[int, EmbeddingSet]]:
    return [(step, load_embeddings(p)) for step, p in list_snapshots(run_dir)]
