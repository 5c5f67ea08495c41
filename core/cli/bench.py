"""`python -m core bench [--quick] [--json] [--only PARTS] [--gpu]`: the speed benchmark (core/bench/).

core.bench is imported only here, when the command runs: it loads torch (~1.4 s), which listing runs
or datasets never needs.
"""
from __future__ import annotations

import json
import sys


def cmd_bench(args) -> int:
    from .. import bench

    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            from ..errors import InvalidConfig

            raise InvalidConfig("--gpu needs a CUDA GPU; none is available here")
        results = bench.gpu_throughput()
        print(bench.format_table(results))
        if args.json:
            print(json.dumps(results, default=float))
        return 0
    results = bench.run_bench(quick=args.quick, log=lambda s: print(s, file=sys.stderr, flush=True),
                              only=args.only.split(",") if args.only else None)
    print(bench.format_table(results))
    if args.json:
        print(json.dumps(results, default=float))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("bench", parents=[common], help="side-by-side speed benchmark (ratios)")
    p.add_argument("--quick", action="store_true", help="small sizes: under 5 minutes on 2 CPU cores")
    p.add_argument("--json", action="store_true", help="last line: one JSON object with every figure")
    p.add_argument("--only", help="comma list of parts: loop,extract,levers,cache,ui,projections,quick_compare,scale "
                                  "(and compile, viewers, load, which only run when named: viewers and load drive real "
                                  "headless Chromium against a real server)")
    p.add_argument("--gpu", action="store_true", help="the GPU script: ViT-B/16 FLYP and LaCViT AMP step throughput vs a bare AMP loop")
    p.set_defaults(func=cmd_bench)
