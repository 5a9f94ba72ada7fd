"""``peapod evaluate`` (a trained run or a classic baseline) and ``peapod report`` (runs side by side)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..errors import ConfigError


def _csv(choices: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        parts = tuple(p.strip() for p in text.split(",") if p.strip())
        bad = [p for p in parts if p not in choices]
        if bad or not parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(choices)}, got {text!r}")
        return parts

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..baselines import BASELINES
    from ..config import TASKS
    from ..evaluation.results import RANKERS

    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run (or a classic baseline) on sequential, top-n and explanation tasks",
        description="Evaluate a trained run folder (--checkpoint) or fit and evaluate a baseline (--baseline) "
        "under the same protocol; writes results.json, a predictions JSONL and a Markdown table beside it.",
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", metavar="RUN_DIR", help="run folder written by `peapod train`")
    who.add_argument("--baseline", choices=BASELINES, help="fit this baseline on the training interactions")
    p.add_argument("--dataset", required=True, metavar="DIR", help="P5-layout dataset folder")
    p.add_argument("--out", required=True, metavar="FILE", help="results.json to write")
    p.add_argument("--tasks", type=_csv(TASKS), default=("seq", "topn", "exp"), help="default: seq,topn,exp")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--max-users", type=int, default=None, metavar="N",
                   help="a seeded sample of N users (and N explanation records)")
    p.add_argument("--protocol", choices=("clean", "reference"), default=None,
                   help="clean (constrained, deduplicated, seeded) or the reference's behaviour; default: config")
    p.add_argument("--ranker", type=_csv(RANKERS), default=RANKERS, help="top-n rankers (default: beam,exact)")
    p.add_argument("--batch-size", type=int, default=None, help="generation batch size (default: config, 32)")
    p.add_argument("--num-beams", type=int, default=None, help="beams for seq/top-n (default: config, 20)")
    p.add_argument("--top-k", type=int, default=None, help="items returned per user (default: config, 10)")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: config, 2022)")
    hist = p.add_mutually_exclusive_group()
    hist.add_argument("--exclude-history", dest="exclude_history", action="store_true", default=None,
                      help="drop the user's history items from sequential recommendations")
    hist.add_argument("--keep-history", dest="exclude_history", action="store_false")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    b = p.add_argument_group("baselines (with --baseline)")
    b.add_argument("--preset", default=None, help="configuration preset for the baseline's settings")
    b.add_argument("--config", default=None, metavar="FILE", help="YAML configuration file")
    b.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="configuration override, e.g. embedding.dim=64 (repeatable)")
    b.add_argument("--item-id-scheme", choices=("original", "random", "first-train"), default=None)
    b.add_argument("--sasrec", action="append", default=[], metavar="KEY=VALUE",
                   help="SASRec setting, e.g. n_epochs=50 (repeatable)")
    p.set_defaults(func=run_evaluate)

    r = subparsers.add_parser("report", help="set several results.json side by side (Markdown tables + PNG chart)")
    r.add_argument("results", nargs="+", metavar="RESULTS_JSON")
    r.add_argument("--out", default=None, metavar="FILE", help="write the Markdown report here")
    r.add_argument("--png", default=None, metavar="FILE", help="write a grouped bar chart here")
    r.set_defaults(func=run_report)


def _sasrec_settings(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--sasrec expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_evaluate(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..evaluation.results import sidecar_paths, summary_markdown
    from ..evaluation.runner import EvalOptions, evaluate_baseline, evaluate_checkpoint

    if args.checkpoint and (args.preset or args.config or args.set or args.sasrec or args.item_id_scheme):
        raise ConfigError("--preset/--config/--set/--sasrec/--item-id-scheme apply to --baseline only; "
                          "a checkpoint carries its own configuration")
    options = EvalOptions(
        tasks=tuple(args.tasks), split=args.split, max_users=args.max_users, protocol=args.protocol,
        rankers=tuple(args.ranker), batch_size=args.batch_size, num_beams=args.num_beams, top_k=args.top_k,
        seed=args.seed, exclude_history=args.exclude_history, progress=not args.no_progress,
        command={"argv": list(sys.argv), "arguments": {k: (list(v) if isinstance(v, tuple) else v)
                                                       for k, v in vars(args).items() if k != "func"}},
    )
    if args.checkpoint:
        result = evaluate_checkpoint(args.checkpoint, args.dataset, args.out, options)
    else:
        config = load_config(args.preset, args.config, args.set)
        result = evaluate_baseline(args.baseline, args.dataset, args.out, options, config=config,
                                   item_id_scheme=args.item_id_scheme, sasrec=_sasrec_settings(args.sasrec))
    if result is not None:
        print(summary_markdown(result))
        preds, md = sidecar_paths(args.out)
        print(f"wrote {Path(args.out)}, {preds.name} and {md.name}", file=sys.stderr)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..evaluation.report import write_report

    print(write_report(args.results, out=args.out, png=args.png))
    if args.png:
        print(f"wrote {args.png}", file=sys.stderr)
    return 0
