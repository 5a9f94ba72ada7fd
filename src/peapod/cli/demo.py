"""``peapod demo``: the main job on the embedded default, end to end, with no download.

1. generate the deterministic synthetic dataset (the embedded default);
2. train a small PeaPOD (components user prompt) and the POD baseline (no user prompt) on it;
   each run fits its user embeddings on training interactions only and trains its own tokenizer;
3. evaluate both and the popularity baseline on the test split (sequential with history items excluded,
   as the synthetic data has no repeat purchases; top-n; explanation);
4. print the results table (paper layout) and write everything under ``--out``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the main job on the embedded synthetic default: data, embeddings, PeaPOD vs POD vs popularity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="folder for the data, runs and results (default runs/demo)")
    p.add_argument("--users", type=int, default=300, help="synthetic users (default 300)")
    p.add_argument("--items", type=int, default=200, help="synthetic items (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    p.add_argument("--preset", default="tiny", help="model/training preset (default tiny)")
    p.add_argument("--max-steps", type=int, default=1500, help="optimizer steps per model (default 1500)")
    p.add_argument("--max-users", type=int, default=None, help="evaluate at most this many users")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per training process and for evaluation (default: the cores shared out)")
    p.set_defaults(func=run_demo)


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _train_one(job: tuple) -> str:
    """Train one demo model (in its own process); returns its summary line."""
    import torch

    from ..config import load_config
    from ..training.checkpoint import find_checkpoint
    from ..training.run import CHECKPOINTS_DIR
    from ..training.trainer import train

    label, kind, run_dir, data_dir, preset, max_steps, threads = job
    torch.set_num_threads(threads)
    # --max-steps is the budget: epochs (the reference's "epoch" is a fixed number of batches) only
    # bound it from above, with validation and model selection at the end of each one.
    config = load_config(preset, overrides=[f"model.user_prompt={kind}", "train.epochs=1000",
                                            f"train.max_steps={max_steps}"])
    # An interrupted demo picks up where it stopped (the last checkpoint of each run).
    resume = find_checkpoint(Path(run_dir) / CHECKPOINTS_DIR) is not None
    if resume:
        _say(f"resuming {run_dir} from its last checkpoint")
    result = train(config, data_dir, run_dir, resume=resume, progress=False)
    losses = ", ".join(f"{t} {v:.3f}" for t, v in result.valid_losses.items())
    return f"{label}: {result.steps} steps in {result.seconds:.0f} s; validation loss: {losses}"


def run_demo(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..data.stats import dataset_stats, format_stats
    from ..data.synthetic import write_synthetic
    from ..evaluation.results import markdown_tables
    from ..evaluation.runner import EvalOptions, evaluate_baseline, evaluate_checkpoint
    from ..io import atomic_write_text

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # evaluation
    start = time.perf_counter()
    out = Path(args.out)
    data_dir = out / "data"
    _say(f"1/4 synthetic dataset ({args.users} users, {args.items} items, seed {args.seed}) -> {data_dir}")
    write_synthetic(data_dir, n_users=args.users, n_items=args.items, seed=args.seed)
    print(format_stats(dataset_stats(load_dataset(data_dir))))

    runs = {"PeaPOD (components)": ("components", out / "peapod"), "POD (no user prompt)": ("none", out / "pod")}
    # The two models train at once, one process each, splitting the cores between them.
    workers = max(1, min(len(runs), os.cpu_count() or 1))
    threads = args.threads or max(1, (os.cpu_count() or 1) // workers)
    _say(f"2/4 training {' and '.join(runs)} ({args.max_steps} steps each, preset {args.preset}, "
         f"{workers} process(es) x {threads} thread(s))")
    jobs = [(label, kind, run_dir, data_dir, args.preset, args.max_steps, threads)
            for label, (kind, run_dir) in runs.items()]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for line in pool.map(_train_one, jobs):
            print(line)

    _say("3/4 evaluating on the test split (clean protocol: constrained beams, exact top-n ranking)")
    # The synthetic default never repeats a purchase, so a history item can never be the next one: the
    # sequential task excludes history items (the --exclude-history option) for every row alike. Without
    # it the T5 models spend beams copying items from the prompt.
    options = dict(split="test", max_users=args.max_users, progress=False, exclude_history=True)
    results, labels = [], []
    for label, (_, run_dir) in runs.items():
        results.append(evaluate_checkpoint(run_dir, data_dir, run_dir / "results.json", EvalOptions(**options)))
        labels.append(label)
    _say("4/4 popularity baseline and the results table")
    results.append(evaluate_baseline("popularity", data_dir, out / "popularity.json",
                                     EvalOptions(tasks=("seq", "topn"), **options)))
    labels.append("Popularity")
    table = markdown_tables(results, labels) + (
        "\nSequential: full ranking over all items with the user's history items excluded (the synthetic "
        "data has no repeat purchases). Top-n: 1 test item + 99 negatives per user.\n")
    atomic_write_text(out / "results.md", table)
    print()
    print(table)
    print(f"Everything is under {out}/ (results.md, */results.json, per-user predictions); "
          f"{time.perf_counter() - start:.0f} s in all.")
    return 0
