"""``peapod recommend``, ``peapod explain`` and ``peapod serve``: use a trained run.

    peapod recommend --checkpoint DIR --user U [-k 10] [--exclude-history] [--json]
    peapod recommend --checkpoint DIR --history I1,I2,... [-k 10] [--json]
    peapod explain   --checkpoint DIR --user U --item I [--json]
    peapod serve     --checkpoint DIR [--host 127.0.0.1] [--port 8000] [--max-batch 16] [--max-wait-ms 5]

Heavy imports (torch, the model, FastAPI) happen inside the command functions so that
``peapod --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import PeapodError


def register(subparsers: Any) -> None:
    """Add the ``recommend``, ``explain`` and ``serve`` commands."""
    p = subparsers.add_parser(
        "recommend",
        help="next items for a user of a trained run, or for a new user given their history",
        description="Recommend the next items for a known user (--user) or a cold-start user (--history).",
    )
    _checkpoint_args(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user id of the training data")
    who.add_argument(
        "--history", type=_id_list, metavar="I1,I2,...", help="comma-separated item ids of a new user, oldest first"
    )
    p.add_argument("-k", "--k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--exclude-history", action="store_true", help="never recommend items of the history")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_recommend)

    p = subparsers.add_parser(
        "explain",
        help="generate an explanation of an item for a user",
        description="Generate a sentence explaining an item to a user (the explanation task).",
    )
    _checkpoint_args(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user id of the training data")
    who.add_argument("--history", type=_id_list, metavar="I1,I2,...", help="item ids of a new user instead")
    p.add_argument("--item", required=True, help="the item id to explain")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_explain)

    p = subparsers.add_parser(
        "serve",
        help="serve a trained run over HTTP (FastAPI + uvicorn)",
        description="Serve /recommend, /rank, /explain and /health for a trained run.",
    )
    _checkpoint_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--max-batch", type=_positive_int, default=16, help="requests per batched model call")
    p.add_argument(
        "--max-wait-ms", type=_non_negative_float, default=5.0, help="how long a batch waits to fill (ms)"
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


# ---------------------------------------------------------------------------------------------- arguments
def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run folder written by `peapod train`")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="the dataset folder the run was trained on, if it moved (default: as recorded in the run)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest on a busy machine)")


def _id_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not items or any(not t for t in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated item ids, got {text!r}")
    return items


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _load(args: argparse.Namespace):
    from ..api import load

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return load(args.checkpoint, device=args.device, data=args.data)


# ---------------------------------------------------------------------------------------------- commands
def cmd_recommend(args: argparse.Namespace) -> int:
    """Print the top-k items for --user or --history."""
    rec = _load(args)
    if args.user is not None:
        items = rec.recommend(args.user, k=args.k, exclude_history=args.exclude_history)
    else:
        items = rec.recommend(history=args.history, k=args.k, exclude_history=args.exclude_history)
    if args.json:
        payload = {
            "user": args.user,
            "history": args.history,
            "k": args.k,
            "items": [{"item": r.item, "score": r.score, "rank": r.rank} for r in items],
        }
        print(json.dumps(payload, indent=2))
        return 0
    who = f"user {args.user}" if args.user is not None else f"a new user with {len(args.history)} item(s)"
    print(f"Top {len(items)} items for {who}:")
    print(f"{'rank':>4}  {'item':<16} {'log-prob':>9}")
    for r in items:
        raw = rec.item_raw(r.item)
        label = f"{r.item} ({raw})" if raw and raw != r.item else r.item
        print(f"{r.rank:>4}  {label:<16} {r.score:>9.3f}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Print a generated explanation of --item for --user (or --history)."""
    rec = _load(args)
    if args.user is not None:
        e = rec.explain(args.user, args.item)
    else:
        e = rec.explain(None, args.item, history=args.history)
    if args.json:
        payload = {
            "user": e.user,
            "history": args.history,
            "item": e.item,
            "explanation": e.text,
            "score": e.score,
            "num_beams": e.num_beams,
            "min_length": e.min_length,
            "max_new_tokens": e.max_new_tokens,
        }
        print(json.dumps(payload, indent=2))
        return 0
    who = f"user {args.user}" if args.user is not None else "a new user"
    print(f"Item {e.item} for {who}: {e.text}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the run and serve it with uvicorn until interrupted."""
    try:
        import uvicorn

        from ..serving.app import create_app
    except ModuleNotFoundError as exc:
        raise PeapodError(f"serving needs fastapi and uvicorn ({exc.name} is missing): pip install fastapi uvicorn") from None

    rec = _load(args)
    app = create_app(rec, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    print(f"peapod: serving {args.checkpoint} on http://{args.host}:{args.port} (docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
