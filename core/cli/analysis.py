"""`python -m core analyze | export | compare`: a finished run's metrics, exports and HTML reports.

    python -m core analyze RUN [--split val] [--output encoder] [--json]
    python -m core export RUN --format {tsv,parquet,html} [--out PATH] [--phase after|before|both]
    python -m core compare RUN RUN [RUN RUN] --html OUT [--method pca|umap|tsne] [--dims 2|3]

RUN is a run id, a unique prefix of one, or `latest`. `analyze` prints, as its last stdout line,
one JSON object with the run's metrics (and their `<key>_before` counterparts when the run stored
pretrained embeddings). An unknown run is one line on stderr and exit code 2 (core.cli.main).
"""
from __future__ import annotations

import sys
from pathlib import Path

from ._common import _fmt, _json_line, _root

_SHOWN = ("val_acc", "test_acc", "zeroshot_acc", "knn_acc", "linear_probe_acc", "silhouette", "alignment", "uniformity",
          "pos_mean_cos", "neg_mean_cos")  # the human-readable table's rows


def _store(args):
    from ..store import RunStore

    return RunStore(_root(args))


def cmd_analyze(args) -> int:
    from ..metrics import analyze, scalar_metrics
    from ..report import resolve_run

    store = _store(args)
    rec = resolve_run(store, args.run)
    result = analyze(store.run_dir(rec.id), split=args.split, output=args.output, k=args.k, seed=args.seed)
    scalars = scalar_metrics(result)
    if result.get("wise_ft"):
        scalars["wise_ft"] = result["wise_ft"]
    if not args.json:
        print(f"{rec.id}  {result['objective']} · {result['backbone']} · {result['dataset']}  ({result['split']}, "
              f"{result['output']}, n={result['n']})")
        print(f"{'metric':<20} {'after':>9} {'before':>9}  {'after 95% CI':<17} vs before")
        for key in _SHOWN:
            if key in result:
                ci = result.get(f"{key}_ci95")
                ci_text = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
                verdict = result.get(f"{'acc' if key == result['split'] + '_acc' else key}_vs_before") or ""
                print(f"{key:<20} {_fmt(result.get(key)):>9} {_fmt(result.get(key + '_before')):>9}  {ci_text:<17} {verdict}")
    _json_line(scalars)
    return 0


def cmd_export(args) -> int:
    from ..report import export_parquet, export_sets, load_run_view, run_report_html, write_projector

    store = _store(args)
    view = load_run_view(store, args.run, args.split)  # resolves a short or partial id once
    phases = ("before", "after") if args.phase == "both" else (args.phase,)
    if args.format == "html":
        out = Path(args.out or f"{view.id}-report.html")
        out.write_text(run_report_html(view, method=args.method, dims=args.dims, output=args.output), encoding="utf-8")
        paths = [out]
    else:
        sets = export_sets(view, phases=phases, output=args.output)
        if not sets:
            from ..errors import EmbedLabError

            raise EmbedLabError(f"run {view.id!r} has no {'/'.join(phases)} embeddings for output {args.output or view.main_output()!r}")
        if args.format == "tsv":
            paths = write_projector(sets, Path(args.out or f"{view.id}-projector"))
        else:
            paths = [export_parquet(sets, Path(args.out or f"{view.id}.parquet"))]
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    _json_line({"run_id": view.id, "format": args.format, "files": [str(p) for p in paths]})
    return 0


def cmd_compare(args) -> int:
    from ..errors import InvalidConfig
    from ..report import comparison_html, load_run_view

    if not 2 <= len(args.runs) <= 4:
        raise InvalidConfig(f"compare takes 2 to 4 runs, not {len(args.runs)}")
    store = _store(args)
    views = [load_run_view(store, r, args.split) for r in args.runs]
    out = Path(args.html)
    out.write_text(comparison_html(views, method=args.method, dims=args.dims), encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    _json_line({"runs": [v.id for v in views], "html": str(out)})
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("analyze", parents=[common], help="embedding metrics of a finished run (last line: JSON)")
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--output", help="stored output to judge (default: encoder, or image for FLYP)")
    p.add_argument("--k", type=int, default=20, help="neighbours for the kNN accuracy (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of subsamples and of the probe's split")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("export", parents=[common], help="export a run's embeddings (projector TSV, Parquet) or an HTML report")
    p.add_argument("run")
    p.add_argument("--format", required=True, choices=["tsv", "parquet", "html"])
    p.add_argument("--out", help="tsv: a folder (vectors.tsv + metadata.tsv); parquet / html: a file")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--output", help="stored output (default: encoder, or image for FLYP)")
    p.add_argument("--phase", default="after", choices=["after", "before", "both"])
    p.add_argument("--method", default="pca", choices=["pca", "umap", "tsne"], help="html: projection method")
    p.add_argument("--dims", type=int, default=2, choices=[2, 3], help="html: projection dimensions")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compare", parents=[common], help="a self-contained HTML report comparing 2-4 runs")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--html", required=True, help="output file")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--method", default="pca", choices=["pca", "umap", "tsne"])
    p.add_argument("--dims", type=int, default=2, choices=[2, 3])
    p.set_defaults(func=cmd_compare)

