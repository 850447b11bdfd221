"""The holdout-fit scorer (ica-fit/v3): its columns, its arithmetic, caching and bad input."""

import math

import numpy as np
import pytest
from datasets import Dataset, load_from_disk

from ica_hub.scoring import HoldoutFitScorer
from ica_hub.scoring.fit import CLEAN_SIGNALS, DOMAIN_SIGNAL


def _fit(holdout_rows, model, tokenizer, **kwargs):
    return HoldoutFitScorer(holdout_rows, model, tokenizer, k=2, max_length=512, **kwargs)


@pytest.mark.parametrize("domain_weight", [2.0, 0.0])
def test_fit_score_is_the_domain_term_plus_the_cleanliness_shortfalls(
        holdout_rows, pool_rows, tiny_model, tokenizer, domain_weight):
    scorer = _fit(holdout_rows, tiny_model, tokenizer, domain_weight=domain_weight)
    scored = Dataset.from_list(pool_rows).map(scorer, batched=True, batch_size=3)
    assert scored["example_id"] == [row["example_id"] for row in pool_rows]
    stats = scorer._stats
    for row in scored:
        assert row["ica_flag"] is None
        assert math.isclose(row["fit_incontext_loglik"],
                            row["ica_logp_context"] / row["ica_num_response_tokens"])
        assert -1 <= row["fit_holdout_similarity"] <= 1 and -1 <= row["fit_qa_agreement"] <= 1
        assert row["fit_end_of_turn"] == row["ica_logp_end"] and row["fit_end_of_turn"] < 0
        z = {name: (row[f"fit_{name}"] - stats[name][0]) / stats[name][1]
             for name in (DOMAIN_SIGNAL, *CLEAN_SIGNALS)}
        expected = domain_weight * z[DOMAIN_SIGNAL] + sum(min(z[n], 0) for n in CLEAN_SIGNALS)
        assert math.isclose(row["fit_score"], expected, rel_tol=1e-9, abs_tol=1e-12)
        # The published score stays beside it.
        assert math.isclose(row["ica_score"], row["ica_logp_context"] - row["ica_logp_base"])


def test_combine_gives_another_domain_weight_without_rescoring(holdout_rows, pool_rows,
                                                               tiny_model, tokenizer):
    from ica_hub.scoring.fit import SIGNALS

    rows = Dataset.from_list(pool_rows)
    default = _fit(holdout_rows, tiny_model, tokenizer)
    scored = rows.map(default, batched=True)
    rescored = rows.map(_fit(holdout_rows, tiny_model, tokenizer, domain_weight=0.5),
                        batched=True)
    combined = [default.combine({name: row[f"fit_{name}"] for name in SIGNALS}, 0.5)
                for row in scored]
    assert combined == pytest.approx(rescored["fit_score"], rel=1e-5, abs=1e-6)
    assert default.holdout_statistics() == default._stats
    assert default.combine(dict.fromkeys(SIGNALS, None)) is None


def _response_state(model, renderer, row) -> np.ndarray:
    """The mean last hidden state over the positions that predict the response, plain pass."""
    import torch

    from ica_hub.scoring import base

    prompt = base.prepare_rows({key: [value] for key, value in row.items()}).parsed[0]
    prompt_ids = renderer.encode(renderer.prompt_text(prompt.prompt))
    response = renderer.encode(prompt.responses[0])
    ids = torch.tensor([prompt_ids + response])
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[-1][0]
    start = len(prompt_ids) - 1
    return hidden[start : start + len(response)].mean(0).numpy()


def test_holdout_similarity_is_the_model_response_states_nearest_holdout_cosine(
        holdout_rows, pool_rows, tiny_model, tokenizer):
    """The domain signal, recomputed from plain forward passes: each row's response state
    against the holdout's, mean of the k = 2 highest cosines; a holdout row leaves itself out
    when the holdout's mean and spread are taken."""
    scorer = _fit(holdout_rows, tiny_model, tokenizer)
    scored = Dataset.from_list(pool_rows).map(scorer, batched=True)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    renderer = scorer.ica.renderer
    held = unit(np.stack([_response_state(tiny_model, renderer, r) for r in holdout_rows]))
    rows = unit(np.stack([_response_state(tiny_model, renderer, {k: r[k] for k in
                                                                 ("prompt", "completion")})
                          for r in pool_rows]))
    expected = np.sort(rows @ held.T, axis=1)[:, -2:].mean(axis=1)
    np.testing.assert_allclose(scored["fit_holdout_similarity"], expected, atol=1e-4)
    own = held @ held.T
    np.fill_diagonal(own, -np.inf)
    own = np.sort(own, axis=1)[:, -2:].mean(axis=1)
    mean, std = scorer._stats[DOMAIN_SIGNAL]
    assert mean == pytest.approx(own.mean(), abs=1e-4)
    assert std == pytest.approx(own.std(), abs=1e-4)


