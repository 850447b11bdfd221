"""``python -m ica_hub.train <recipe>.yaml [key=value ...]``: the entry point for
``accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m ica_hub.train ...``."""

from __future__ import annotations

import argparse
import logging
import sys

from accelerate import PartialState

from ica_hub.training.cli import add_recipe_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ica_hub.train", description=__doc__)
    add_recipe_arguments(parser)
    args = parser.parse_args(argv)
    # Milestones on the main process only; the other processes report warnings and errors.
    main_process = PartialState().is_main_process
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
