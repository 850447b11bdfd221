"""``ica-hub train <recipe>.yaml [key=value ...]``: parse the recipe, train, report."""

from __future__ import annotations

import argparse
import logging

from ica_hub.cli import add_recipe_arguments

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train with example weights (SFT, DPO, SimPO) from a recipe",
        description="Train with per-example loss weights as a recipe describes. Under several "
        "processes, run: accelerate launch --config_file recipes/accelerate/<cfg>.yaml "
        "-m ica_hub.train <recipe>.yaml [key=value ...]",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, "path to a training recipe (YAML), e.g. recipes/sft.yaml",
                         "training.max_steps=10 weights.rule=rank")


def run(args: argparse.Namespace) -> int:
    from ica_hub.config import load_recipe
    from ica_hub.training.run import run_training

    recipe = load_recipe(args.recipe, args.overrides)
    output_dir = run_training(recipe)
    logger.info("Model written to %s", output_dir)
    return 0
