"""The metrics table of one or more runs: rows, the best column per row (only when the 95 % intervals say so),
and the interval / delta wording the pages show."""
from __future__ import annotations

from collections.abc import Sequence

from ..metrics import HIGHER_IS_BETTER, best_of
from ..settings_diff import SettingsTable

METRIC_ROWS = [  # (key, display name) of the metrics table, in order
    ("val_acc", "val accuracy (top-1)"), ("test_acc", "test accuracy (top-1)"),
    ("ood_acc", "OOD accuracy (top-1, shifted test)"), ("zeroshot_acc", "zero-shot accuracy"),
    ("knn_acc", "kNN accuracy (k=20, cosine, LOO)"), ("linear_probe_acc", "linear-probe accuracy"),
    ("silhouette", "silhouette (cosine)"), ("alignment", "alignment (lower = tighter classes)"),
    ("uniformity", "uniformity (lower = more spread)"), ("pos_mean_cos", "mean cos, same class"),
    ("neg_mean_cos", "mean cos, different class"), ("cos_gap", "cos gap (same - different)"),
]



def metrics_table(results: Sequence[dict], names: Sequence[str]) -> tuple[list[dict], dict[str, int | None]]:
    """Rows [{"metric", <name>: value, ...}] for the keys any result has, and the best column per row.
    Rows with intervals (accuracies) carry "ci": {name: [lo, hi]}, and their best is marked only when
    its interval clears the runner-up's (sure_best); otherwise the difference may be noise."""
    rows, best = [], {}
    for key, title in METRIC_ROWS:
        values = [r.get(key) for r in results]
        if all(v is None for v in values):
            continue
        row = {"metric": title, "key": key}
        for n, v in zip(names, values):
            row[n] = v
        cis = [r.get(f"{key}_ci95") for r in results]
        if any(cis):
            row["ci"] = dict(zip(names, cis))
        rows.append(row)
        best[title] = best_of(values, key) if len(results) > 1 or key in HIGHER_IS_BETTER else None
        if any(cis) and best[title] is not None and not sure_best(values, cis, best[title]):
            best[title] = None
    return rows, best


def sure_best(values: Sequence[float | None], cis: Sequence[Sequence[float] | None], i: int) -> bool:
    """Whether value i is better than every other by non-overlapping 95 % intervals (unpaired: the
    runs' models differ, so there is no shared before/after to pair on)."""
    from ..metrics import delta_verdict

    return all(delta_verdict(values[i], cis[i], v, c) == "better" for j, (v, c) in enumerate(zip(values, cis))
               if j != i and v is not None)


def ci_text(ci: Sequence[float] | None, n: int | None = None) -> str:
    """'95 % CI 71.5–90.5 % (n = 59)' for an accuracy interval; '' without one."""
    if not ci:
        return ""
    return f"95 % CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f} %" + (f" (n = {n:,})" if n else "")


def delta_colour(verdict: str | None) -> str:
    """st.metric's delta_color for a before/after verdict: coloured only for a sure change."""
    return "normal" if verdict in ("better", "worse") else "off"


def metrics_dataframe(results: Sequence[dict], names: Sequence[str]):
    """(DataFrame indexed by metric, {metric: best column name}) for st.dataframe + Styler."""
    import pandas as pd

    rows, best = metrics_table(results, names)
    df = pd.DataFrame(rows).drop(columns=["key", "ci"], errors="ignore").set_index("metric").astype(float) if rows else pd.DataFrame()
    return df, {m: (names[i] if i is not None else None) for m, i in best.items()}


def settings_dataframe(table: SettingsTable, *, everything: bool = False):
    """(DataFrame of a settings table, indexed by setting, one column per run; the labels of the
    differing rows) for st.dataframe + Styler."""
    import pandas as pd

    records = table.records(everything)
    df = pd.DataFrame(records, columns=["setting", *table.names, "differs"]).set_index("setting")
    return df.drop(columns="differs"), {r["setting"] for r in records if r["differs"]}
