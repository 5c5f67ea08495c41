"""`python -m core select | selections`: pick a budget of training samples, list saved picks.

    $ python -m core select --dataset fashion-mnist --strategy vecaf --budget 100 --json
    $ python -m core train --dataset fashion-mnist --selection <id printed above>

The strategies are core/selection.py's; the saved records core/selections.py's.
"""
from __future__ import annotations

import sys

from .. import selection as sel
from ..errors import EmbedLabError, InvalidConfig
from ._common import _json_line, _root


def cmd_select(args) -> int:
    kw = dict(seed=args.seed, n_per_class=args.n_per_class, weights=args.weights, eta=args.eta, lam=args.lam, tau=args.tau,
              root=_root(args), device=args.device, image_size=args.image_size, captions=args.captions,
              target_caption=args.target_caption, steps=args.ods_steps, members=args.members)
    if args.rounds and args.rounds > 1:
        if args.previous or args.from_run or args.id:
            raise InvalidConfig("--rounds runs the whole loop itself: drop --previous, --from-run and --id")
        def say(rec):
            if not args.json:
                print(f"round: {rec['budget']} selected ({rec['kept']} kept) -> {rec['id']}", file=sys.stderr, flush=True)
        record = sel.select_rounds(args.backbone, args.dataset, args.strategy, args.budget, args.rounds,
                                   round_steps=args.round_steps, on_round=say, **kw)
    else:
        record = sel.select(args.backbone, args.dataset, args.strategy, args.budget, selection=args.id,
                            from_run=args.from_run, previous=args.previous, **kw)
    if not args.json:
        how = ""
        if record.get("loss_head"):
            how += f", loss weights from the {record['loss_head']} head"
        if record.get("language"):
            label = {"pseudo": "pseudo-captions (the ImageNet model's top-2 classes, no labels)",
                     "label-informed": "label-informed class prompts", "dataset": "the dataset's own captions"}
            how += f", CEA with {label.get(record['captions'], record['captions'])}"
        print(f"{record['strategy']}: {record['budget']} of {record['pool']} images ({record['kept']} kept), "
              f"{record['classes_covered']}/{record['classes']} classes, coverage radius {record['coverage_radius']:.3f}, "
              f"mean distance {record['mean_distance']:.3f}{how} -> {record['id']}", file=sys.stderr)
        print(f"train on it: python -m core train --backbone {record['backbone']} --dataset {record['dataset']} "
              f"--selection {record['id']}", file=sys.stderr)
    _json_line(record)
    return 0


def cmd_selections(args) -> int:
    rows = []
    for sid in sel.list_selections(_root(args)):
        try:
            info = sel.selection_info(sid, _root(args))
        except EmbedLabError:  # a damaged file must not hide the others
            continue
        rows.append({k: info.get(k) for k in ("id", "strategy", "budget", "seed", "backbone", "dataset", "pool",
                                             "classes_covered", "coverage_radius")})
    if not args.json:
        for r in rows:
            print(f"{r['id']:<44} {r['strategy']:<8} {r['budget']:>6} of {r['pool']:<6} {r['backbone']} / {r['dataset']}")
    _json_line(rows)
    return 0


def register(sub, common) -> None:
    from ..captions import CAPTION_SOURCES

    p = sub.add_parser("select", parents=[common], help="pick a budget of training samples (random, k-center, ActiveFT, VeCAF, density); last line JSON")
    p.add_argument("--backbone", help=f"backbone whose frozen embeddings the selector uses (default {sel.DEFAULT_BACKBONE}, or the run's with --from-run)")
    p.add_argument("--dataset", help="dataset whose training split is the pool (required unless --from-run)")
    p.add_argument("--strategy", required=True, choices=sel.STRATEGIES)
    p.add_argument("--budget", required=True, type=int, help="number of samples to select (earlier rounds' included)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-per-class", dest="n_per_class", type=int, help="cap the pool per class (default: the whole training split)")
    p.add_argument("--weights", default="pretrained", help="pretrained (default), random, or a weights file")
    p.add_argument("--from-run", dest="from_run", help="embed and loss-weight with a finished run's fine-tuned model (VeCAF's current model)")
    p.add_argument("--previous", help="keep the samples of this saved selection (the earlier round) and add new ones")
    p.add_argument("--rounds", type=int, help="run VeCAF's loop: this many rounds of select + a short fine-tuning run")
    p.add_argument("--round-steps", dest="round_steps", type=int, default=100, help="--rounds: optimizer steps of each round's run")
    p.add_argument("--ods-steps", dest="ods_steps", type=int, default=sel.ODS_STEPS, help=f"activeft/vecaf: centroid optimisation steps (default {sel.ODS_STEPS})")
    p.add_argument("--members", type=int, default=sel.ENSEMBLE, help=f"vecaf: selectors in the ensemble (default {sel.ENSEMBLE})")
    p.add_argument("--eta", type=float, help=f"vecaf/density: caption augmentation strength in [0, 1] (default {sel.DEFAULT_ETA} on CLIP backbones, 0 = off)")
    p.add_argument("--captions", default="auto", choices=CAPTION_SOURCES,
                   help="vecaf/density CEA captions: auto (the dataset's own, else label-free pseudo-captions), dataset, pseudo, "
                        "label-informed (class prompts: uses the labels), none")
    p.add_argument("--target-caption", dest="target_caption", help="free text appended to every caption, e.g. 'It is a snowy day!'")
    p.add_argument("--lambda", dest="lam", type=float, default=sel.DEFAULT_LAMBDA, help=f"density: diversity weight (default {sel.DEFAULT_LAMBDA})")
    p.add_argument("--tau", type=float, default=sel.DEFAULT_TAU, help=f"density: kernel bandwidth (default {sel.DEFAULT_TAU})")
    p.add_argument("--id", help="save under this id (default: derived from the settings)")
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.set_defaults(func=_checked(cmd_select))

    p = sub.add_parser("selections", parents=[common], help="list saved data selections; last line JSON")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_selections)


def _checked(fn):
    def run(args) -> int:
        if not args.from_run and not args.dataset:
            raise InvalidConfig("select needs --dataset (or --from-run RUN)")
        if not args.from_run:
            args.backbone = args.backbone or sel.DEFAULT_BACKBONE
        if args.from_run:
            from ..report import resolve_run
            from ..store import RunStore

            rec = resolve_run(RunStore(_root(args)), args.from_run)
            args.backbone = args.backbone or rec.backbone
            args.dataset = args.dataset or rec.dataset
            if (args.backbone, args.dataset) != (rec.backbone, rec.dataset):
                raise InvalidConfig(f"run {rec.id} is {rec.backbone} on {rec.dataset}; drop --backbone/--dataset or match them")
            args.from_run = rec.id
        return fn(args)
    return run

