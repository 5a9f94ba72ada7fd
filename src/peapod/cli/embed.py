"""``peapod embed``: fit user embeddings on training interactions, save them, print their quality.

    peapod embed --dataset DIR --method pmf|bivae|bpr|als --out FILE [--dim 512] [--iters 100]
                 [--lr 1e-3] [--lamda 1e-3] [--seed 2022] [--item-id-scheme original|random|first-train]
                 [--neighbors K] [--split valid|test] [--sampled] [--no-quality] [--quality-json FILE]

The model sees only ``items[:-2]`` of every user. The quality figure is, by default, the validation
target ranked among all items (the user's training items left out), beside popularity; ``--sampled``
adds the 1 + 99 candidates protocol (validation: seeded redrawn negatives; test: the fixed negatives).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..config import DataConfig, EmbeddingConfig


def register(subparsers: Any) -> None:
    """Add the ``embed`` command."""
    from ..data.reindex import ITEM_ID_SCHEMES

    defaults = EmbeddingConfig()
    p = subparsers.add_parser(
        "embed",
        help="fit user embeddings (PMF, BiVAE, BPR, ALS) on training interactions",
        description="Fit collaborative-filtering user embeddings on each user's training items "
        "(items[:-2]), save them as one safetensors file and print their ranking quality beside popularity.",
    )
    p.add_argument("--dataset", type=Path, required=True, metavar="DIR", help="dataset folder (P5 layout)")
    p.add_argument("--method", choices=("pmf", "bivae", "bpr", "als"), default=defaults.method)
    p.add_argument("--dim", type=int, default=defaults.dim, help=f"vector size (default {defaults.dim})")
    p.add_argument("--iters", type=int, default=defaults.max_iter, help="iterations / epochs (default 100)")
    p.add_argument("--lr", type=float, default=defaults.learning_rate, help="learning rate (pmf, bivae, bpr)")
    p.add_argument("--lamda", type=float, default=defaults.lamda, help="regularisation of every method")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument(
        "--item-id-scheme", choices=ITEM_ID_SCHEMES, default="original",
        help="item numbering of the dataset (default original)",
    )
    p.add_argument("--scheme-seed", type=int, default=2022, help="seed of the item re-indexing")
    p.add_argument("--neighbors", type=int, default=None, metavar="K",
                   help="also save the top-K similar users of every user beside --out")
    p.add_argument("--chunk-size", type=int, default=defaults.neighbor_chunk_size,
                   help="users per chunk of the neighbour index and the quality figure")
    p.add_argument("--split", choices=("valid", "test"), default="valid",
                   help="target of the quality figure (default valid)")
    p.add_argument("--sampled", action="store_true", help="also rank the target among 99 negatives")
    p.add_argument("--no-quality", action="store_true", help="skip the quality figure")
    p.add_argument("--quality-json", type=Path, default=None, metavar="FILE", help="write the figure as JSON")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="factors file (.safetensors)")
    p.set_defaults(func=cmd_embed)


def _log(message: str) -> None:
    print(f"[embed] {message}", file=sys.stderr, flush=True)


def neighbors_path(out: Path) -> Path:
    """Where ``peapod embed --neighbors`` puts the index: ``X.safetensors`` -> ``X.neighbors.safetensors``."""
    return out.with_name(f"{out.stem}.neighbors.safetensors")


def cmd_embed(args: argparse.Namespace) -> int:
    from ..data.loader import load_dataset
    from ..embeddings.factorize import fit_factors
    from ..embeddings.neighbors import build_neighbor_index
    from ..embeddings.quality import format_quality
    from ..errors import ConfigError
    from ..io import atomic_write_json

    if args.neighbors is not None and args.neighbors < 1:
        raise ConfigError(f"--neighbors must be >= 1, got {args.neighbors}")
    config = EmbeddingConfig(
        method=args.method, dim=args.dim, max_iter=args.iters, learning_rate=args.lr, lamda=args.lamda,
        seed=args.seed, neighbor_chunk_size=args.chunk_size,
        n_neighbors=args.neighbors if args.neighbors is not None else EmbeddingConfig().n_neighbors,
    )
    _log(f"loading {args.dataset} (item ids: {args.item_id_scheme})")
    dataset = load_dataset(
        args.dataset, item_id_scheme=args.item_id_scheme, scheme_seed=args.scheme_seed,
        require_negatives=args.sampled and args.split == "test",
    )
    train = dataset.train_sequences()
    _log(f"{dataset.n_users} users, {dataset.n_items} items, "
         f"{sum(len(s) for s in train.values())} training interactions (items[:-2] per user)")
    _log(f"fitting {config.method} dim {config.dim}, {config.max_iter} iterations")
    start = time.perf_counter()
    factors = fit_factors(train, dataset.items, config)
    _log(f"fitted in {time.perf_counter() - start:.1f} s; "
         f"{factors.settings['items_without_training_data']} items without training data get zero vectors")
    factors.settings.update(
        dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
        item_id_scheme=dataset.item_id_scheme, scheme_seed=dataset.scheme_seed,
    )
    factors.save(args.out)
    _log(f"wrote {args.out}")

    if args.neighbors is not None:
        start = time.perf_counter()
        index = build_neighbor_index(factors.user_factors, args.neighbors, chunk_size=args.chunk_size,
                                     users=factors.users)
        path = index.save(neighbors_path(args.out))
        _log(f"wrote {path} (top-{args.neighbors} neighbours, {time.perf_counter() - start:.1f} s)")

    if not args.no_quality:
        report = _quality(dataset, factors, args)
        print(format_quality(report))
        emb, pop = report["embedding"]["full"], report["popularity"]["full"]
        if emb["NDCG@10"] <= pop["NDCG@10"]:
            _log("warning: this embedding ranks no better than popularity (full NDCG@10 "
                 f"{emb['NDCG@10']:.4f} vs {pop['NDCG@10']:.4f}); its neighbours carry little signal")
        if args.quality_json is not None:
            atomic_write_json(args.quality_json, report)
    return 0


def _quality(dataset: Any, factors: Any, args: argparse.Namespace) -> dict:
    from ..data.negatives import test_candidates, validation_candidates
    from ..embeddings.quality import embedding_quality

    users = dataset.users
    if args.split == "valid":
        known = dataset.train_sequences()
        targets = {u: dataset.valid_target(u) for u in users}
        candidates = validation_candidates(dataset, seed=DataConfig().valid_negatives_seed) if args.sampled else None
    else:  # at test time the validation item is known too
        known = {u: s[:-1] for u, s in dataset.sequences.items()}
        targets = {u: dataset.test_target(u) for u in users}
        candidates = test_candidates(dataset) if args.sampled else None
    protocols = "full and sampled ranking" if args.sampled else "full ranking"
    _log(f"quality on the {args.split} targets ({protocols})")
    report = embedding_quality(factors, known, targets, candidates, chunk_size=min(args.chunk_size, 1024))
    report["split"] = args.split
    report["method"] = factors.method
    return report
