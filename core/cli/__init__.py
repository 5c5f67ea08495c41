"""EmbedLab's command line: the one layer on top of the library, which nothing in core/ imports.

    python -m core train [--backbone B] [--dataset D] [--objective ce,lacvit,flyp] [--steps S | --epochs E] ...
    python -m core runs | show RUN | cancel RUN | resume RUN | backbones | datasets | shifts | import-dataset PATH --name N

One module per command group, each with a `register(sub, common)` that adds its sub-commands, and
`COMMAND_GROUPS` below, the table of them all (the order is the order of `--help`); shared helpers (the
one-line usage error, `--runs-dir`, the JSON line) live in `_common`. Every command honours
`--runs-dir DIR` (overrides EMBEDLAB_HOME for that command). A bad argument or unknown name prints one
line on stderr and exits 2; `train` prints a progress bar on stderr and, as its last stdout line, one
JSON object.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import EmbedLabError
from . import analysis, bench, catalog, curves, runs, selection
from ._common import EXIT_USAGE, _Parser, labels_arg  # noqa: F401  (labels_arg: public, `--labels N | all`)

COMMAND_GROUPS = (  # (module, its sub-commands)
    (runs, ("train", "resume", "runs", "show", "cancel")),
    (catalog, ("backbones", "datasets", "shifts", "import-dataset")),
    (bench, ("bench",)),
    (analysis, ("analyze", "export", "compare")),
    (selection, ("select", "selections")),
    (curves, ("label-curve", "budget-curve")),
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--runs-dir", "--data-dir", dest="runs_dir", help="use this folder instead of EMBEDLAB_HOME")
    parser = _Parser(prog="python -m core", description="EmbedLab: see what fine-tuning does to a vision model's embeddings.",
                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for group, _ in COMMAND_GROUPS:
        group.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EmbedLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a folder that is a file, read-only, full: the user's to fix, so one line, no "internal"
        logging.getLogger(__name__).debug("os error", exc_info=True)  # with -v, the trace of a bug that raised one
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # never a traceback for the user; the log has it with -v
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
