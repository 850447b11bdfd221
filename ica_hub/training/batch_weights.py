"""Example weights from dataset columns, carried through TRL and reduced per effective batch.

Three steps, each a function here:

1. ``check_weight_column``: before TRL touches the data, the weight or score column must exist and
   hold usable values; rows are named by their index in the dataset as given.
2. ``KeepColumnsCollator``: TRL's collators only know their own keys, so the id and the
   weight/score column are taken out of each row before the inner collator runs and put back into
   the batch beside its output (``example_id`` as a list, the values as a float64 array).
3. ``effective_batch_weights``: the weights of every row of one optimizer step, over all micro-steps
   and all processes, and the normaliser ``sum_i w_i * d_i`` the loss is divided by.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ica_hub.columns import EXAMPLE_ID
from ica_hub.config import WeightsConfig
from ica_hub.weights import scores_to_weights

logger = logging.getLogger(__name__)

# Keys the collator adds to each batch; never passed to the model. They hold numpy arrays, which
# the Trainer neither moves to the device nor casts (DeepSpeed would cast tensors to bf16).
VALUES_KEY = "ica_hub_values"  # float64 (batch,): raw weights or scores, NaN where missing
WEIGHTS_KEY = "ica_hub_weights"  # float64 (batch,): example weights of this effective batch
PRIVATE_KEYS = (EXAMPLE_ID, VALUES_KEY, WEIGHTS_KEY)

SCORE_COMMAND = "ica-hub score <recipe>.yaml"


def ensure_example_ids(dataset):
    """Add ``example_id`` = row index when the dataset has none (re-scoring looks rows up by id)."""
    if EXAMPLE_ID in dataset.column_names:
        return dataset
    logger.info("No %r column: using the row index as the example id", EXAMPLE_ID)
    return dataset.add_column(EXAMPLE_ID, list(range(len(dataset))))


RESPONSE_COLUMNS = ("completion", "chosen", "rejected", "messages")


def drop_rows_without_response(dataset):
    """The rows whose response columns (completion, chosen, rejected, messages) are all present
    and non-blank. The scorer keeps such rows with a null score and a flag; TRL's tokenizers
    would fail on them, so they leave here, counted in a warning."""
    columns = [name for name in RESPONSE_COLUMNS if name in dataset.column_names]

    def has_response(row) -> bool:
        return all(row[name] is not None and (not isinstance(row[name], str)
                                              or row[name].strip()) and row[name] != []
                   for name in columns)

    kept = dataset.filter(has_response, desc="Dropping rows without a response")
    if len(kept) < len(dataset):
        logger.warning("Dropped %d of %d rows whose %s is null or empty (the scorer flags them "
                       "in ica_flag); training on the other %d", len(dataset) - len(kept),
                       len(dataset), "/".join(columns), len(kept))
    return kept


def check_weight_column(dataset, weights: WeightsConfig) -> None:
    """Raise if the weight/score column is absent or holds values the trainer cannot use."""
    values = weight_column_values(dataset, weights)
    if weights.source == "weight":
        _check_weights(values, weights.column)
    else:
        _check_scores(values, weights.column, weights.missing)


def weight_column_values(dataset, weights: WeightsConfig) -> np.ndarray:
    """The weight/score column as float64 (null as NaN); raise, naming the column and the fix,
    if it is absent or holds something other than numbers and nulls."""
    column = weights.column
    option = "weights.score_column" if weights.source == "score" else "weights.weight_column"
    if column not in dataset.column_names:
        raise ValueError(
            f"The training dataset has no {column!r} column ({option}). Produce scores with "
            f"`{SCORE_COMMAND}`, or name the column that holds them ({option}=<column>), or "
            + ("train on example weights instead (weights.source=weight, "
               "weights.weight_column=<column>)" if weights.source == "score" else
               "turn a score column into weights (weights.source=score, "
               "weights.score_column=<column>)")
            + f". Columns present: {', '.join(dataset.column_names)}."
        )
    try:
        return as_float_array(dataset[column])
    except (TypeError, ValueError):
        values = dataset[column]
        bad = [i for i, v in enumerate(values) if v is not None and not isinstance(v, (int, float))]
        mask = np.zeros(len(values), dtype=bool)
        mask[bad] = True
        raise ValueError(
            f"{column!r} ({option}) must hold numbers or nulls; rows {_rows(mask)} "
            f"hold {values[bad[0]]!r}{' and others' if len(bad) > 1 else ''}. Fix those "
            "rows, or name another column") from None


def as_float_array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask).tolist()
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    return f"{rows[:10]}{more}"


def _check_weights(values: np.ndarray, column: str) -> None:
    problems = []
    if np.isnan(values).any():
        problems.append(f"missing or NaN at rows {_rows(np.isnan(values))}")
    if np.isinf(values).any():
        problems.append(f"infinite at rows {_rows(np.isinf(values))}")
    with np.errstate(invalid="ignore"):
        if (values < 0).any():
            problems.append(f"negative at rows {_rows(values < 0)}")
    if problems:
        raise ValueError(
            f"Column {column!r} must hold finite weights >= 0: {'; '.join(problems)}. "
            "Fix or drop these rows (weight 0 keeps a row without training on it)."
        )


def _check_scores(values: np.ndarray, column: str, missing: str) -> None:
    if np.isinf(values).any():
        raise ValueError(
            f"Column {column!r} has infinite scores at rows {_rows(np.isinf(values))}: "
            f"re-score these rows (`{SCORE_COMMAND}`) or drop them."
        )
    if missing == "error" and np.isnan(values).any():
        raise ValueError(
            f"Column {column!r} has missing scores at rows {_rows(np.isnan(values))}: drop these "
            "rows, or set weights.missing=zero to give them weight 0."
        )


@dataclass
class KeepColumnsCollator:
    """Wraps a TRL collator so the id and weight/score column reach the loss."""

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]
    value_column: str

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        taken = (EXAMPLE_ID, self.value_column)
        batch = self.inner([{k: v for k, v in ex.items() if k not in taken} for ex in examples])
        if EXAMPLE_ID in examples[0]:
            batch[EXAMPLE_ID] = [ex[EXAMPLE_ID] for ex in examples]
        if self.value_column in examples[0]:
            batch[VALUES_KEY] = as_float_array([ex[self.value_column] for ex in examples])
        return batch


def values_to_weights(values: np.ndarray, weights: WeightsConfig) -> np.ndarray:
    """Weights of one effective batch from its raw column values (weights, or scores)."""
    if weights.source == "weight":
        return values
    return scores_to_weights(
        values,
        weights.rule,
        temperature=weights.temperature,
        negative=weights.negative,
        missing=weights.missing,
    )


def effective_batch_weights(
    local_values: list[np.ndarray],
    local_normalisers: list[np.ndarray],
    weights: WeightsConfig,
    gather: Callable[[list], list],
    rank: int,
) -> tuple[list[np.ndarray], float]:
    """Weights of this process's micro-batches, and the normaliser of the whole effective batch.

    ``local_values[k]`` holds the raw values of micro-batch k on this process; ``gather`` turns a
    one-item list into the list of every process's item, in rank order. Scores become weights
    over all rows of all processes together, so min-max sees the whole effective batch.
    ``local_normalisers[k]`` is d_i per row (1, or the row's token count); the loss divides by
    ``sum_i w_i * d_i`` over the effective batch.
    """
    sizes = [len(v) for v in local_values]
    mine = np.concatenate(local_values) if local_values else np.zeros(0)
    everyone = gather([(mine, np.concatenate(local_normalisers) if local_normalisers else mine)])
    all_values = np.concatenate([values for values, _ in everyone])
    all_normalisers = np.concatenate([norms for _, norms in everyone])

    all_weights = values_to_weights(all_values, weights)
    normaliser = float(np.dot(all_weights, all_normalisers))

    start = sum(len(values) for values, _ in everyone[:rank])
    my_weights = all_weights[start : start + len(mine)]
    return np.split(my_weights, np.cumsum(sizes)[:-1]), normaliser
