"""Weighted trainers against stock TRL: losses, gradients, effective-batch invariance."""

from __future__ import annotations

import pytest

from ica_hub.config import WeightsConfig

from tests.training.helpers import (
    PREFERENCE_DATA,
    SFT_DATA,
    assert_same_grads,
    build_trainer,
    first_step,
    load_rows,
    tiny_model,
    trl_args,
)

DATA = {"sft": SFT_DATA, "dpo": PREFERENCE_DATA, "simpo": PREFERENCE_DATA}
SHORT = {"max_length": 64}  # keeps the CPU tier fast; truncation is tested on its own


def with_weights(dataset, weights):
    weights = list(weights)
    return dataset.map(lambda row, i: {"example_weight": weights[i]}, with_indices=True)


def run(method, tokenizer, dataset, tmp_path, weighted=True, weights=None, trainer_kw=None, **args):
    args = trl_args(method, tmp_path, **{**SHORT, **args})
    trainer = build_trainer(
        method, tiny_model(tokenizer), tokenizer, dataset, args,
        weighted=weighted, weights=weights, **(trainer_kw or {}),
    )  # fmt: skip
    return first_step(trainer)


# ---- All weights 1: the stock TRL trainer's loss and gradients ----

TWO_BY_TWO = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}
UNIT_CASES = [
    # SFT "token": every response token counts once, like TRL, for any batch shape.
    ("sft", {"loss_reduction": "token"}, {**TWO_BY_TWO, "per_device_train_batch_size": 4}),
    # SFT "example" (mean NLL per example) equals TRL's token mean when a batch holds one example.
    ("sft", {"loss_reduction": "example"}, {"per_device_train_batch_size": 1}),
    ("dpo", {}, TWO_BY_TWO),
    ("simpo", {}, TWO_BY_TWO),
    pytest.param("dpo", {}, {**TWO_BY_TWO, "precompute_ref_log_probs": True},
                 marks=pytest.mark.slow),  # fmt: skip
]


@pytest.mark.parametrize(
    "method,trainer_kw,args",
    UNIT_CASES,
    ids=["sft-token", "sft-example", "dpo", "simpo", "dpo-precomputed-reference"],
)
def test_unit_weights_equal_stock_trl(method, trainer_kw, args, tokenizer, tmp_path):
    n = args["per_device_train_batch_size"] * args.get("gradient_accumulation_steps", 1)
    dataset = with_weights(load_rows(DATA[method], n), [1.0] * n)
    stock_loss, stock_grads = run(method, tokenizer, dataset, tmp_path, weighted=False, **args)
    loss, grads = run(method, tokenizer, dataset, tmp_path, trainer_kw=trainer_kw, **args)
    assert loss == pytest.approx(stock_loss, rel=1e-5)
    assert_same_grads(grads, stock_grads)


# ---- Weights [1, 0, 0, 0]: the first pair alone ----


@pytest.mark.parametrize("method", ["dpo", "simpo"])
def test_one_hot_weights_give_the_first_pair_alone(method, tokenizer, tmp_path):
    rows = load_rows(PREFERENCE_DATA, 4)
    weighted_loss, weighted_grads = run(
        method, tokenizer, with_weights(rows, [1, 0, 0, 0]), tmp_path, per_device_train_batch_size=4
    )
    alone_loss, alone_grads = run(
        method, tokenizer, rows.select([0]), tmp_path, weighted=False, per_device_train_batch_size=1
    )
    assert weighted_loss == pytest.approx(alone_loss, rel=1e-5)
    assert_same_grads(weighted_grads, alone_grads)


# ---- One effective batch, split differently ----

SPLITS = [(8, 1), (2, 4), (1, 8)]
NON_UNIFORM = [0.9, 0.1, 0.5, 1.0, 0.0, 0.3, 0.7, 0.2]


def _split_grads(method, tokenizer, dataset, tmp_path, splits, **kw):
    results = [
        run(method, tokenizer, dataset, tmp_path, per_device_train_batch_size=b,
            gradient_accumulation_steps=g, **kw)
        for b, g in splits
    ]  # fmt: skip
    for loss, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5)
        assert_same_grads(grads, results[0][1])


@pytest.mark.parametrize("weights", [[1.0] * 8, NON_UNIFORM], ids=["uniform", "non-uniform"])
def test_sft_split_of_the_effective_batch_does_not_matter(weights, tokenizer, tmp_path):
    dataset = with_weights(load_rows(SFT_DATA, 8), weights)
    _split_grads("sft", tokenizer, dataset, tmp_path, SPLITS)


def test_score_weights_are_taken_over_the_whole_effective_batch(tokenizer, tmp_path):
    # min-max over 8 scores: with per-micro-batch min-max, 1x8 would give every row weight 1
    dataset = load_rows(SFT_DATA, 8)
    _split_grads("sft", tokenizer, dataset, tmp_path, [(8, 1), (1, 8)], weights=WeightsConfig())


def test_simpo_split_of_the_effective_batch_does_not_matter(tokenizer, tmp_path):
    dataset = with_weights(load_rows(PREFERENCE_DATA, 8), NON_UNIFORM)
    _split_grads("simpo", tokenizer, dataset, tmp_path, [(8, 1), (2, 4)])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "simpo"])
def test_preference_all_splits_uniform_and_not(method, tokenizer, tmp_path):
    for weights in ([1.0] * 8, NON_UNIFORM):
        dataset = with_weights(load_rows(PREFERENCE_DATA, 8), weights)
        _split_grads(method, tokenizer, dataset, tmp_path, SPLITS)


# ---- A weight-0 row contributes nothing ----


def test_a_zero_weight_row_contributes_zero_gradient(tokenizer, tmp_path):
    rows = load_rows(SFT_DATA, 4)
    with_zero_loss, with_zero = run(
        "sft", tokenizer, with_weights(rows, [0.0, 1.0, 1.0, 1.0]), tmp_path,
        per_device_train_batch_size=4,
    )  # fmt: skip
    without_loss, without = run(
        "sft", tokenizer, with_weights(rows.select([1, 2, 3]), [1.0] * 3), tmp_path,
        per_device_train_batch_size=3,
    )  # fmt: skip
    assert with_zero_loss == pytest.approx(without_loss, rel=1e-5)
    assert_same_grads(with_zero, without)
