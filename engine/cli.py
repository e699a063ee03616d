"""`turnout models ...` subcommands; gateway/cli.py mounts them via `register`.

`turnout engine serve` runs the gateway's app, so it lives with the gateway (gateway/engine_server.py).

Every handler returns the process exit code; store errors become one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from rich.console import Console
from rich.filesize import decimal
from rich.measure import Measurement
from rich.table import Table

from engine import store

Handler = Callable[[argparse.Namespace], int]
_UNLIMITED = 10_000  # columns offered to a table measured for a console that is not a terminal


def _reporting_store_errors(handler: Handler) -> Handler:
    """Turn a StoreError into one clear line and a non-zero exit, instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except store.StoreError as error:
            print(f"turnout: error: {error}", file=sys.stderr)
            return 1

    run.__doc__ = handler.__doc__
    return run


@_reporting_store_errors
def pull_model(args: argparse.Namespace) -> int:
    """Download, verify and convert a built-in model into the local store."""
    path = store.pull(args.name, progress=not args.quiet, force=args.force, keep_gguf=args.keep_gguf)
    if args.weights != "fp32":
        path = store.convert_weights(str(path), args.weights, progress=not args.quiet)
    print(path)
    return 0


@_reporting_store_errors
def list_models(args: argparse.Namespace) -> int:
    """Show built-in and locally converted models, whether each is pulled, their weight format and their
    size to download, on disk and in memory."""
    table = Table(title=f"models in {store.models_dir()}")
    sizes = ("download", "on disk", "in memory")
    for column in ("name", "weights", *sizes, "source", "pulled"):
        table.add_column(column, no_wrap=True, justify="right" if column in sizes else "left")
    table.add_column("path", overflow="fold")
    for info in store.list_models():
        table.add_row(info.name, info.weights, _size(info.size or None), _size(info.disk_size), _size(info.memory),
                      info.source, "yes" if info.pulled else "no", info.path if info.pulled else "")
    print_table(table)
    return 0


def _size(size: int | None) -> str:
    return decimal(size) if size is not None else ""


def print_table(table: Table) -> None:
    """On a terminal rich fits the table to the window. Piped, rich assumes 80 columns and folds or
    cuts the cells, so a script reading `turnout models list | …` would get broken names and paths:
    there the console is as wide as the table wants (unless $COLUMNS says otherwise)."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        wide = console.options.update(width=_UNLIMITED, max_width=_UNLIMITED)
        console = Console(width=Measurement.get(console, wide, table).maximum)
    console.print(table)


@_reporting_store_errors
def remove_model(args: argparse.Namespace) -> int:
    """Delete a pulled model from the local store."""
    if not store.remove(args.name):
        raise store.StoreError(f"model {args.name!r} is not in {store.models_dir()}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `models` command group to the top-level `turnout` parser."""
    models = subparsers.add_parser("models", help="pull and list local models")
    models_commands = models.add_subparsers(dest="models_command", required=True)

    pull = models_commands.add_parser("pull", help=pull_model.__doc__)
    pull.add_argument("name", metavar="NAME", help=f"one of: {', '.join(store.BUILTIN_MODELS)}")
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    pull.add_argument("--force", action="store_true", help="pull again even if already pulled")
    pull.add_argument("--keep-gguf", action="store_true", help="keep the GGUF file next to the model")
    pull.add_argument("--weights", choices=store.WEIGHT_FORMATS, default="fp32",
                      help="also convert it to this weight format (what a deployment's `weights:` loads)")
    pull.set_defaults(func=pull_model)

    listing = models_commands.add_parser("list", help=list_models.__doc__)
    listing.set_defaults(func=list_models)

    rm = models_commands.add_parser("rm", help=remove_model.__doc__)
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(func=remove_model)
