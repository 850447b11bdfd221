"""ICA re-scoring during training: the factory a training recipe names in ``rescore.scorer``.

    rescore:
      num_rescores: 3
      scorer: ica_hub.scoring:make_rescorer
      options:
        score_recipe: recipes/score.yaml   # holdout and ICA settings come from here
        overrides: [scorer.k=3]            # optional, as on the command line

The returned ``rescore(model, dataset)`` scores the training rows with the model as it is now
(the in-memory model, on its own device; LoRA adapters included) and returns the recipe's score
per row in dataset order: ``fit_score`` for ``scorer.name: ica-fit`` (the default; its holdout
statistics are taken again on the current model at every pass), ``ica_score`` for ``ica``.
"""

from __future__ import annotations

from typing import Any

from ica_hub.config import RecipeError

_OPTIONS = ("score_recipe", "overrides")
_ROWS_PER_CALL = 64  # rows handed to the scorer at once: bounds memory on large pools


def make_rescorer(recipe, tokenizer):
    """``rescore(model, dataset) -> list[float | None]`` from ``recipe.rescore.options``."""
    from ica_hub.scoring.recipe import load_score_recipe
    from ica_hub.scoring.run import build_scorer

    options: dict[str, Any] = dict(recipe.rescore.options)
    unknown = sorted(set(options) - set(_OPTIONS))
    problems = [f"rescore.options.{key}: unknown; the options are {', '.join(_OPTIONS)}"
                for key in unknown]
    if not options.get("score_recipe"):
        problems.append("rescore.options.score_recipe is missing: name the scoring recipe whose "
                        "holdout and settings re-scoring uses, e.g. recipes/score.yaml")
    if problems:
        raise RecipeError(problems)
    score_recipe = load_score_recipe(options["score_recipe"], list(options.get("overrides", [])))
    template = build_scorer(score_recipe)  # holdout rows and settings, no model loaded

    def rescore(model, dataset) -> list[float | None]:
        # A new scorer per pass: cheap (the model is in memory), and ica-fit's holdout
        # statistics must come from the model as it is now, not as it was at the first pass.
        scorer = _on_model(template, model, tokenizer)
        scores: list[float | None] = []
        for batch in dataset.iter(batch_size=_ROWS_PER_CALL):
            scores += scorer(batch)[scorer.score_column]
        return scores

    return rescore


def _on_model(template, model, tokenizer):
    """The template scorer's holdout and settings, on an in-memory model."""
    from ica_hub.scoring.fit import HoldoutFitScorer
    from ica_hub.scoring.ica import ICAScorer

    ica: ICAScorer = template.ica if isinstance(template, HoldoutFitScorer) else template
    options = dict(ica.settings, holdout_source=ica.holdout_source,
                   max_tokens_per_batch=ica.runtime["max_tokens_per_batch"])
    if isinstance(template, HoldoutFitScorer):
        options.pop("column_prefix")  # ica-fit fixes it
        return HoldoutFitScorer(template._holdout_rows, model, tokenizer,
                                domain_weight=template._options["domain_weight"], **options)
    return ICAScorer(template._holdout_rows, model, tokenizer, **options,
                     baseline_pool=template._pool_rows)
