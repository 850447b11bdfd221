"""Scores to example weights, and scores to selections.

Weighting rules (``rule=``), each mapping one group of scores to weights in [0, 1]:

- ``"minmax"`` (the paper's rule, applied per effective batch by the trainers):
  ``w = (s - min s) / (max s - min s)``; the lowest example of the group gets 0 and equal
  scores give uniform weights of 1.
- ``"softmax"``: ``w = exp(s / T) / max exp(s / T)``; temperature ``T`` sets how peaked.
- ``"rank"``: ``w = rank / (n - 1)`` with average ranks for ties; insensitive to outliers.
- ``"uniform"``: every weight 1 (the unweighted baseline).

The trainers reduce the loss as ``sum(w * loss) / sum(w)`` so only ratios of weights matter:
the rules are scaled to a maximum of 1 to keep logged values comparable.

Negative scores (``negative=``): ``"keep"`` (default) uses them as they are, so min-max and rank
shift them like any other value; ``"zero"`` first clips them to 0, which treats every example the
holdout context makes *less* likely as equally bad.

Missing scores (``missing=``), from rows the scorer flagged: ``"zero"`` (default) gives them weight
0; ``"error"`` raises with the row indices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

WeightRule = Literal["minmax", "softmax", "rank", "uniform"]
WEIGHT_RULES: tuple[str, ...] = ("minmax", "softmax", "rank", "uniform")


def _as_array(scores: Sequence[float | None] | np.ndarray) -> np.ndarray:
    return np.array([np.nan if s is None else s for s in scores], dtype=np.float64)


def scores_to_weights(
    scores: Sequence[float | None] | np.ndarray,
    rule: WeightRule = "minmax",
    *,
    temperature: float = 1.0,
    negative: Literal["keep", "zero"] = "keep",
    missing: Literal["zero", "error"] = "zero",
) -> np.ndarray:
    """Turn one group of scores (a batch, or a whole dataset) into weights in [0, 1]."""
    if rule not in WEIGHT_RULES:
        raise ValueError(f"Unknown weight rule {rule!r}: choose one of {', '.join(WEIGHT_RULES)}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if negative not in ("keep", "zero"):
        raise ValueError(f"negative={negative!r}: choose 'keep' or 'zero'.")
    if missing not in ("zero", "error"):
        raise ValueError(f"missing={missing!r}: choose 'zero' or 'error'.")
    values = _as_array(scores)
    if np.isinf(values).any():
        rows = np.flatnonzero(np.isinf(values)).tolist()
        raise ValueError(f"Infinite scores at rows {rows[:10]}: re-score these rows.")
    is_missing = np.isnan(values)
    if is_missing.any() and missing == "error":
        rows = np.flatnonzero(is_missing).tolist()
        raise ValueError(
            f"Missing scores at rows {rows[:10]} (flagged by the scorer; see its flag column). "
            "Drop these rows, or pass missing='zero' to give them weight 0."
        )
    if negative == "zero":
        values = np.where(values < 0, 0.0, values)

    weights = np.zeros_like(values)
    present = values[~is_missing]
    if present.size:
        weights[~is_missing] = _apply_rule(present, rule, temperature)
    return weights


def _apply_rule(values: np.ndarray, rule: str, temperature: float) -> np.ndarray:
    if rule == "uniform":
        return np.ones_like(values)
    if rule == "minmax":
        spread = values.max() - values.min()
        if spread == 0:
            return np.ones_like(values)
        return (values - values.min()) / spread
    if rule == "softmax":
        shifted = (values - values.max()) / temperature  # max is 0: no overflow
        return np.exp(shifted)
    # rank: average ranks for ties, scaled to [0, 1]
    if values.size == 1:
        return np.ones_like(values)
    from scipy.stats import rankdata

    return (rankdata(values, method="average") - 1) / (values.size - 1)


def select_top_fraction(
    scores: Sequence[float | None] | np.ndarray, fraction: float
) -> np.ndarray:
    """Indices (in dataset order) of the ``fraction`` of rows with the highest scores.

    Rows with missing scores are never selected. Ties at the cut are broken by row order.
    Use with ``dataset.select(indices)``, which keeps the original order.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    values = _as_array(scores)
    present = np.flatnonzero(~np.isnan(values))
    keep = int(round(fraction * present.size))
    # stable sort on -score keeps earlier rows first among ties
    order = present[np.argsort(-values[present], kind="stable")]
    return np.sort(order[:keep])


def select_threshold(
    scores: Sequence[float | None] | np.ndarray, threshold: float
) -> np.ndarray:
    """Indices (in dataset order) of rows whose score is at least ``threshold``."""
    values = _as_array(scores)
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(values >= threshold)
