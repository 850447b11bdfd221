"""The ICA scorer through Dataset.map: columns, caching, bad input, variants."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk

from ica_hub.scoring import ICAScorer, LikelihoodScorer, RhoLossScorer
from tests.conftest import make_tiny_model


def _on_disk(rows, tmp_path, name="pool"):
    # map caches only for datasets backed by files, as a user's loaded datasets are.
    Dataset.from_list(rows).save_to_disk(tmp_path / name)
    return load_from_disk(tmp_path / name)


def _scorer(holdout_rows, model, tokenizer, **kwargs):
    return ICAScorer(holdout_rows, model, tokenizer, k=2, max_length=512, **kwargs)


def test_adds_documented_columns_with_consistent_values(holdout_rows, pool_rows, tiny_model,
                                                        tokenizer):
    scored = Dataset.from_list(pool_rows).map(_scorer(holdout_rows, tiny_model, tokenizer),
                                              batched=True)
    for row in scored:
        assert row["ica_flag"] is None
        assert math.isclose(row["ica_score"], row["ica_logp_context"] - row["ica_logp_base"])
        assert math.isclose(row["ica_score_per_token"],
                            row["ica_score"] / row["ica_num_response_tokens"])
        assert len(row["ica_demonstrations"]) == 2
    assert scored["example_id"] == [row["example_id"] for row in pool_rows]


def test_second_map_is_a_cache_hit_and_an_optimizer_step_recomputes(
        holdout_rows, pool_rows, tokenizer, tmp_path):
    model = make_tiny_model(tokenizer)
    pool = _on_disk(pool_rows, tmp_path)
    first = pool.map(_scorer(holdout_rows, model, tokenizer), batched=True)

    calls = []
    scorer = _scorer(holdout_rows, model, tokenizer)
    original = scorer._get_engine
    scorer._get_engine = lambda rank: calls.append(rank) or original(rank)
    again = pool.map(scorer, batched=True)
    assert calls == []  # a cache hit: the model was never called
    assert again["ica_score"] == first["ica_score"]
    assert again.cache_files == first.cache_files

    # One optimizer step changes the weights, so the fingerprint, so the result.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    ids = torch.tensor([tokenizer("some training text")["input_ids"]])
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    model.eval()
    stepped = pool.map(scorer, batched=True)
    assert calls, "the scorer must run again after the weights changed"
    assert stepped["ica_score"] != first["ica_score"]


@pytest.mark.parametrize("change", [{"k": 1}, {"layout": "chat_turns"}, {"selection": "fixed"},
                                    {"holdout": "edited"}])
def test_any_setting_change_misses_the_cache(change, holdout_rows, pool_rows, tiny_model,
                                             tokenizer, tmp_path):
    pool = _on_disk(pool_rows, tmp_path)
    pool.map(_scorer(holdout_rows, tiny_model, tokenizer), batched=True)
    if change.pop("holdout", None):
        holdout_rows[0]["completion"] += " Edited."
    scorer = ICAScorer(holdout_rows, tiny_model, tokenizer, max_length=512,
                       **{"k": 2, **change})
    calls = []
    original = scorer._get_engine
    scorer._get_engine = lambda rank: calls.append(rank) or original(rank)
    pool.map(scorer, batched=True)
    assert calls


def test_prefix_reuse_gives_the_same_scores(holdout_rows, pool_rows, tiny_model, tokenizer):
    pool = Dataset.from_list(pool_rows)
    for selection in ("nearest", "fixed"):
        reused = pool.map(_scorer(holdout_rows, tiny_model, tokenizer, selection=selection),
                          batched=True)
        naive = pool.map(_scorer(holdout_rows, tiny_model, tokenizer, selection=selection,
                                 reuse_prefix=False), batched=True)
        per_token = np.array(reused["ica_score_per_token"]) - np.array(naive["ica_score_per_token"])
        assert np.abs(per_token).max() < 1e-3


def test_a_holdout_row_in_the_pool_never_gets_itself(holdout_rows, pool_rows, tiny_model,
                                                     tokenizer):
    pool = Dataset.from_list([dict(holdout_rows[2], example_id="dup")] + pool_rows)
    for selection in ("nearest", "fixed"):
        scored = pool.map(_scorer(holdout_rows, tiny_model, tokenizer, selection=selection,
                                  fixed_indices=[2, 0, 1, 3]), batched=True)
        assert 2 not in scored[0]["ica_demonstrations"]
        assert len(scored[0]["ica_demonstrations"]) == 2


def test_nearest_demonstrations_are_the_similar_ones(holdout_rows, tokenizer, tiny_model):
    row = {"prompt": "How do I reverse a list in Python without copying it?",
           "completion": "Call .reverse() on it."}
    scored = Dataset.from_list([row]).map(
        ICAScorer(holdout_rows, tiny_model, tokenizer, k=1), batched=True)
    assert scored[0]["ica_demonstrations"] == [0]  # the reverse-a-list holdout row


def test_preference_rows_get_the_margin_change(holdout_rows, tiny_model, tokenizer):
    pairs = [{"prompt": "How do I sort a list in Python?", "chosen": "Use sorted(items).",
              "rejected": "The Sahara is a desert."}]
    holdout = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "No idea."}
               for r in holdout_rows]
    row = Dataset.from_list(pairs).map(_scorer(holdout, tiny_model, tokenizer), batched=True)[0]
    base = row["ica_logp_base_chosen"] - row["ica_logp_base_rejected"]
    context = row["ica_logp_context_chosen"] - row["ica_logp_context_rejected"]
    assert math.isclose(row["ica_logp_base"], base)
    assert math.isclose(row["ica_score"], context - base)
    assert row["ica_num_response_tokens"] == (row["ica_num_tokens_chosen"]
                                              + row["ica_num_tokens_rejected"])


def test_contrastive_variant_subtracts_a_pool_context(holdout_rows, pool_rows, tiny_model,
                                                      tokenizer):
    scorer = _scorer(holdout_rows, tiny_model, tokenizer, baseline="pool", baseline_pool=pool_rows)
    assert scorer.name == "ica-contrastive/v1"
    scored = Dataset.from_list(pool_rows).map(scorer, batched=True)
    for row in scored:
        assert math.isclose(row["ica_score"], row["ica_logp_context"] - row["ica_logp_baseline"])


def test_baseline_scorers(holdout_rows, pool_rows, tokenizer):
    model, reference = make_tiny_model(tokenizer, 0), make_tiny_model(tokenizer, 1)
    pool = Dataset.from_list(pool_rows)
    loglik = pool.map(LikelihoodScorer(model, tokenizer), batched=True)
    rho = pool.map(RhoLossScorer(reference, model, tokenizer), batched=True)
    for a, b in zip(loglik, rho):
        assert math.isclose(a["loglik_logp"], b["rho_logp_model"])
        assert math.isclose(a["loglik_score"], a["loglik_logp"] / a["loglik_num_response_tokens"])
        assert math.isclose(b["rho_score"], b["rho_logp_reference"] - b["rho_logp_model"])


# -- bad input: never a silent NaN, never a dropped or reordered row -----------------------

BAD_ROWS = [
    ({"prompt": None, "completion": "An answer."}, "missing_field"),
    ({"prompt": "A question?", "completion": ""}, "empty_response"),
    ({"prompt": "A question?", "completion": "word " * 700}, "response_too_long"),
]


def test_bad_rows_keep_their_place_with_a_null_score_and_a_reason(holdout_rows, pool_rows,
                                                                  tiny_model, tokenizer):
    rows = list(pool_rows)
    for n, (bad, _) in enumerate(BAD_ROWS):
        rows.insert(2 * n + 1, dict(bad, example_id=f"bad-{n}"))
    scored = Dataset.from_list(rows).map(_scorer(holdout_rows, tiny_model, tokenizer),
                                         batched=True, batch_size=4)
    assert scored["example_id"] == [row["example_id"] for row in rows]
    by_id = {row["example_id"]: row for row in scored}
    for n, (_, reason) in enumerate(BAD_ROWS):
        row = by_id[f"bad-{n}"]
        assert row["ica_score"] is None and row["ica_flag"].startswith(reason)
    good = [row for row in scored if not row["example_id"].startswith("bad")]
    assert all(row["ica_score"] is not None and not math.isnan(row["ica_score"]) for row in good)


def test_messages_with_non_string_content_are_flagged(holdout_rows, tiny_model, tokenizer):
    rows = [{"messages": [{"role": "user", "content": "Q?"},
                          {"role": "assistant", "content": "A"}]},
            {"messages": [{"role": "user", "content": "Q?"},
                          {"role": "assistant", "content": None}]}]
    # Arrow needs one type per column; a null content is the realistic non-string case.
    scored = Dataset.from_list(rows).map(_scorer(holdout_rows, tiny_model, tokenizer),
                                         batched=True)
    assert scored[0]["ica_score"] is not None
    assert scored[1]["ica_score"] is None
    assert scored[1]["ica_flag"].startswith("non_string_content")


def test_demonstrations_shrink_first_then_the_prompt(holdout_rows, tiny_model, tokenizer):
    long_holdout = [dict(r, completion=r["completion"] + " More detail." * 40)
                    for r in holdout_rows]
    rows = [{"prompt": "How do I sort a list?", "completion": "Use sorted()."},
            # fits alone (about 290 tokens), not beside even one demonstration
            {"prompt": "Explain lists. " * 84, "completion": "A list is an ordered sequence."}]
    scorer = ICAScorer(long_holdout, tiny_model, tokenizer, k=3, max_length=300,
                       max_demonstration_tokens=256)
    scored = Dataset.from_list(rows).map(scorer, batched=True)
    first, second = scored[0], scored[1]
    assert first["ica_score"] is not None
    assert "demonstrations_reduced" in first["ica_flag"]
    assert "prompt_truncated" not in first["ica_flag"]
    assert second["ica_score"] is not None
    flag = second["ica_flag"]
    assert flag.index("demonstrations_reduced") < flag.index("prompt_truncated")
    # The response was never cut: the same token count as on its own.
    alone = len(tokenizer("A list is an ordered sequence.", add_special_tokens=False)["input_ids"])
    assert second["ica_num_response_tokens"] == alone


def test_a_response_longer_than_the_window_is_flagged_not_cut(holdout_rows, tiny_model, tokenizer):
    rows = [{"prompt": "Q?", "completion": "word " * 600}, {"prompt": "Q?", "completion": "A."}]
    scored = Dataset.from_list(rows).map(_scorer(holdout_rows, tiny_model, tokenizer),
                                         batched=True)
    assert scored[0]["ica_score"] is None
    assert "response_too_long" in scored[0]["ica_flag"] and "max_length" in scored[0]["ica_flag"]
    assert scored[1]["ica_score"] is not None


def test_unknown_dataset_format_fails_at_once_naming_columns(holdout_rows, tiny_model, tokenizer):
    bad = Dataset.from_list([{"question": "Q?", "answer": "A."}])
    with pytest.raises(ValueError, match=r"\['answer', 'question'\].*Accepted formats"):
        bad.map(_scorer(holdout_rows, tiny_model, tokenizer), batched=True)


def test_map_without_batched_fails_instead_of_scoring_characters(holdout_rows, pool_rows,
                                                                 tiny_model, tokenizer):
    pool = Dataset.from_list(pool_rows)
    with pytest.raises(ValueError, match="batched=True"):
        pool.map(_scorer(holdout_rows, tiny_model, tokenizer))


def test_holdout_problems_are_reported_before_any_model_loads(holdout_rows):
    # A model reference that does not exist proves no model is loaded before the check.
    with pytest.raises(ValueError, match="k=5"):
        ICAScorer(holdout_rows, "no/such-model", k=5)
    with pytest.raises(ValueError, match="empty"):
        ICAScorer([], "no/such-model")
    with pytest.raises(ValueError, match="layout='sideways'"):
        ICAScorer(holdout_rows, "no/such-model", layout="sideways")


def test_holdout_in_another_format_than_the_pool(holdout_rows, tiny_model, tokenizer):
    pairs = Dataset.from_list([{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    with pytest.raises(ValueError, match="holdout is SFT"):
        pairs.map(_scorer(holdout_rows, tiny_model, tokenizer), batched=True)


def test_provenance_is_what_a_scored_version_accepts(holdout_rows, pool_rows, tiny_model,
                                                     tokenizer):
    from ica_hub.hub.versions import complete_provenance

    for scorer in (_scorer(holdout_rows, tiny_model, tokenizer,
                           holdout_source={"name": "org/holdout", "revision": "abc"}),
                   LikelihoodScorer(tiny_model, tokenizer)):
        provenance = complete_provenance(scorer.provenance())
        assert provenance["scorer"] == scorer.name
        assert provenance["model_weights_hash"]
    assert provenance["k"] is None  # the plain scorer has no demonstrations
