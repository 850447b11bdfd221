"""What reaches the loss, and what the trainers do with bad input."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from ica_hub.columns import EXAMPLE_ID
from ica_hub.config import WeightsConfig
from ica_hub.training.batch_weights import VALUES_KEY, WEIGHTS_KEY, effective_batch_weights
from ica_hub.training.trainers import TRAINERS
from ica_hub.weights import scores_to_weights
from tests.training.helpers import (
    PREFERENCE_DATA,
    SFT_DATA,
    build_trainer,
    first_step,
    load_rows,
    tiny_model,
    trl_args,
)

# ---- The effective-batch arithmetic, with two simulated processes ----


def test_scores_become_weights_over_every_process_and_micro_step():
    # rank -> its micro-batches' scores
    scores = {0: [np.array([1.0, 3.0]), np.array([2.0])], 1: [np.array([5.0, 4.0]), np.array([0])]}
    ones = {rank: [np.ones(len(v)) for v in values] for rank, values in scores.items()}
    payload = [(np.concatenate(scores[r]), np.concatenate(ones[r])) for r in (0, 1)]

    def gather(item):  # what accelerate's gather_object returns: every rank's item in order
        return payload

    expected = scores_to_weights([1, 3, 2, 5, 4, 0])  # min-max over all six rows
    config = WeightsConfig()
    weights0, normaliser = effective_batch_weights(scores[0], ones[0], config, gather, 0)
    weights1, _ = effective_batch_weights(scores[1], ones[1], config, gather, 1)
    np.testing.assert_allclose(np.concatenate(weights0 + weights1), expected)
    assert [len(w) for w in weights0] == [2, 1]
    assert normaliser == pytest.approx(expected.sum())


# ---- Columns survive TRL with the default trainer arguments ----


def _default_args(method, tmp_path):
    # TRL's defaults (shuffling sampler, remove_unused_columns=True) except what CPU needs.
    config_class = type(trl_args(method, tmp_path))
    extra = {"loss_type": "simpo", "cpo_alpha": 0.0} if method == "simpo" else {}
    return config_class(
        output_dir=str(tmp_path), max_steps=1, report_to="none", bf16=False, disable_tqdm=True,
        **extra,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["sft", "dpo", "simpo"])
def test_ids_and_weights_reach_the_loss_intact_after_shuffling(method, tokenizer, tmp_path):
    path = SFT_DATA if method == "sft" else PREFERENCE_DATA
    dataset = load_rows(path)
    weight_of = dict(zip(dataset[EXAMPLE_ID], dataset["example_weight"], strict=True))
    seen = []

    class Recording(TRAINERS[method]):
        def compute_loss(self, model, inputs, *args, **kwargs):
            seen.append((list(inputs[EXAMPLE_ID]), inputs[VALUES_KEY].tolist(),
                         inputs[WEIGHTS_KEY].tolist()))  # fmt: skip
            return super().compute_loss(model, inputs, *args, **kwargs)

    args = _default_args(method, tmp_path)
    assert args.remove_unused_columns or method == "simpo"  # CPOTrainer turns it off itself
    kwargs = {"ref_model": tiny_model(tokenizer)} if method == "dpo" else {}
    trainer = Recording(
        model=tiny_model(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer,
        weights=WeightsConfig(source="weight"), **kwargs,
    )  # fmt: skip
    trainer.train()

    ids = [i for batch_ids, _, _ in seen for i in batch_ids]
    assert len(ids) == args.per_device_train_batch_size == len(set(ids))
    assert ids != sorted(ids), "the default sampler shuffles"
    for batch_ids, values, weights in seen:
        assert values == [weight_of[i] for i in batch_ids]
        np.testing.assert_allclose(weights, values, rtol=1e-6)


# ---- Missing or unusable weights ----


def _sft_trainer(dataset, tokenizer, tmp_path, **kw):
    return build_trainer("sft", tiny_model(tokenizer), tokenizer, dataset,
                         trl_args("sft", tmp_path), **kw)  # fmt: skip


def test_no_score_column_names_it_and_the_command(tokenizer, tmp_path):
    dataset = load_rows(SFT_DATA, 4).remove_columns(["ica_score"])
    with pytest.raises(ValueError, match=r"no 'ica_score' column.*`ica-hub score <recipe>\.yaml`"):
        _sft_trainer(dataset, tokenizer, tmp_path, weights=WeightsConfig(source="score"))


def test_no_weight_column_names_it(tokenizer, tmp_path):
    dataset = load_rows(SFT_DATA, 4).remove_columns(["example_weight"])
    with pytest.raises(ValueError, match=r"no 'example_weight' column.*ica-hub score"):
        _sft_trainer(dataset, tokenizer, tmp_path, weights=WeightsConfig(source="weight"))


def test_nan_inf_and_negative_weights_are_rejected_with_their_rows(tokenizer, tmp_path):
    rows = load_rows(SFT_DATA, 5).remove_columns(["example_weight"])
    dataset = rows.add_column("example_weight", [1.0, math.nan, -0.5, math.inf, 0.0])
    message = r"NaN at rows \[1\]; infinite at rows \[3\]; negative at rows \[2\]"
    with pytest.raises(ValueError, match=message):
        _sft_trainer(dataset, tokenizer, tmp_path)


def test_packing_with_weights_is_refused(tokenizer, tmp_path):
    args = trl_args("sft", tmp_path, packing=True)
    with pytest.raises(ValueError, match="packing=True: packed rows mix examples"):
        build_trainer("sft", tiny_model(tokenizer), tokenizer, load_rows(SFT_DATA, 4), args)


def test_an_all_zero_effective_batch_is_skipped_never_nan(tokenizer, tmp_path, caplog):
    dataset = load_rows(SFT_DATA, 8).map(lambda row: {"example_weight": 0.0})
    model = tiny_model(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # weight decay would move every parameter if the optimizer stepped on zero gradients
    args = trl_args("sft", tmp_path, weight_decay=0.1)
    trainer = build_trainer("sft", model, tokenizer, dataset, args)
    with caplog.at_level(logging.WARNING, logger="ica_hub"):
        loss, grads = first_step(trainer)
    assert loss == 0.0 and not math.isnan(loss)
    assert all(torch.count_nonzero(g) == 0 for g in grads.values())
    assert trainer.num_skipped_batches == 1
    assert "is zero: step skipped (1 so far)" in caplog.text
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), before[name], rtol=0, atol=0)


# ---- Truncation that would empty a response ----


def _truncation_rows(tokenizer) -> Dataset:
    """A 3-token chosen beside a ~600-token rejected, and a prompt that fills 512 tokens alone."""
    good = load_rows(PREFERENCE_DATA, 2).to_list()
    long_text = " ".join(row["chosen"].strip() for row in load_rows(PREFERENCE_DATA).to_list())
    long_text = " ".join([long_text] * 3)
    short_chosen = {**good[0], "example_id": 100, "chosen": " Yes.", "rejected": " " + long_text}
    long_prompt = {**good[1], "example_id": 101, "prompt": "Question: " + long_text + "\nAnswer:"}
    assert len(tokenizer(short_chosen["chosen"])["input_ids"]) <= 3
    assert len(tokenizer(short_chosen["rejected"])["input_ids"]) > 600
    assert len(tokenizer(long_prompt["prompt"])["input_ids"]) >= 512
    return Dataset.from_list([*good, short_chosen, long_prompt])


@pytest.mark.parametrize(
    "method", [pytest.param("dpo", marks=pytest.mark.slow), "simpo"]  # DPO: about 40 s on CPU
)
def test_rows_emptied_by_truncation_are_dropped_and_counted(method, tokenizer, tmp_path, caplog):
    dataset = _truncation_rows(tokenizer)
    args = trl_args(method, tmp_path, max_length=512, per_device_train_batch_size=4)
    with caplog.at_level(logging.WARNING, logger="ica_hub"):
        trainer = build_trainer(method, tiny_model(tokenizer), tokenizer, dataset, args)
        loss, grads = first_step(trainer)
    assert "Dropped 1 of 4 rows: the prompt alone fills max_length" in caplog.text
    assert len(trainer.train_dataset) == 3
    assert 101 not in trainer.train_dataset[EXAMPLE_ID] and 100 in trainer.train_dataset[EXAMPLE_ID]
    assert math.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_rows_the_scorer_kept_without_a_response_are_dropped_and_counted(tokenizer, tmp_path,
                                                                         caplog):
    rows = load_rows(SFT_DATA, 8).to_list()
    rows[2]["completion"], rows[5]["completion"] = None, "   "  # null and blank answers
    args = trl_args("sft", tmp_path, per_device_train_batch_size=2)
    with caplog.at_level(logging.WARNING, logger="ica_hub"):
        trainer = build_trainer("sft", tiny_model(tokenizer), tokenizer, Dataset.from_list(rows),
                                args)
        loss, _ = first_step(trainer)
    assert "Dropped 2 of 8 rows whose completion is null or empty" in caplog.text
    assert sorted(trainer.train_dataset[EXAMPLE_ID]) == [0, 1, 3, 4, 6, 7]
    assert math.isfinite(loss)


def test_a_missing_training_folder_is_named_before_any_model_loads(capsys, monkeypatch):
    from ica_hub.cli import main
    from ica_hub.training import run

    monkeypatch.setattr(run, "load_model_and_tokenizer",
                        lambda *a, **k: pytest.fail("the model loaded before the data"))
    code = main(["train", "recipes/dpo.yaml", "data.train=outputs/not/written/yet"])
    message = capsys.readouterr().err
    assert code == 2 and "data.train = 'outputs/not/written/yet': no such folder" in message
    assert "ica-hub score recipes/score.yaml" in message and "Traceback" not in message


@pytest.mark.parametrize(("recipe", "data", "expected"), [
    ("recipes/dpo.yaml", SFT_DATA, "method = 'dpo' trains on preference pairs"),
    ("recipes/sft.yaml", PREFERENCE_DATA, "method = 'sft' trains on SFT rows"),
    ("recipes/sft.yaml", SFT_DATA, "no 'fit_score' column (weights.score_column)"),
    ("recipes/sft.yaml", "TEXT_SCORES",
     "'fit_score' (weights.score_column) must hold numbers or nulls; rows [0, 1] hold 'high'"),
])
def test_rows_that_do_not_suit_the_method_or_weights_fail_before_any_model_loads(
        recipe, data, expected, capsys, monkeypatch, tmp_path):
    from ica_hub.cli import main
    from ica_hub.training import run

    if data == "TEXT_SCORES":  # a score column someone filled with words
        rows = load_rows(SFT_DATA, 3).to_list()
        data = tmp_path / "text_scores.jsonl"
        data.write_text("".join(json.dumps(dict(row, fit_score=score)) + "\n"
                                for row, score in zip(rows, ["high", "low", None])))

    monkeypatch.setattr(run, "load_model_and_tokenizer",
                        lambda *a, **k: pytest.fail("the model loaded before the data check"))
    code = main(["train", recipe, f"data.train={data}"])
    message = capsys.readouterr().err
    assert code == 2 and expected in message and "Traceback" not in message
