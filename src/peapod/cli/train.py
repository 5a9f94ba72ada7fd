"""``peapod train``: train PeaPOD on a P5-layout dataset into a run folder (also under accelerate launch)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a PeaPOD model (task-alternated, accelerate; resumable)",
        description=(
            "Train PeaPOD on a P5-layout dataset folder and write a run folder (config, tokenizer, user "
            "embeddings, best model, log, resume checkpoint). Runs on several processes under "
            "`accelerate launch` (batch size is per process)."
        ),
        epilog=(
            "Several processes: `accelerate launch --multi_gpu --num_processes N -m peapod train ...` "
            "(on a machine without CUDA this forms a gloo CPU group), or `torchrun --nproc_per_node N -m "
            "peapod train ...`. An interrupted run continues with the same command plus --resume."
        ),
    )
    p.add_argument("--dataset", required=True, metavar="DIR", help="P5-layout dataset folder")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder to write (or to continue with --resume)")
    p.add_argument("--preset", metavar="NAME", help="configuration preset (tiny, small, t5-small, paper-beauty, ...)")
    p.add_argument("--config", metavar="FILE", help="YAML configuration file (applied over the preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration key (repeatable), e.g. --set train.learning_rate=1e-3")
    p.add_argument("--embeddings", metavar="FILE",
                   help="user factors (peapod embed output); default: fit them on the training interactions")
    p.add_argument("--tokenizer", metavar="NAME|DIR|FILE",
                   help="tokenizer (HF name, folder, spiece.model, tokenizer.json); default: train one on the data")
    p.add_argument("--user-prompt", choices=["components", "neighbors", "none"],
                   help="user-personalized prompt design (components: paper text; neighbors: public code)")
    p.add_argument("--no-task-prompt", action="store_true", help="drop the task prompt (the paper's PeaPOD-X)")
    p.add_argument("--train-user-embeddings", action="store_true", help="fine-tune the user embeddings too")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps")
    p.add_argument("--epochs", type=int, metavar="N", help="number of epochs")
    p.add_argument("--item-id-scheme", choices=["original", "random", "first-train"],
                   help="item ids: original P5 ids or a leak-free re-indexing")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The ``section.key=value`` overrides the flags stand for, after the ``--set`` ones."""
    out = list(args.overrides)
    if args.user_prompt is not None:
        out.append(f"model.user_prompt={args.user_prompt}")
    if args.no_task_prompt:
        out.append("model.task_prompt=false")
    if args.train_user_embeddings:
        out.append("model.train_user_embeddings=true")
    if args.max_steps is not None:
        out.append(f"train.max_steps={args.max_steps}")
    if args.epochs is not None:
        out.append(f"train.epochs={args.epochs}")
    if args.item_id_scheme is not None:
        out.append(f"data.item_id_scheme={args.item_id_scheme}")
    if args.tokenizer is not None:
        out.append(f"model.tokenizer={json.dumps(args.tokenizer)}")
    return out


def run_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.trainer import train

    config = load_config(args.preset, args.config, overrides_from_args(args))
    result = train(
        config,
        args.dataset,
        args.out,
        embeddings_path=args.embeddings,
        resume=args.resume,
        progress=not args.no_progress,
    )
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    train_losses = " ".join(f"{t}={v:.4f}" for t, v in result.train_losses.items())
    valid_losses = " ".join(f"{t}={v:.4f}" for t, v in result.valid_losses.items())
    print(f"steps: {result.steps} ({result.epochs} epochs of {result.steps_per_epoch} steps)"
          f"{', stopped early' if result.stopped_early else ''}")
    print(f"final train loss: {train_losses or '-'}")
    print(f"final valid loss: {valid_losses or '-'}")
    if result.best_metric is not None:
        print(f"best mean valid loss: {result.best_metric:.4f} at step {result.best_step}")
    print(f"run saved to {result.out_dir}")
    return 0
