"""Prefix reuse is an optimisation only: it must give the naive method's numbers."""

import numpy as np
import pytest
import torch

from ica_hub.scoring.engine import LogProbEngine, ScoringItem


def _ids(tokenizer, text):
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def _items(tokenizer):
    lead = _ids(tokenizer, "<|im_start|>user\nExamples follow.\n\n")
    demos = [_ids(tokenizer, f"Question: what is {i}+{i}?\nAnswer: {2 * i}\n\n") for i in range(4)]
    items = []
    for n, (question, answer) in enumerate([("What is 3+3?", "6"),
                                            ("Capital of Spain?", "Madrid, in the centre."),
                                            ("Tell a joke.", "A chicken crossed a road.")]):
        suffix = _ids(tokenizer, f"Now: {question}<|im_end|>\n<|im_start|>assistant\n")
        response = _ids(tokenizer, answer)
        items += [ScoringItem((lead, demos[0], demos[n + 1]), suffix, response),
                  ScoringItem((lead, demos[0]), suffix, response),
                  ScoringItem((), suffix, response)]
    return items


@pytest.mark.parametrize("min_shared_items", [1, 2, 4])
def test_prefix_reuse_equals_running_each_sequence_in_full(tokenizer, tiny_model,
                                                           min_shared_items):
    items = _items(tokenizer)
    engine = LogProbEngine(tiny_model, reuse_prefix=True, min_shared_items=min_shared_items)
    reused, counts = engine.response_logps(items)
    naive, _ = LogProbEngine(tiny_model, reuse_prefix=False).response_logps(items)
    np.testing.assert_allclose(reused, naive, atol=1e-3 * counts.max())
    np.testing.assert_allclose(reused / counts, naive / counts, atol=1e-3)


def test_matches_a_plain_forward_pass(tokenizer, tiny_model):
    item = _items(tokenizer)[0]
    ids = torch.tensor([sum(item.prefix, ()) + item.suffix + item.response])
    with torch.no_grad():
        logps = torch.log_softmax(tiny_model(ids).logits.float(), -1)[0]
    start = ids.shape[1] - len(item.response)
    expected = sum(logps[start - 1 + j, t].item() for j, t in enumerate(item.response))
    (got,), _ = LogProbEngine(tiny_model).response_logps([item])
    assert abs(got - expected) < 1e-3


def test_batching_does_not_change_results(tokenizer, tiny_model):
    items = _items(tokenizer)
    one_at_a_time, _ = LogProbEngine(tiny_model, max_tokens_per_batch=1).response_logps(items)
    batched, _ = LogProbEngine(tiny_model, max_tokens_per_batch=10_000).response_logps(items)
    np.testing.assert_allclose(one_at_a_time, batched, atol=1e-3)


def test_shared_prefixes_are_encoded_once(tokenizer, tiny_model):
    items = _items(tokenizer)
    reused = LogProbEngine(tiny_model, reuse_prefix=True)
    naive = LogProbEngine(tiny_model, reuse_prefix=False)
    reused.response_logps(items)
    naive.response_logps(items)
    assert reused.forward_tokens < 0.7 * naive.forward_tokens


def test_the_ending_is_scored_apart_from_the_response_in_the_same_pass(tokenizer, tiny_model):
    end = _ids(tokenizer, "<|im_end|>")
    items = [ScoringItem(item.prefix, item.suffix, item.response, end if n % 2 else ())
             for n, item in enumerate(_items(tokenizer))]
    sums, counts, endings = LogProbEngine(tiny_model, min_shared_items=1) \
        .response_and_ending_logps(items)
    plain, _ = LogProbEngine(tiny_model).response_logps(_items(tokenizer))
    np.testing.assert_allclose(sums, plain, atol=1e-3)  # the ending changes no response sum
    assert np.isnan(endings[0::2]).all() and np.isfinite(endings[1::2]).all()
    _, _, naive = LogProbEngine(tiny_model, reuse_prefix=False).response_and_ending_logps(items)
    np.testing.assert_allclose(endings[1::2], naive[1::2], atol=1e-3)

    item = items[1]  # against the model's own next-token distribution after the response
    ids = torch.tensor([sum(item.prefix, ()) + item.suffix + item.response])
    with torch.no_grad():
        expected = torch.log_softmax(tiny_model(ids).logits.float(), -1)[0, -1, end[0]].item()
    assert abs(endings[1] - expected) < 1e-3


def test_the_benchmarks_naive_engine_runs_every_item_in_full(tokenizer, tiny_model):
    """benchmarks/bench_scoring.py times its naive method through this class: it must run each
    item's whole sequence (no reuse at all) and still give the engine's numbers, endings too."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "bench_scoring.py"
    spec = importlib.util.spec_from_file_location("bench_scoring", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    end = _ids(tokenizer, "<|im_end|>")
    items = [ScoringItem(item.prefix, item.suffix, item.response, end if n % 2 else (),
                         keep_state=n % 3 == 0)
             for n, item in enumerate(_items(tokenizer))]
    naive = bench.NaiveEngine(tiny_model)
    sums, counts, endings = naive.response_and_ending_logps(items)
    assert naive.forward_tokens == sum(item.num_tokens for item in items)
    expected = LogProbEngine(tiny_model).run(items)
    np.testing.assert_allclose(sums / counts, expected.sums / expected.counts, atol=1e-3)
    np.testing.assert_allclose(endings, expected.endings, atol=1e-3)  # NaN where no ending
    assert np.isnan(endings[::2]).all() and np.isfinite(endings[1::2]).all()
    states = naive.run(items).states
    np.testing.assert_allclose(states, expected.states, atol=1e-4)  # NaN where not kept
    assert np.isfinite(states[::3]).all() and np.isnan(states[1::3]).all()


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_kept_states_are_the_mean_final_hidden_state_over_the_response(tokenizer, tiny_model,
                                                                       reuse_prefix):
    """``keep_state``: the mean of the last hidden states at the positions that predict the
    response, as a plain forward pass gives them; batching and prefix reuse change nothing."""
    items = [ScoringItem(item.prefix, item.suffix, item.response, keep_state=n % 3 != 1)
             for n, item in enumerate(_items(tokenizer))]
    out = LogProbEngine(tiny_model, reuse_prefix=reuse_prefix, max_tokens_per_batch=64).run(items)
    assert out.states.shape == (len(items), tiny_model.config.hidden_size)
    for item, state in zip(items, out.states):
        if not item.keep_state:
            assert np.isnan(state).all()
            continue
        ids = torch.tensor([sum(item.prefix, ()) + item.suffix + item.response])
        with torch.no_grad():
            hidden = tiny_model(ids, output_hidden_states=True).hidden_states[-1][0]
        start = ids.shape[1] - len(item.response) - 1
        expected = hidden[start : start + len(item.response)].mean(0).numpy()
        np.testing.assert_allclose(state, expected, atol=1e-4)
    plain, _ = LogProbEngine(tiny_model).response_logps(_items(tokenizer))
    np.testing.assert_allclose(out.sums, plain, atol=1e-3)  # states change no sum
