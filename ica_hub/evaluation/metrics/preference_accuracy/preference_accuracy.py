"""``preference_accuracy``: how often a model prefers the chosen response of a pair.

Inputs are per pair: the mean log-probability per token of the chosen and of the rejected
response (per-token means, so that a shorter response does not win by length alone). A tie
counts half, as in an AUROC. A pair with a missing or NaN side is left out and counted in
``num_skipped``.
"""

import math

import datasets
import evaluate

_DESCRIPTION = """Fraction of preference pairs whose chosen response the model finds more likely
per token than the rejected one (ties count half)."""

_INPUTS = """
Args:
    chosen_logps (list of float): per pair, mean log p(token) over the chosen response.
    rejected_logps (list of float): per pair, mean log p(token) over the rejected response.
Returns:
    accuracy (float): (pairs with chosen > rejected + ties / 2) / pairs kept; NaN when none.
    num_pairs (int): pairs kept.
    num_skipped (int): pairs with a missing or NaN side.
Example:
    >>> metric.compute(chosen_logps=[-1.0, -2.0], rejected_logps=[-2.0, -2.0])["accuracy"]
    0.75
"""


def _present(value) -> bool:
    return value is not None and not math.isnan(value)


class PreferenceAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({
                "chosen_logps": datasets.Value("float64"),
                "rejected_logps": datasets.Value("float64"),
            }),
        )

    def _compute(self, chosen_logps, rejected_logps):
        kept = [(chosen, rejected) for chosen, rejected in zip(chosen_logps, rejected_logps)
                if _present(chosen) and _present(rejected)]
        credit = sum(1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0
                     for chosen, rejected in kept)
        return {
            "accuracy": credit / len(kept) if kept else math.nan,
            "num_pairs": len(kept),
            "num_skipped": len(chosen_logps) - len(kept),
        }
