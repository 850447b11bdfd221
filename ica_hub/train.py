"""``python -m ica_hub.train <recipe>.yaml [key=value ...]``: the entry point for
``accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m ica_hub.train ...``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ica_hub.training.cli import add_recipe_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ica_hub.train", description=__doc__)
    add_recipe_arguments(parser)
    args = parser.parse_args(argv)
    # Milestones on the main process only; the other processes report warnings and errors.
    # (RANK, set by torchrun, not PartialState: the trainer's arguments must create that first.)
    main_process = int(os.environ.get("RANK", "0")) == 0
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
