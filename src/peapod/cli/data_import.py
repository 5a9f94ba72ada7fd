"""``peapod data synth`` and ``peapod data from-interactions``: make a P5-layout dataset folder.

The ``data`` command group (:mod:`peapod.cli.data`) calls :func:`add_import_commands` with its
sub-parsers object.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_import_commands(data_subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` and ``from-interactions`` sub-commands to the ``data`` group."""
    synth = data_subparsers.add_parser(
        "synth",
        help="write the synthetic default dataset (P5 layout, with explanations)",
        description="Generate the deterministic synthetic dataset (categories, a Markov purchase chain, "
        "aspect-based explanation sentences) and write it in the P5 layout.",
    )
    synth.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    synth.add_argument("--users", type=int, default=300, metavar="N", help="number of users (default 300)")
    synth.add_argument("--items", type=int, default=200, metavar="M", help="catalogue size (default 200)")
    synth.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    synth.add_argument("--clusters", type=int, default=8, metavar="C", help="product categories, 2..10 (default 8)")
    synth.add_argument("--negatives", type=int, default=99, metavar="K", help="test negatives per user (default 99)")
    synth.set_defaults(func=_run_synth)

    imp = data_subparsers.add_parser(
        "from-interactions",
        help="import your own interactions (CSV, JSONL or raw Amazon reviews) into the P5 layout",
        description="Read an interaction log, apply an iterative k-core filter, order each user's items by time, "
        "number users and items as P5, draw P5's test negatives, and extract explanation sentences from "
        "review texts when there are any. The file may be gzip-compressed.",
    )
    imp.add_argument("file", type=Path, help="the interactions file (.csv, .tsv, .jsonl, .json, optionally .gz)")
    imp.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    imp.add_argument("--format", choices=("csv", "jsonl", "amazon"), default=None, help="default: from the file name")
    imp.add_argument("--k-core", type=int, default=5, metavar="K", help="keep users and items with >= K interactions (0: off; default 5)")
    imp.add_argument("--min-length", type=int, default=5, metavar="L", help="minimum items per user, >= 3 (default 5)")
    imp.add_argument("--seed", type=int, default=2022, metavar="S", help="seed of the user shuffle and the explanation split (default 2022)")
    imp.add_argument("--user-col", default="user", metavar="NAME", help="user column / key (default user)")
    imp.add_argument("--item-col", default="item", metavar="NAME", help="item column / key (default item)")
    imp.add_argument("--time-col", default="timestamp", metavar="NAME", help="time column / key (default timestamp)")
    imp.add_argument("--rating-col", default="rating", metavar="NAME", help="rating column / key (default rating)")
    imp.add_argument("--text-col", default="text", metavar="NAME", help="review-text column / key (default text)")
    imp.add_argument("--min-rating", type=float, default=None, metavar="R", help="drop interactions rated below R")
    imp.add_argument("--negatives", type=int, default=99, metavar="K", help="test negatives per user (default 99)")
    imp.add_argument(
        "--aspects", default=None, metavar="A,B,...",
        help="comma-separated aspect words for the explanation extractor (default: learnt from the texts)",
    )
    imp.add_argument("--n-aspects", type=int, default=100, metavar="N", help="aspects to learn (default 100)")
    imp.add_argument("--no-explanations", action="store_true", help="skip explanation extraction")
    imp.set_defaults(func=_run_import)


def _run_synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import generate_synthetic
    from ..data.writers import write_p5_dataset

    data = generate_synthetic(
        args.users, args.items, args.seed, n_clusters=args.clusters, n_negatives=args.negatives
    )
    ds = data.dataset
    write_p5_dataset(args.out, ds.sequences, ds.items, ds.negatives, ds.explanations, ds.user_raw, ds.item_raw)
    exp = " / ".join(f"{s} {len(v):,}" for s, v in ds.explanations.items())
    print(
        f"synthetic dataset (seed {args.seed}, {len(data.cluster_names)} categories): {ds.n_users:,} users, "
        f"{ds.n_items:,} items, {ds.n_interactions:,} interactions, {args.negatives} negatives per user\n"
        f"explanations: {exp}\n"
        f"wrote {args.out}"
    )
    return 0


def _run_import(args: argparse.Namespace) -> int:
    from ..data.importers import import_interactions

    aspects = [a for a in args.aspects.split(",") if a.strip()] if args.aspects else None
    report = import_interactions(
        args.file,
        args.out,
        fmt=args.format,
        k_core=args.k_core,
        min_length=args.min_length,
        seed=args.seed,
        user_col=args.user_col,
        item_col=args.item_col,
        time_col=args.time_col,
        rating_col=args.rating_col,
        text_col=args.text_col,
        min_rating=args.min_rating,
        n_negatives=args.negatives,
        explanations=not args.no_explanations,
        aspects=aspects,
        n_aspects=args.n_aspects,
    )
    print(report.summary())
    return 0
