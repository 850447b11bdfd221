"""``score_auroc``: how well a score ranks positive rows above negative ones.

The AUROC is the probability that a random positive row scores above a random negative one
(ties count half), computed by scikit-learn's ``roc_auc_score``. 0.5 is chance; below 0.5 the
score ranks the wrong way round. Rows with a missing or NaN score are left out and counted in
``num_skipped``. With only one class among the rows kept, the AUROC is undefined: NaN.
"""

import math

import datasets
import evaluate
from sklearn.metrics import roc_auc_score

_DESCRIPTION = """Area under the ROC curve of scores against 0/1 labels (1 = positive), with
rows whose score is missing or NaN skipped."""

_INPUTS = """
Args:
    predictions (list of float): the score of each row; higher should mean "positive".
    references (list of int): 1 for a positive row, 0 for a negative one.
Returns:
    auroc (float): NaN when the rows kept hold only one class.
    num_positive (int), num_negative (int): rows kept of each class.
    num_skipped (int): rows with a missing or NaN score.
Example:
    >>> metric.compute(predictions=[0.9, 0.2, 0.4], references=[1, 0, 0])["auroc"]
    1.0
"""


class ScoreAuroc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({
                "predictions": datasets.Value("float64"),
                "references": datasets.Value("int32"),
            }),
        )

    def _compute(self, predictions, references):
        kept = [(score, label) for score, label in zip(predictions, references)
                if score is not None and not math.isnan(score)]
        labels = [label for _, label in kept]
        num_positive = sum(1 for label in labels if label == 1)
        num_negative = len(labels) - num_positive
        auroc = math.nan
        if num_positive and num_negative:
            auroc = float(roc_auc_score(labels, [score for score, _ in kept]))
        return {
            "auroc": auroc,
            "num_positive": num_positive,
            "num_negative": num_negative,
            "num_skipped": len(predictions) - len(kept),
        }
