"""The `awmjax` command: subcommands grouped by noun (worlds, model, train, eval, ...)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each entry is a module under awmjax.cli with `register(subparsers)`; a module adds
# its own nouns and verbs. Modules import their heavy dependencies lazily, inside
# the handlers, so `awmjax --help` stays fast.
COMMAND_MODULES = ["worlds", "model", "train", "eval", "serve"]


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser from every registered command module."""
    parser = argparse.ArgumentParser(
        prog="awmjax",
        description="Synthesize SQL-backed tool-use worlds and train tool-using agents on them.",
    )
    sub = parser.add_subparsers(dest="noun", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"awmjax.cli.{name}")
        except ModuleNotFoundError as e:  # a command module not yet present in this build
            if e.name == f"awmjax.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        # a noun without a verb prints that noun's help
        (getattr(args, "noun_parser", None) or parser).print_help()
        return 0 if args.noun is None else 2
    try:
        return int(handler(args) or 0)
    except CliError as e:
        print(f"awmjax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("awmjax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
