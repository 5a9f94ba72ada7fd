"""The ``peapod`` command. Thin: parse arguments, call the library, print.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
sub-commands; each sub-command sets ``func`` to a function taking the parsed arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import PeapodError

#: Modules (under peapod.cli) that add commands, in the order they appear in --help.
COMMAND_MODULES = ("data", "embed", "train", "evaluate", "serve", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peapod",
        description="PeaPOD: personalized prompt distillation for generative recommendation.",
    )
    parser.add_argument("--version", action="version", version=f"peapod {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command group not built yet
            raise
        module.register(subparsers)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except PeapodError as exc:
        print(f"peapod: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("peapod: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
