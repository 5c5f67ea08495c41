"""`python -m core backbones | datasets | shifts | import-dataset`: what a run can be made of."""
from __future__ import annotations

import sys

from ._common import _json_line, _root


def cmd_backbones(args) -> int:
    from ..backbones import ONLINE_SUGGESTIONS, list_backbones

    rows = [{"name": n, "clip": e.is_clip, "offline": e.offline, "description": e.description} for n, e in list_backbones().items()]
    rows += [{"name": n, "clip": "/" in n, "offline": False, "description": d} for n, d in ONLINE_SUGGESTIONS]
    if args.json:
        _json_line(rows)
        return 0
    for row in rows:
        tag = "offline" if row["offline"] else "online "
        print(f"{row['name']:<40} {tag} {'clip' if row['clip'] else '    '}  {row['description']}")
    print("\nany other timm name (e.g. resnet18.a1_in1k) or open_clip MODEL/PRETRAINED (e.g. ViT-B-32/laion2b_s34b_b79k) works too")
    return 0


def cmd_datasets(args) -> int:
    from ..datasets import list_datasets

    rows = [{"name": n, "kind": e.kind, "offline": e.offline, "description": e.description} for n, e in list_datasets(_root(args)).items()]
    if args.json:
        _json_line(rows)
        return 0
    for row in rows:
        print(f"{row['name']:<16} {row['kind']:<9} {'offline' if row['offline'] else 'online '}  {row['description']}")
    return 0


def cmd_shifts(args) -> int:
    from ..shifts import list_shifts

    rows = [{"name": n, "description": d} for n, d in list_shifts().items()]
    if args.json:
        _json_line(rows)
        return 0
    for row in rows:
        print(f"{row['name']:<16} {row['description']}")
    print("\ncorruptions and mix take a severity 1..5 (e.g. --shift gaussian_blur:4; default 3); see core/shifts.py")
    return 0


def cmd_import(args) -> int:
    from ..dataset_import import import_dataset

    report = import_dataset(args.path, args.name, root=_root(args), overwrite=args.overwrite)
    print(report.summary(), file=sys.stderr)
    _json_line({"name": report.name, "images": report.n_images, "classes": report.counts, "skipped": len(report.skipped),
                "skipped_files": [{"path": p, "reason": r} for p, r in report.skipped[:50]]})
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("backbones", parents=[common], help="list backbones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backbones)
    p = sub.add_parser("datasets", parents=[common], help="list datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)
    p = sub.add_parser("shifts", parents=[common], help="list the shifts a run's OOD split can use (--shift)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_shifts)
    p = sub.add_parser("import-dataset", parents=[common], help="import a folder or zip with one sub-folder per class")
    p.add_argument("path")
    p.add_argument("--name", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an imported dataset of the same name")
    p.set_defaults(func=cmd_import)
