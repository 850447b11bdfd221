"""``ica-hub score <recipe>.yaml [key=value ...]``: parse the recipe, score, report."""

from __future__ import annotations

import argparse
import logging

from ica_hub.cli import add_recipe_arguments

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score a training pool with ICA scores from a recipe",
        description="Score a pool as a recipe describes and write one scored dataset (and push "
        "it when the recipe names a repo). On several processes, run: accelerate launch "
        "--config_file recipes/accelerate/<cfg>.yaml -m ica_hub.score <recipe>.yaml "
        "[key=value ...]",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, "path to a scoring recipe (YAML), e.g. recipes/score.yaml",
                         "data.max_rows=16 scorer.k=2")


def run(args: argparse.Namespace) -> int:
    from ica_hub.scoring.recipe import load_score_recipe
    from ica_hub.scoring.run import run_scoring

    run_scoring(load_score_recipe(args.recipe, args.overrides))
    return 0
