"""The ``ica-hub`` command: a thin layer that parses, calls the library, and reports.

Each command group lives beside the code it drives and exposes ``register(subparsers)``; this
module only collects them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Modules that add sub-commands, in the order they appear in ``ica-hub --help``.
_COMMAND_MODULES = (
    "ica_hub.demo",
    "ica_hub.scoring.cli",
    "ica_hub.training.cli",
    "ica_hub.evaluation.cli",
    "ica_hub.hub.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ica-hub",
        description="ICA scores and example weights for fine-tuning data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:  # a real missing dependency, not an absent group
                raise
            continue
        module.register(subparsers)
    return parser


def add_recipe_arguments(parser: argparse.ArgumentParser, recipe_help: str,
                         example_overrides: str) -> None:
    """The ``<recipe>.yaml [key=value ...]`` arguments shared by the recipe commands."""
    parser.add_argument("recipe", help=recipe_help)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"options on top of the recipe, e.g. {example_overrides}")


def module_main(prog: str, description: str, add_arguments, run,
                argv: list[str] | None = None) -> int:
    """``python -m ica_hub.<entry>`` under ``accelerate launch``: log milestones on the main
    process only (RANK, set by torchrun, rather than PartialState, which the trainer's
    arguments must be the first to create); the other processes report warnings and errors."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    main_process = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return _run_reporting_user_errors(prog, run, args, verbose=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # one line per HTTP request to the Hub drowns the progress
        for name in ("httpx", "httpx2", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return _run_reporting_user_errors(f"ica-hub {args.command}", args.func, args,
                                      verbose=args.verbose)


# Errors a user's input causes: the message names the problem and the fix, so it is printed as
# one line (exit status 2, as argparse uses) instead of a traceback; -v shows the traceback.
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, OverflowError, OSError)


def _run_reporting_user_errors(prog: str, run, args, *, verbose: bool) -> int:
    try:
        return int(run(args) or 0)
    except _USER_ERRORS as error:
        if verbose:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
