"""Evaluate a model on held-out rows, and judge how well scores separate kinds of rows.

- :func:`response_logps`: per row, the summed log-probability of the response given the prompt
  and its token count, computed by the same :class:`~ica_hub.scoring.LikelihoodScorer` that
  scores training pools (same chat rendering, same prompt fitting, same forward passes).
- :func:`evaluate_model`: response loss and perplexity on target-domain test rows (metric
  ``response_loss``), and preference accuracy on held-out pairs (``preference_accuracy``).
- :func:`score_quality`: for each score column of a scored dataset, the AUROC of clean over
  noisy rows and of target-domain over off-domain rows (``score_auroc``).

Rows the scorer cannot score (a response longer than ``max_length``, an unparseable row) are
not dropped silently: the metrics count them in ``num_skipped`` and a warning names the reason.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from typing import Any

import numpy as np
from datasets import Dataset

from ica_hub.columns import ROW_DOMAIN, ROW_KIND

logger = logging.getLogger(__name__)

# Row kinds of a pool (see ica_hub.data.demo_data): clean rows are real answers to their own
# questions, in or out of the target domain; every other kind is noise of some sort.
TARGET_KIND = "target"
CLEAN_KINDS = (TARGET_KIND, "off_domain")

_PREFIX = "eval_loglik"  # column prefix of the likelihood scorer's output inside this module


@functools.cache
def _metric(name: str):
    from ica_hub.evaluation.metrics import load_metric

    return load_metric(name, keep_in_memory=True)  # no cache files: inputs are a few numbers


def require_rows(dataset: Dataset, what: str) -> None:
    """Evaluating on nothing is a mistake upstream (a wrong path or filter): say so."""
    if len(dataset) == 0:
        raise ValueError(f"{what} has no rows: point it at a non-empty dataset (a save_to_disk "
                         "folder or a .json/.jsonl file), or leave it out")


def format_problem(rows: Dataset, what: str, preference: bool) -> str | None:
    """Why ``rows`` (named ``what``) cannot be used as test rows (``preference``: as held-out
    pairs), or None."""
    from ica_hub.data.formats import UnknownFormatError, detect_format

    try:
        fmt = detect_format(rows.column_names)
    except UnknownFormatError as error:
        return f"{what}: {error}"
    if fmt.is_preference == preference:
        return None
    return f"{what} has columns {rows.column_names}: " + (
        "held-out pairs need prompt, chosen and rejected columns" if preference else
        "response log-probs and the test loss need SFT rows (prompt/completion or messages); "
        "give preference pairs as pairs_test")


def _require_format(rows: Dataset, what: str, preference: bool) -> None:
    problem = format_problem(rows, what, preference)
    if problem:
        raise ValueError(problem)


def response_logps(model: Any, tokenizer: Any, rows: Dataset | list[dict],
                   max_length: int = 1024, *, max_tokens_per_batch: int = 4096,
                   desc: str = "Response log-probs") -> list[tuple[float | None, int | None]]:
    """``(sum of log p(response token | prompt), number of response tokens)`` per row.

    ``model``: a model object (with its ``tokenizer``), or a path / Hub id loaded for this call
    (``tokenizer`` may then be None). Rows are SFT rows (``prompt``/``completion`` or
    ``messages``); a row that cannot be scored gives ``(None, None)``. Preference rows are
    refused: :func:`evaluate_model` scores each side of a pair as its own row.
    """
    from ica_hub.scoring import LikelihoodScorer

    if isinstance(rows, list):
        rows = Dataset.from_list(rows)
    _require_format(rows, "rows", preference=False)
    scorer = LikelihoodScorer(model, tokenizer, max_length=max_length, column_prefix=_PREFIX,
                              max_tokens_per_batch=max_tokens_per_batch)
    scored = rows.map(scorer, batched=True, batch_size=64, remove_columns=rows.column_names,
                      desc=desc)
    sums, counts = scored[f"{_PREFIX}_logp"], scored[f"{_PREFIX}_num_response_tokens"]
    _warn_unscored(scored[f"{_PREFIX}_flag"], sums, desc)
    return list(zip(sums, counts))


def _warn_unscored(flags: list[str | None], sums: list[float | None], desc: str) -> None:
    reasons = Counter(flag.split(":")[0] for flag, value in zip(flags, sums)
                      if value is None and flag)
    if reasons:
        logger.warning("%s: %d of %d rows could not be scored (%s); they count as skipped",
                       desc, sum(reasons.values()), len(sums),
                       ", ".join(f"{reason}: {n}" for reason, n in reasons.items()))


def evaluate_model(model_or_path: Any, *, tokenizer: Any = None, test: Dataset | None = None,
                   pairs_test: Dataset | None = None, max_length: int = 1024,
                   max_tokens_per_batch: int = 4096) -> dict[str, Any]:
    """Metrics of one model: ``{"response_loss": {...}, "preference_accuracy": {...}}``.

    ``test``: SFT rows of the target domain; their responses' loss (NLL per token, token
    weighted) and perplexity. ``pairs_test``: ``prompt``/``chosen``/``rejected`` rows; the
    fraction where the chosen response has the higher mean log-prob per token (each side's
    prompt is fitted to ``max_length`` on its own). A section is None when its data is.
    ``model_or_path``: a model object (with ``tokenizer``), a path or a Hub id; a path is
    loaded once for both sections.
    """
    from ica_hub.models import load_model_and_tokenizer
    from ica_hub.scoring.base import device_for_rank

    if isinstance(model_or_path, str | os.PathLike):
        model_or_path, tokenizer = load_model_and_tokenizer(
            str(model_or_path), device=device_for_rank(None, None))
    logps = functools.partial(response_logps, model_or_path, tokenizer, max_length=max_length,
                              max_tokens_per_batch=max_tokens_per_batch)
    results: dict[str, Any] = {"response_loss": None, "preference_accuracy": None}

    # Loss and perplexity of the test responses.
    if test is not None:
        require_rows(test, "test")
        sums, counts = zip(*logps(test, desc="Test responses: log-probs"))
        results["response_loss"] = _metric("response_loss").compute(
            logprobs=list(sums), num_tokens=list(counts))

    # Preference accuracy: per-token mean log-prob of each side of every pair.
    if pairs_test is not None:
        require_rows(pairs_test, "pairs_test")
        _require_format(pairs_test, "pairs_test", preference=True)
        per_token = {}
        for side in ("chosen", "rejected"):
            rows = pairs_test.select_columns(["prompt", side]).rename_column(side, "completion")
            per_token[side] = [_per_token(total, count) for total, count in
                               logps(rows, desc=f"Held-out pairs: {side} log-probs")]
        results["preference_accuracy"] = _metric("preference_accuracy").compute(
            chosen_logps=per_token["chosen"], rejected_logps=per_token["rejected"])
    return results


def _per_token(total: float | None, count: int | None) -> float | None:
    return total / count if total is not None and count else None


def check_score_columns(scored_dataset: Dataset, score_columns: dict[str, str],
                        kind_column: str = ROW_KIND) -> None:
    """Fail, naming every missing column, before any work is done on a scored dataset."""
    wanted = {kind_column, *score_columns.values()}
    missing = sorted(wanted - set(scored_dataset.column_names))
    if missing:
        raise ValueError(f"The scored dataset has no column(s) {missing}; its columns are "
                         f"{scored_dataset.column_names}. Name existing score columns, and "
                         f"the column of row kinds as kind_column")


def score_quality(scored_dataset: Dataset, score_columns: dict[str, str],
                  kind_column: str = ROW_KIND,
                  domain_column: str = ROW_DOMAIN) -> dict[str, dict[str, Any]]:
    """Per named score column, the AUROCs of metric ``score_auroc`` (higher score = positive).

    ``clean_over_noisy``: clean rows (kinds in ``CLEAN_KINDS``) against every other kind
    (swapped, truncated, corrupted...), over the whole pool. ``target_over_off_domain``: among
    clean rows only, target-domain rows against off-domain ones. When the dataset has
    ``domain_column`` (the domain of each row's question, noisy rows included), also
    ``clean_over_noisy_in_target``: clean against noisy among rows whose question is of the
    target domain, so that being off target counts neither for nor against a score.
    ``score_columns`` maps a display name to a column, e.g. ``{"ica": "ica_score"}``.
    """
    check_score_columns(scored_dataset, score_columns, kind_column)
    kinds = np.array(scored_dataset[kind_column], dtype=object)
    clean = np.isin(kinds, CLEAN_KINDS)
    target = kinds == TARGET_KIND
    in_target = (np.array(scored_dataset[domain_column], dtype=object) == TARGET_KIND
                 if domain_column in scored_dataset.column_names else None)
    auroc = _metric("score_auroc")
    quality = {}
    for name, column in score_columns.items():
        scores = np.array(scored_dataset[column], dtype=float)  # None becomes NaN: skipped
        quality[name] = {
            "column": column,
            "clean_over_noisy": auroc.compute(predictions=scores.tolist(),
                                              references=clean.astype(int).tolist()),
            "target_over_off_domain": auroc.compute(
                predictions=scores[clean].tolist(),
                references=target[clean].astype(int).tolist()),
        }
        if in_target is not None:
            quality[name]["clean_over_noisy_in_target"] = auroc.compute(
                predictions=scores[in_target].tolist(),
                references=clean[in_target].astype(int).tolist())
    return quality
