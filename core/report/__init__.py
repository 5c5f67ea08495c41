"""Views of finished runs, one concept per module (none imports streamlit):

    lookup.py     which runs there are and one run's stored embeddings: resolve_run, finished_runs, load_run_view -> RunView
    panes.py      what Explore / Compare draw, computed: explore_data, neighbour_grid, compare_data
    figures.py    plotly figures the pages and the report share: projection_figure, hist_figure, frontier_figure, ...
    tables.py     the metrics and settings tables for the pages: metrics_table, metrics_dataframe, ci_text, settings_dataframe
    html_page.py  self-contained HTML reports: comparison_html, run_report_html
    exports.py    projector TSV (folder / zip) and Parquet: export_sets, projector_files, export_parquet

The settings table of compared runs is core/settings_diff.py (pure, on configs). Callers import the names from
`core.report` as before; this file only gathers them.
"""
from .exports import (METADATA_HEADER, ExportSet, export_parquet, export_sets, parquet_table, projector_files, projector_zip,
                      write_projector)
from .figures import (FRONTIER_MIN_SPAN, PALETTE, RUN_COLOURS, class_colour, confusion_figure, frontier_data, frontier_figure,
                      frontier_range, hist_figure, per_class_figure, projection_figure, trajectory_figure, wise_ft_figure)
from .html_page import comparison_html, run_report_html, seeds_html
from .lookup import (OBJECTIVE_ORDER, RunView, default_compare_runs, finished_runs, has_results, load_run_view, load_snapshots,
                     positions, resolve_run, run_label, run_short)
from .panes import anchors_for, compare_data, explore_data, neighbour_grid
from .tables import METRIC_ROWS, ci_text, delta_colour, metrics_dataframe, metrics_table, settings_dataframe, sure_best

__all__ = [
    "METADATA_HEADER", "ExportSet", "export_parquet", "export_sets", "parquet_table", "projector_files", "projector_zip",
    "write_projector",
    "FRONTIER_MIN_SPAN", "PALETTE", "RUN_COLOURS", "class_colour", "confusion_figure", "frontier_data", "frontier_figure",
    "frontier_range", "hist_figure", "per_class_figure", "projection_figure", "trajectory_figure", "wise_ft_figure",
    "comparison_html", "run_report_html", "seeds_html",
    "OBJECTIVE_ORDER", "RunView", "default_compare_runs", "finished_runs", "has_results", "load_run_view", "load_snapshots",
    "positions", "resolve_run", "run_label", "run_short",
    "anchors_for", "compare_data", "explore_data", "neighbour_grid",
    "METRIC_ROWS", "ci_text", "delta_colour", "metrics_dataframe", "metrics_table", "settings_dataframe", "sure_best",
]
