"""``peapod data ...``: inspect a dataset folder and regenerate P5's evaluation negatives.

    peapod data stats DIR [--json] [--item-id-scheme S] [--scheme-seed N] [--keep-explanation-leaks]
    peapod data negatives DIR --out FILE [--seed 2022] [--n 99]

``peapod data synth`` and ``peapod data from-interactions`` come from :mod:`peapod.cli.data_import`
when that module is present.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``data`` command group."""
    from ..data.reindex import ITEM_ID_SCHEMES

    group = subparsers.add_parser(
        "data",
        help="inspect datasets in the P5 layout, make negatives, import data",
        description="Dataset tools: statistics, P5 evaluation negatives, importers.",
    )
    sub = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    group.set_defaults(func=lambda args: _help(group))

    p = sub.add_parser(
        "stats",
        help="counts, density, lengths, explanation splits, id-leak measure",
        description="Load a dataset folder (checking every file) and print its statistics.",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="folder with sequential_data.txt and friends")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--item-id-scheme", choices=ITEM_ID_SCHEMES, default="original", help="item numbering (default original)"
    )
    p.add_argument("--scheme-seed", type=int, default=2022, help="seed of the re-indexing (default 2022)")
    p.add_argument(
        "--keep-explanation-leaks",
        action="store_true",
        help="keep explanation-train records on a user's validation/test item (dropped by default)",
    )
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "negatives",
        help="write P5's fixed test negatives (negative_samples.txt) for a sequence file",
        description="Regenerate negative_samples.txt with P5's exact procedure (byte-identical for seed 2022).",
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="folder with sequential_data.txt")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="file to write (atomically)")
    p.add_argument("--seed", type=int, default=2022, help="numpy seed (P5: 2022)")
    p.add_argument("--n", type=int, default=99, help="negatives per user (P5: 99)")
    p.set_defaults(func=cmd_negatives)

    try:
        data_import = importlib.import_module(f"{__package__}.data_import")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.data_import":
            raise
    else:
        data_import.add_import_commands(sub)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_stats(args: argparse.Namespace) -> int:
    from ..data.loader import load_dataset
    from ..data.stats import dataset_stats, format_stats

    dataset = load_dataset(
        args.dir,
        item_id_scheme=args.item_id_scheme,
        scheme_seed=args.scheme_seed,
        drop_explanation_leaks=not args.keep_explanation_leaks,
        require_negatives=False,
    )
    stats = dataset_stats(dataset)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def cmd_negatives(args: argparse.Namespace) -> int:
    from ..data.formats import SEQUENCES_FILE, read_sequences
    from ..data.negatives import format_negatives, p5_negative_samples
    from ..io import atomic_write_bytes

    if args.n < 1:
        raise _error(f"--n must be at least 1, got {args.n}")
    sequences = read_sequences(args.dir / SEQUENCES_FILE)
    negatives = p5_negative_samples(sequences, n=args.n, seed=args.seed)
    data = format_negatives(negatives).encode()
    atomic_write_bytes(args.out, data)
    print(f"wrote {args.out}: {len(negatives):,} users x {args.n} negatives (seed {args.seed}), "
          f"sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


def _error(message: str) -> Exception:
    from ..errors import PeapodError

    return PeapodError(message)
