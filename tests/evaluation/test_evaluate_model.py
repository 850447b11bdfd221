"""evaluate_model against a hand computation with LikelihoodScorer; score_quality's AUROCs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset

from ica_hub.evaluation.evaluate_model import evaluate_model, response_logps, score_quality
from ica_hub.scoring import LikelihoodScorer


def test_response_logps_are_the_likelihood_scorers_sums(tiny_model, tokenizer, test_rows):
    logps = response_logps(tiny_model, tokenizer, test_rows, max_length=256)
    expected = test_rows.map(LikelihoodScorer(tiny_model, tokenizer, max_length=256),
                             batched=True)
    assert [total for total, _ in logps] == pytest.approx(expected["loglik_logp"])
    assert [count for _, count in logps] == expected["loglik_num_response_tokens"]


def test_evaluate_model_equals_a_hand_computation(tiny_model, tokenizer, test_rows, pair_rows):
    results = evaluate_model(tiny_model, tokenizer=tokenizer, test=test_rows,
                             pairs_test=pair_rows, max_length=256)

    scorer = LikelihoodScorer(tiny_model, tokenizer, max_length=256)
    scored = test_rows.map(scorer, batched=True)
    loss = -sum(scored["loglik_logp"]) / sum(scored["loglik_num_response_tokens"])
    assert results["response_loss"]["loss"] == pytest.approx(loss)
    assert results["response_loss"]["perplexity"] == pytest.approx(math.exp(loss))
    assert results["response_loss"]["num_examples"] == len(test_rows)
    assert math.isfinite(loss) and loss > 0

    # Each side as its own prompt/completion row: per-token means, chosen above rejected.
    per_token = {}
    for side in ("chosen", "rejected"):
        rows = pair_rows.select_columns(["prompt", side]).rename_column(side, "completion")
        per_token[side] = np.array(rows.map(scorer, batched=True)["loglik_score"])
    accuracy = np.mean(np.where(per_token["chosen"] == per_token["rejected"], 0.5,
                                per_token["chosen"] > per_token["rejected"]))
    assert results["preference_accuracy"]["accuracy"] == pytest.approx(accuracy)
    assert 0 <= accuracy <= 1 and results["preference_accuracy"]["num_pairs"] == len(pair_rows)


def test_unscorable_rows_are_skipped_not_averaged(tiny_model, tokenizer, test_rows):
    long_row = {"prompt": "Say a lot.", "completion": "word " * 300}
    rows = Dataset.from_list([*test_rows, long_row])
    results = evaluate_model(tiny_model, tokenizer=tokenizer, test=rows, max_length=128)
    assert results["response_loss"]["num_skipped"] == 1
    assert results["response_loss"]["num_examples"] == len(test_rows)
    assert results["preference_accuracy"] is None


def test_empty_test_data_is_a_clear_error(tiny_model, tokenizer, test_rows):
    with pytest.raises(ValueError, match="test has no rows"):
        evaluate_model(tiny_model, tokenizer=tokenizer, test=test_rows.select([]))


def test_score_quality_gives_known_aurocs():
    # "good" ranks every clean row above every noisy one, and target above off-domain;
    # "backwards" is its negation; "partial" has one swap in each comparison and one null.
    kinds = ["target", "target", "off_domain", "off_domain", "swapped", "corrupted", "truncated"]
    good = [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    partial = [7.0, 4.0, 5.0, 6.0, 3.0, 5.5, None]
    scored = Dataset.from_dict({"row_kind": kinds, "good": good, "partial": partial,
                                "backwards": [-v for v in good]})
    quality = score_quality(scored, {"g": "good", "p": "partial", "b": "backwards"})
    assert quality["g"]["clean_over_noisy"]["auroc"] == 1.0
    assert quality["g"]["target_over_off_domain"]["auroc"] == 1.0
    assert quality["b"]["clean_over_noisy"]["auroc"] == 0.0
    # partial, clean (7, 4, 5, 6) over noisy (3, 5.5): 2 + 1 + 1 + 2 pairs won of 8
    assert quality["p"]["clean_over_noisy"]["auroc"] == pytest.approx(6 / 8)
    assert quality["p"]["clean_over_noisy"]["num_skipped"] == 1
    # partial, target (7, 4) over off-domain (5, 6): 2 + 0 pairs won of 4
    assert quality["p"]["target_over_off_domain"]["auroc"] == pytest.approx(2 / 4)
    assert quality["p"]["target_over_off_domain"]["num_positive"] == 2
    assert quality["p"]["column"] == "partial"
    assert "clean_over_noisy_in_target" not in quality["p"]  # no row_domain column


def test_the_noise_scenario_counts_only_rows_whose_question_is_on_target():
    # A score that ranks the clean off-domain row last: it loses on the whole pool, not here.
    kinds = ["target", "target", "off_domain", "swapped", "truncated", "corrupted"]
    domains = ["target", "target", "off_domain", "target", "off_domain", "target"]
    score = [6.0, 5.0, 0.0, 3.0, 4.0, 2.0]
    scored = Dataset.from_dict({"row_kind": kinds, "row_domain": domains, "s": score})
    quality = score_quality(scored, {"s": "s"})["s"]
    # target-domain rows: clean (6, 5) over noisy (3, 2): every pair won
    assert quality["clean_over_noisy_in_target"]["auroc"] == 1.0
    assert quality["clean_over_noisy_in_target"]["num_negative"] == 2
    # whole pool: clean (6, 5, 0) over noisy (3, 4, 2): 3 + 3 + 0 of 9
    assert quality["clean_over_noisy"]["auroc"] == pytest.approx(6 / 9)


def test_score_quality_names_missing_columns():
    scored = Dataset.from_dict({"kind": ["target"], "ica_score": [1.0]})
    with pytest.raises(ValueError, match=r"\['loglik_score', 'row_kind'\]"):
        score_quality(scored, {"ica": "ica_score", "loglik": "loglik_score"})


def test_rows_of_the_wrong_format_are_refused(tiny_model, tokenizer, test_rows, pair_rows):
    with pytest.raises(ValueError, match="give preference pairs as pairs_test"):
        evaluate_model(tiny_model, tokenizer=tokenizer, test=pair_rows)
    with pytest.raises(ValueError, match="need prompt, chosen and rejected"):
        evaluate_model(tiny_model, tokenizer=tokenizer, pairs_test=test_rows)
