"""ICA re-scoring during training: the factory a training recipe names in ``rescore.scorer``.

    rescore:
      num_rescores: 3
      scorer: ica_hub.scoring:make_rescorer
      options:
        score_recipe: recipes/score.yaml   # holdout and ICA settings come from here
        overrides: [scorer.k=3]            # optional, as on the command line

The returned ``rescore(model, dataset)`` scores the training rows with the model as it is now
(the in-memory model, on its own device; LoRA adapters included) and returns ``ica_score``
per row in dataset order. The holdout and its embeddings are prepared once, at the first call.
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
    state: dict[str, Any] = {}

    def rescore(model, dataset) -> list[float | None]:
        if "scorer" not in state or state["scorer"].handle.model is not model:
            template = build_scorer(score_recipe)  # holdout rows and settings, no model loaded
            state["scorer"] = _on_model(template, model, tokenizer)
        scorer = state["scorer"]
        column = f"{scorer.settings['column_prefix']}_score"
        scores: list[float | None] = []
        for batch in dataset.iter(batch_size=_ROWS_PER_CALL):
            scores += scorer(batch)[column]
        return scores

    return rescore


def _on_model(template, model, tokenizer):
    """The template scorer's holdout and settings, on an in-memory model."""
    from ica_hub.scoring.ica import ICAScorer

    return ICAScorer(template._holdout_rows, model, tokenizer, **template.settings,
                     baseline_pool=template._pool_rows, holdout_source=template.holdout_source,
                     max_tokens_per_batch=template.runtime["max_tokens_per_batch"])
