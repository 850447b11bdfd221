"""``ica-hub eval <recipe>.yaml [key=value ...]``: parse the recipe, evaluate, report."""

from __future__ import annotations

import argparse

from ica_hub.cli import add_recipe_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate models, scores and a pairwise judge from a recipe",
        description="Evaluate models on held-out data (loss, perplexity, preference accuracy), "
        "score columns against row kinds (AUROCs) and, optionally, two models' answers with a "
        "judge, as a recipe describes; write one JSON file (and push it beside a scored "
        "version when the recipe names a repo).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, "path to an evaluation recipe (YAML), e.g. recipes/eval.yaml",
                         "data.max_rows=8 output.path=outputs/eval/smoke.json")


def run(args: argparse.Namespace) -> int:
    from ica_hub.evaluation.recipe import load_eval_recipe
    from ica_hub.evaluation.run import run_eval, summary_lines

    recipe = load_eval_recipe(args.recipe, args.overrides)
    results = run_eval(recipe, recipe_path=args.recipe)
    print("\n".join([*summary_lines(results), f"results: {recipe.output.path}"]))
    return 0
