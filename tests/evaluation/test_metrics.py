"""The metric modules, loaded by path through ``evaluate.load``, on hand-made inputs."""

from __future__ import annotations

import math

import evaluate
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ica_hub.evaluation.metrics import METRIC_NAMES, METRICS_DIR, load_metric


@pytest.fixture(scope="module")
def metrics():
    return {name: load_metric(name, keep_in_memory=True) for name in METRIC_NAMES}


def test_each_module_loads_by_path_with_its_documentation():
    for name in METRIC_NAMES:
        metric = evaluate.load(str(METRICS_DIR / name))
        assert metric.name == name
        assert metric.description and metric.inputs_description and metric.citation == ""
    with pytest.raises(ValueError, match="response_loss"):
        load_metric("accuracy")


def test_response_loss_weighs_tokens_and_examples(metrics):
    result = metrics["response_loss"].compute(logprobs=[-2.0, -4.0], num_tokens=[1, 3])
    assert result["loss"] == pytest.approx(6 / 4)
    assert result["perplexity"] == pytest.approx(math.exp(6 / 4))
    assert result["mean_example_loss"] == pytest.approx((2 / 1 + 4 / 3) / 2)
    assert (result["num_examples"], result["num_tokens"], result["num_skipped"]) == (2, 4, 0)


def test_response_loss_counts_missing_nan_and_empty_rows_as_skipped(metrics):
    result = metrics["response_loss"].compute(
        logprobs=[-2.0, None, float("nan"), -1.0, -4.0], num_tokens=[1, 2, 2, 0, 3])
    assert result["loss"] == pytest.approx(1.5)
    assert (result["num_examples"], result["num_skipped"]) == (2, 3)
    nothing = metrics["response_loss"].compute(logprobs=[None], num_tokens=[None])
    assert math.isnan(nothing["loss"]) and nothing["num_skipped"] == 1


def test_preference_accuracy_counts_ties_half_and_skips_missing(metrics):
    result = metrics["preference_accuracy"].compute(
        chosen_logps=[-1.0, -2.0, -3.0, None, float("nan")],
        rejected_logps=[-2.0, -2.0, -1.0, -1.0, -1.0])
    assert result == {"accuracy": pytest.approx(1.5 / 3), "num_pairs": 3, "num_skipped": 2}


def test_score_auroc_matches_sklearn_and_skips_nan(metrics):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=40)
    scores = labels * 0.5 + rng.normal(size=40)
    with_nan = np.append(scores, [np.nan, np.nan])
    result = metrics["score_auroc"].compute(predictions=with_nan.tolist(),
                                           references=np.append(labels, [1, 0]).tolist())
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert (result["num_positive"], result["num_negative"]) == (labels.sum(), 40 - labels.sum())
    assert result["num_skipped"] == 2


def test_score_auroc_is_nan_with_one_class(metrics):
    result = metrics["score_auroc"].compute(predictions=[0.1, 0.9, float("nan")],
                                           references=[1, 1, 0])
    assert math.isnan(result["auroc"])
    assert (result["num_positive"], result["num_negative"], result["num_skipped"]) == (2, 0, 1)
