"""Re-scoring during training: new scores from the current model, then new weights.

The scoring function is pluggable: any callable ``rescore(model, dataset) -> list[float | None]``
that returns one score per row of ``dataset``, in its order (None where a row cannot be scored).
The callback hands each process a contiguous shard of the training rows, gathers the scores in
dataset order, and gives every process's trainer the same ``example_id -> score`` table; the
trainer turns those scores into weights per effective batch from the next optimizer step on.

Schedules (the paper's R):

- ``num_rescores=1``: once, before the first optimizer step;
- ``num_rescores=R > 1``: before training, then after optimizer steps round(k * max_steps / R),
  k = 1 .. R-1;
- ``every_n_steps=N``: before training, then after every N optimizer steps.

Each pass logs the score and weight statistics and the Spearman rank correlation with the
scores it replaces. Limits: the model is called as the trainer holds it, unwrapped; under
DeepSpeed ZeRO-3 or FSDP, whose parameters are sharded, the scorer must gather them itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from accelerate.utils import gather_object
from scipy.stats import spearmanr
from transformers import TrainerCallback

from ica_hub.columns import EXAMPLE_ID
from ica_hub.training.batch_weights import as_float_array, ensure_example_ids, values_to_weights

logger = logging.getLogger(__name__)

Rescore = Callable[[torch.nn.Module, "object"], Sequence[float | None]]


def rescore_steps(max_steps: int, num_rescores: int = 0, every_n_steps: int | None = None):
    """Optimizer steps after which to re-score (0 = before training), as a sorted list."""
    if every_n_steps is not None:
        return [0, *range(every_n_steps, max_steps, every_n_steps)]
    if num_rescores <= 0:
        return []
    later = {round(k * max_steps / num_rescores) for k in range(1, num_rescores)}
    return [0, *sorted(s for s in later if 0 < s < max_steps)]


class RescoreCallback(TrainerCallback):
    """Recomputes scores with the current model on a schedule and hands them to the trainer.

    ``trainer`` is one of the weighted trainers (it must read its weights from scores);
    ``dataset`` holds the training rows as the scorer expects them (raw text columns and
    ``example_id``, the same ids the trainer sees).
    """

    def __init__(
        self,
        trainer,
        rescore: Rescore,
        dataset,
        *,
        num_rescores: int = 1,
        every_n_steps: int | None = None,
    ):
        if trainer.weights_config.source != "score":
            raise ValueError(
                "Re-scoring replaces scores, but the trainer reads an example-weight column "
                "(weights.source='weight'): use weights.source='score'."
            )
        self.trainer = trainer
        self.rescore = rescore
        self.dataset = ensure_example_ids(dataset)
        _refuse_duplicate_ids(self.dataset[EXAMPLE_ID])
        self.num_rescores = num_rescores
        self.every_n_steps = every_n_steps
        self.steps: list[int] = []
        self.history: list[dict[str, float]] = []  # one record per pass
        self.seconds = 0.0  # time spent re-scoring, all passes
        self._previous = self._column_scores()

    def _column_scores(self) -> np.ndarray | None:
        column = self.trainer.weights_config.score_column
        if column in self.dataset.column_names:
            return as_float_array(self.dataset[column])
        return None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.steps = rescore_steps(state.max_steps, self.num_rescores, self.every_n_steps)
        if self.steps and self.steps[0] == 0:
            self._run(model, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps[1:]:
            self._run(model, state)

    def _run(self, model, state) -> None:
        start = time.perf_counter()
        scores = self._score_all_rows(model)
        ids = self.dataset[EXAMPLE_ID]
        self.trainer.set_scores(dict(zip(ids, scores.tolist(), strict=True)))
        record = self._statistics(scores, state.global_step)
        self._previous = scores
        self.seconds += time.perf_counter() - start
        record["rescore/seconds"] = time.perf_counter() - start
        self.history.append(record)
        state.log_history.append(record)
        if self.trainer.accelerator.is_main_process:
            logger.info(
                "Re-scored %d rows at step %d in %.1f s: %s",
                len(scores), state.global_step, record["rescore/seconds"],
                ", ".join(f"{k.split('/')[1]}={v:.4g}" for k, v in record.items() if "/" in k),
            )

    def _score_all_rows(self, model) -> np.ndarray:
        accelerator = self.trainer.accelerator
        shard = self.dataset.shard(
            num_shards=accelerator.num_processes, index=accelerator.process_index, contiguous=True
        )
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                local = list(self.rescore(model, shard))
        finally:
            model.train(was_training)
        if len(local) != len(shard):
            raise ValueError(
                f"The re-scoring function returned {len(local)} scores for {len(shard)} rows: "
                "it must return one score (or None) per row, in dataset order."
            )
        # contiguous shards, gathered in rank order, are the dataset order
        return as_float_array(gather_object(local))

    def _statistics(self, scores: np.ndarray, step: int) -> dict[str, float]:
        weights = values_to_weights(scores, self.trainer.weights_config)
        present = ~np.isnan(scores)
        record = {
            "step": step,
            "rescore/pass": len(self.history) + 1,
            "rescore/missing_fraction": float(1 - present.mean()),
            "rescore/score_mean": float(np.nanmean(scores)) if present.any() else float("nan"),
            "rescore/score_std": float(np.nanstd(scores)) if present.any() else float("nan"),
            # Weights as the rule gives them over the whole set (training applies it per batch).
            "rescore/weight_mean": float(weights.mean()),
            "rescore/weight_zero_fraction": float((weights == 0).mean()),
            "rescore/spearman_vs_previous": float("nan"),
        }
        if self._previous is not None:
            both = present & ~np.isnan(self._previous)
            if both.sum() > 1:
                rho = spearmanr(self._previous[both], scores[both]).statistic
                record["rescore/spearman_vs_previous"] = float(rho)
        return record


def _refuse_duplicate_ids(ids: list) -> None:
    """Re-scored values are looked up by example_id: two rows with one id would share a score."""
    first: dict = {}
    for row, example_id in enumerate(ids):
        if example_id in first:
            raise ValueError(
                f"Re-scoring looks rows up by {EXAMPLE_ID!r}, but rows {first[example_id]} and "
                f"{row} share the id {example_id!r}: give every row its own id, or drop the "
                f"column so that the row numbers become the ids."
            )
        first[example_id] = row
