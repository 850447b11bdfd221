"""Run one evaluation recipe: check, load the data, evaluate each model, judge, write, push.

Used by ``ica-hub eval`` and ``python -m ica_hub.eval``. The steps, in dependency order:

1. what must exist on this machine (model folders, the judge's key) is checked before anything
   loads;
2. the held-out data and the scored dataset are loaded; an empty set is an error;
3. each model is loaded once: response loss and perplexity on ``data.test``, preference accuracy
   on ``data.pairs_test``, and, for the two models the judge compares, greedy answers to the
   first test prompts;
4. the AUROCs of the scored dataset's score columns (``score_quality``);
5. the judge; its failures are recorded in the results, never raised;
6. one JSON file with every result and its provenance, pushed beside the scored version when
   the recipe names a repo.

The results file (``RESULTS_FORMAT``), strict JSON with NaN written as null:

- ``models``: per model name, its ``path``, ``response_loss`` and ``preference_accuracy`` (the
  metric modules' outputs; null without that data);
- ``score_quality``: per score name, ``clean_over_noisy`` and ``target_over_off_domain`` AUROCs,
  and ``clean_over_noisy_in_target`` when the scored rows have ``row_domain`` (null without
  ``scores.path``);
- ``judge``: ``judge_pairwise``'s result plus ``prompt_rows`` (the ``data.test`` row of each
  ``prompt_index``), or null without a judge;
- ``provenance``: the recipe and its path, the time, the wall-clock seconds, the ica_hub
  version, each model's path and weights hash, each data set's source, size and content hash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

import ica_hub
from ica_hub.evaluation.evaluate_model import (
    check_score_columns,
    evaluate_model,
    format_problem,
    require_rows,
    score_quality,
)
from ica_hub.evaluation.recipe import EvalRecipe, check_paths
from ica_hub.models import weights_hash

logger = logging.getLogger(__name__)

RESULTS_FORMAT = "ica-hub-eval/v1"


def run_eval(recipe: EvalRecipe, recipe_path: str | None = None) -> dict[str, Any]:
    """Evaluate as ``recipe`` says, write ``output.path`` (and push); return the results."""
    started = time.monotonic()
    created_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    d, s, j = recipe.data, recipe.scores, recipe.judge

    # What must exist, before anything loads.
    check_paths(recipe)

    # Held-out data (for models only), and the scored dataset.
    test = pairs_test = scored = None
    if recipe.models and d.test:
        test = _load_split(d.test, "data.test", split=d.split, demo_split="test",
                           max_rows=d.max_rows)
    if recipe.models and d.pairs_test:
        pairs_test = _load_split(d.pairs_test, "data.pairs_test", split=d.split,
                                 demo_split="pairs_test", max_rows=d.max_rows)
    problems = [problem for problem in (
        test is not None and format_problem(test, "data.test", preference=False),
        pairs_test is not None and format_problem(pairs_test, "data.pairs_test",
                                                  preference=True),
    ) if problem]
    if problems:  # before any model loads
        raise ValueError("; ".join(problems))
    if s.path:
        scored = _load_split(s.path, "scores.path", split=s.split, demo_split="pool",
                             revision=s.revision)
        check_score_columns(scored, s.columns, s.kind_column)
    prompt_rows, prompts = _judge_prompts(test, j.num_prompts) if j.enabled else ([], [])
    if j.enabled and j.endpoint:
        from ica_hub.net import unreachable

        if problem := unreachable(j.endpoint.rstrip("/") + "/models", j.timeout_s):
            logger.warning("Judge endpoint %s is unreachable now (%s): the other metrics go "
                           "on; it is asked again after the models' answers, and judgments it "
                           "cannot give are recorded as missing, with the reason", j.endpoint,
                           problem)
    logger.info("Evaluating %d model(s) on %s test rows and %s held-out pairs, at most %d "
                "tokens per sequence; score AUROCs: %s; judge: %s",
                len(recipe.models), len(test) if test else "no", len(pairs_test) if pairs_test
                else "no", recipe.eval.max_length, list(s.columns) if scored else "none",
                f"{len(prompts)} prompts" if j.enabled else "none")

    # Each model once: its metrics, and its answers when the judge compares it.
    judged = recipe.judged_pair() if j.enabled else ()
    models, hashes, answers, answer_errors = {}, {}, {}, {}
    for entry in recipe.models:
        name = entry["name"]
        model, tokenizer = _load_model(entry["path"], recipe)
        hashes[name] = weights_hash(model)
        models[name] = {"path": entry["path"], **evaluate_model(
            model, tokenizer=tokenizer, test=test, pairs_test=pairs_test,
            max_length=recipe.eval.max_length,
            max_tokens_per_batch=recipe.eval.max_tokens_per_batch)}
        if name in judged:
            answers[name], answer_errors[name] = _answers(model, tokenizer, prompts, recipe,
                                                          name)
        _log_model(name, models[name])
        del model
        _free_memory()

    # How well each score column separates kinds of rows.
    quality = score_quality(scored, s.columns, s.kind_column) if scored is not None else None

    # The judge, whose failures are recorded and never raised.
    judge_section = None
    if j.enabled:
        judge_section = _judge(recipe, prompts, answers, answer_errors)
        judge_section["prompt_rows"] = prompt_rows

    # One JSON file, then the push.
    results = {
        "format": RESULTS_FORMAT,
        "models": models,
        "score_quality": quality,
        "judge": judge_section,
        "provenance": _provenance(recipe, recipe_path, created_at, started, hashes,
                                  {"test": test, "pairs_test": pairs_test, "scores": scored}),
    }
    _write(results, Path(recipe.output.path))
    if recipe.push.repo_id:
        _push(results, recipe)
    return results


def _load_split(spec: str, option: str, *, split: str, demo_split: str,
                revision: str | None = None, max_rows: int | None = None) -> Dataset:
    from ica_hub.scoring.run import load_rows

    split_option = "scores.split" if option.startswith("scores.") else "data.split"
    dataset = load_rows(spec, split, demo_split=demo_split, revision=revision, option=option,
                        split_option=split_option)
    if max_rows is not None:
        dataset = dataset.select(range(min(max_rows, len(dataset))))
    require_rows(dataset, f"{option} ({spec!r})")
    return dataset


def _judge_prompts(test: Dataset, num_prompts: int) -> tuple[list[int], list[tuple]]:
    """The chat prompts of the first ``num_prompts`` test rows that parse, and their rows."""
    from ica_hub.scoring.base import prepare_rows

    rows = prepare_rows(test.select(range(min(num_prompts, len(test))))[:])
    if rows.problems:
        logger.warning("Judge: %d test row(s) left out, their prompts do not parse (first: %s)",
                       len(rows.problems), next(iter(rows.problems.values())))
    prompt_rows = sorted(rows.parsed)
    return prompt_rows, [rows.parsed[i].prompt for i in prompt_rows]


def _load_model(path: str, recipe: EvalRecipe):
    from ica_hub.models import load_model_and_tokenizer
    from ica_hub.scoring.base import device_for_rank

    return load_model_and_tokenizer(path, dtype=getattr(torch, recipe.eval.dtype),
                                    device=device_for_rank(None, None))


def _answers(model, tokenizer, prompts: list[tuple], recipe: EvalRecipe,
             name: str) -> tuple[list[str | None] | None, str | None]:
    """The model's greedy answers, or the reason there are none (the judge is optional: a
    failure here must not lose the metrics already computed)."""
    from ica_hub.evaluation.judge import generate_answers

    try:
        return generate_answers(model, tokenizer, prompts,
                                max_new_tokens=recipe.judge.max_new_tokens,
                                max_length=recipe.eval.max_length,
                                desc=f"Answers of {name} for the judge"), None
    except Exception as error:  # recorded in the results, logged with the traceback
        logger.exception("Answers of %s could not be generated", name)
        return None, f"answers of {name} could not be generated: {type(error).__name__}: {error}"


def _judge(recipe: EvalRecipe, prompts: list[tuple], answers: dict,
           answer_errors: dict) -> dict[str, Any]:
    from ica_hub.evaluation.judge import failed_judgment, judge_pairwise, make_judge

    j = recipe.judge
    candidate, baseline = recipe.judged_pair()
    description = f"local model {j.model}" if j.model else f"endpoint {j.endpoint}"
    reason = answer_errors.get(candidate) or answer_errors.get(baseline)
    if reason is None:
        try:
            api_key = os.environ.get(j.api_key_env) if j.api_key_env else None
            judge = make_judge(model=j.model, endpoint=j.endpoint, model_name=j.model_name,
                               api_key=api_key, timeout_s=j.timeout_s,
                               dtype=getattr(torch, recipe.eval.dtype))
            return judge_pairwise(prompts, answers[candidate], answers[baseline], judge,
                                  candidate=candidate, baseline=baseline, seed=j.seed,
                                  max_consecutive_failures=j.max_consecutive_failures)
        except Exception as error:  # recorded in the results, logged with the traceback
            logger.exception("The judge failed")
            reason = f"the judge failed: {type(error).__name__}: {error}"
    return failed_judgment(len(prompts), reason, judge_description=description,
                           candidate=candidate, baseline=baseline, seed=j.seed)


def _log_model(name: str, results: dict[str, Any]) -> None:
    loss, accuracy = results["response_loss"], results["preference_accuracy"]
    logger.info("%s: %s; %s", name,
                f"loss {loss['loss']:.4f}, perplexity {loss['perplexity']:.2f}" if loss
                else "no test rows",
                f"preference accuracy {accuracy['accuracy']:.3f}" if accuracy else "no pairs")


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _provenance(recipe: EvalRecipe, recipe_path: str | None, created_at: str, started: float,
                hashes: dict[str, str], data: dict[str, Dataset | None]) -> dict[str, Any]:
    """What the results were computed from: enough to tell two result files apart."""
    from ica_hub.hub.versions import CONTENT_HASH_METHOD, content_hash

    sources = {"test": recipe.data.test, "pairs_test": recipe.data.pairs_test,
               "scores": recipe.scores.path}
    return {
        "recipe_path": recipe_path,
        "recipe": dataclasses.asdict(recipe),
        "created_at": created_at,
        "wall_seconds": round(time.monotonic() - started, 2),
        "ica_hub_version": ica_hub.__version__,
        "models": {e["name"]: {"path": e["path"], "weights_hash": hashes[e["name"]]}
                   for e in recipe.models},
        "data": {key: {"source": sources[key], "num_rows": len(dataset),
                       "content_hash": content_hash(dataset),
                       "content_hash_method": CONTENT_HASH_METHOD}
                 for key, dataset in data.items() if dataset is not None},
    }


def _write(results: dict[str, Any], path: Path) -> None:
    from ica_hub.hub.results import dumps_results

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_results(results), encoding="utf-8")
    logger.info("Results written to %s", path)


def _push(results: dict[str, Any], recipe: EvalRecipe) -> None:
    from ica_hub.hub.results import push_results

    p = recipe.push
    path = push_results(p.repo_id, results, version_tag=p.revision,
                        name=p.name or Path(recipe.output.path).stem, endpoint=p.endpoint)
    logger.info("Results pushed to %s: %s", p.repo_id, path)


def _auroc_text(result: dict | None, width: int) -> str:
    value = (result or {}).get("auroc")
    return f"{'-':>{width}}" if value is None or not math.isfinite(value) else f"{value:{width}.3f}"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A short text report of the results, for the terminal."""
    width = max([16, *(len(name) + 2 for name in (*results["models"],
                                                  *(results["score_quality"] or {})))])
    lines = [f"{'model':{width}}{'loss':>10}{'perplexity':>12}{'pref. acc.':>12}"]
    for name, model in results["models"].items():
        loss, accuracy = model["response_loss"], model["preference_accuracy"]
        lines.append(f"{name:{width}}" + (f"{loss['loss']:10.4f}{loss['perplexity']:12.2f}"
                                     if loss else f"{'-':>10}{'-':>12}")
                     + (f"{accuracy['accuracy']:12.3f}" if accuracy else f"{'-':>12}"))
    if results["score_quality"]:
        # clean>noisy among target-domain rows, when the rows say their domain; then over all
        # rows (clean off-domain rows count as clean); then target>off-domain, clean rows only.
        columns = [("clean>noisy, target rows", "clean_over_noisy_in_target"),
                   ("clean>noisy, all rows", "clean_over_noisy"),
                   ("target>off", "target_over_off_domain")]
        columns = [(title, key) for title, key in columns
                   if any(key in q for q in results["score_quality"].values())]
        lines.append(f"{'score AUROC':{width}}" + "".join(f"{t:>{len(t) + 2}}" for t, _ in columns))
        for name, quality in results["score_quality"].items():
            lines.append(f"{name:{width}}" + "".join(
                _auroc_text(quality.get(key), len(title) + 2) for title, key in columns))
    judge = results["judge"]
    if judge:
        lines.append(
            f"judge ({judge['judge']}): {judge['candidate']} vs {judge['baseline']}: win rate "
            f"{judge['win_rate']:.3f} ({judge['wins']} wins, {judge['losses']} losses, "
            f"{judge['ties']} ties; {len(judge['missing'])} of {judge['num_prompts']} missing)")
        if judge["missing"]:
            lines.append(f"  first missing: {judge['missing'][0]['reason']}")
    return lines