def test_scores_do_not_depend_on_the_batch(holdout_rows, pool_rows, tiny_model, tokenizer):
    rows = Dataset.from_list(pool_rows)
    one = rows.map(_fit(holdout_rows, tiny_model, tokenizer), batched=True, batch_size=1)
    all_at_once = rows.map(_fit(holdout_rows, tiny_model, tokenizer), batched=True)
    # Float arithmetic differs with the batch's shape (the engine pads to the longest row);
    # the similarity, read off hidden states and divided by the holdout's spread, shows it most.
    assert one["fit_score"] == pytest.approx(all_at_once["fit_score"], rel=1e-4, abs=1e-4)


def test_a_holdout_row_scores_near_the_holdout_mean_and_an_answer_to_another_question_lower(
        holdout_rows, tiny_model, tokenizer):
    scorer = _fit(holdout_rows, tiny_model, tokenizer)
    swapped = [dict(row, completion=holdout_rows[(i + 1) % len(holdout_rows)]["completion"])
               for i, row in enumerate(holdout_rows)]
    scored = Dataset.from_list(swapped).map(scorer, batched=True)
    # Question-answer agreement is an embedding signal: the real embedder, not the tiny model.
    own = scorer._agreement([r["prompt"] for r in holdout_rows],
                            [r["completion"] for r in holdout_rows])
    assert np.mean(scored["fit_qa_agreement"]) < np.mean(own)


def test_second_map_is_a_cache_hit(holdout_rows, pool_rows, tiny_model, tokenizer, tmp_path):
    Dataset.from_list(pool_rows).save_to_disk(tmp_path / "pool")
    pool = load_from_disk(tmp_path / "pool")
    first = pool.map(_fit(holdout_rows, tiny_model, tokenizer), batched=True)
    scorer = _fit(holdout_rows, tiny_model, tokenizer)
    scorer._calibrate = lambda rank: pytest.fail("the model ran on a cache hit")
    again = pool.map(scorer, batched=True)
    assert again["fit_score"] == first["fit_score"]


def test_bad_rows_keep_their_place_with_a_null_score(holdout_rows, pool_rows, tiny_model,
                                                     tokenizer):
    rows = [dict(row) for row in pool_rows]
    rows[1]["completion"] = ""
    scored = Dataset.from_list(rows).map(_fit(holdout_rows, tiny_model, tokenizer), batched=True)
    assert scored.num_rows == len(rows)
    assert scored["fit_score"][1] is None and "empty" in scored["ica_flag"][1]
    assert all(s is not None for j, s in enumerate(scored["fit_score"]) if j != 1)


def test_bad_setups_fail_before_any_model_loads(holdout_rows):
    pairs = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "No."}
             for r in holdout_rows]
    with pytest.raises(ValueError, match="score preference pairs with ICAScorer"):
        HoldoutFitScorer(pairs, "no/such-model")
    with pytest.raises(ValueError, match="at least k \\+ 1"):
        HoldoutFitScorer(holdout_rows[:3], "no/such-model", k=3)
    with pytest.raises(ValueError, match="domain_weight"):
        HoldoutFitScorer(holdout_rows, "no/such-model", domain_weight=-1)
    with pytest.raises(ValueError, match="holdout pass only"):
        HoldoutFitScorer(holdout_rows, "no/such-model", baseline="pool", baseline_pool=[])


def test_the_score_recipe_gives_the_same_fit_scores_as_map(tiny_model_dir, tmp_path):
    from ica_hub.scoring.recipe import load_score_recipe
    from ica_hub.scoring.run import run_scoring
    from tests.conftest import HOLDOUT
    from tests.scoring.conftest import SCORE_RECIPE, pool_rows, recipe_overrides, write_jsonl

    rows = pool_rows(5)
    options = recipe_overrides(tiny_model_dir, write_jsonl(tmp_path / "pool.jsonl", rows),
                               write_jsonl(tmp_path / "holdout.jsonl", HOLDOUT),
                               tmp_path / "out", **{"scorer.name": "ica-fit"})
    run = run_scoring(load_score_recipe(SCORE_RECIPE, options))
    scored = load_from_disk(run.output_dir)
    scorer = HoldoutFitScorer(HOLDOUT, str(tiny_model_dir), k=2, selection="fixed",
                              max_length=256, max_demonstration_tokens=48)
    mapped = Dataset.from_list(rows).map(scorer, batched=True, batch_size=2)
    assert scored["fit_score"] == pytest.approx(mapped["fit_score"], rel=1e-5, abs=1e-6)
    assert scored["example_id"] == [row["example_id"] for row in rows]
