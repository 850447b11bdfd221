"""Re-scoring during training with a real scorer (response log-likelihood)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ica_hub.columns import EXAMPLE_ID
from ica_hub.config import WeightsConfig
from ica_hub.training.batch_weights import WEIGHTS_KEY
from ica_hub.training.rescoring import RescoreCallback, rescore_steps
from ica_hub.training.trainers import WeightedSFTTrainer
from ica_hub.weights import scores_to_weights
from tests.training.helpers import SFT_DATA, load_rows, tiny_model, trl_args
from tests.training.scorers import make_loglik_rescorer


@pytest.mark.parametrize(
    "max_steps,num_rescores,every,expected",
    [(10, 0, None, []), (10, 1, None, [0]), (9, 3, None, [0, 3, 6]), (10, 0, 4, [0, 4, 8])],
)
def test_rescore_schedule(max_steps, num_rescores, every, expected):
    assert rescore_steps(max_steps, num_rescores, every) == expected


class RecordingSFT(WeightedSFTTrainer):
    """Keeps (optimizer step, ids, weights) of every micro-batch the loss sees."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        self.seen.append((self.state.global_step, list(inputs[EXAMPLE_ID]),
                          inputs[WEIGHTS_KEY].tolist()))  # fmt: skip
        return super().compute_loss(model, inputs, *args, **kwargs)


def _trainer(tokenizer, tmp_path, dataset, max_steps):
    trainer = RecordingSFT(
        model=tiny_model(tokenizer),
        args=trl_args("sft", tmp_path, max_steps=max_steps, per_device_train_batch_size=4,
                      max_length=64),  # fmt: skip
        train_dataset=dataset,
        processing_class=tokenizer,
        weights=WeightsConfig(source="score"),
    )
    trainer.seen = []
    return trainer


def test_rescoring_every_step_replaces_the_weights(tokenizer, tmp_path):
    dataset = load_rows(SFT_DATA, 16)
    trainer = _trainer(tokenizer, tmp_path, dataset, max_steps=3)
    tables = []
    rescore = make_loglik_rescorer(tokenizer)

    def recording_rescore(model, rows):
        scores = rescore(model, rows)
        tables.append(dict(zip(rows[EXAMPLE_ID], scores, strict=True)))
        return scores

    callback = RescoreCallback(trainer, recording_rescore, dataset, num_rescores=0, every_n_steps=1)
    trainer.add_callback(callback)
    trainer.train()

    # one pass before training, then after steps 1 and 2 (none after the last step)
    assert [record["step"] for record in callback.history] == [0, 1, 2]
    assert len(tables) == 3 and all(len(t) == 16 for t in tables)
    # The model changed between passes, so the scores did.
    assert tables[0] != tables[1]
    for record in callback.history:
        assert -1 <= record["rescore/spearman_vs_previous"] <= 1  # vs the ica_score column first
        assert record["rescore/missing_fraction"] == 0
        assert 0 <= record["rescore/weight_mean"] <= 1
    # Each step's weights are min-max of the newest scores over that step's effective batch.
    for step, ids, weights in trainer.seen:
        expected = scores_to_weights([tables[step][i] for i in ids])
        np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert callback.seconds > 0


def test_r_equal_one_scores_once_before_training(tokenizer, tmp_path):
    dataset = load_rows(SFT_DATA, 8)
    trainer = _trainer(tokenizer, tmp_path, dataset, max_steps=2)
    callback = RescoreCallback(trainer, make_loglik_rescorer(tokenizer), dataset, num_rescores=1)
    trainer.add_callback(callback)
    trainer.train()
    assert [record["step"] for record in callback.history] == [0]
    assert trainer.score_table is not None
    assert not math.isnan(callback.history[0]["rescore/spearman_vs_previous"])


def test_a_scorer_returning_the_wrong_count_is_named(tokenizer, tmp_path):
    dataset = load_rows(SFT_DATA, 8)
    trainer = _trainer(tokenizer, tmp_path, dataset, max_steps=1)
    trainer.add_callback(RescoreCallback(trainer, lambda model, rows: [0.0], dataset))
    with pytest.raises(ValueError, match="returned 1 scores for 8 rows"):
        trainer.train()


def test_rescoring_refuses_an_example_weight_source(tokenizer, tmp_path):
    dataset = load_rows(SFT_DATA, 8)
    trainer = _trainer(tokenizer, tmp_path, dataset, max_steps=1)
    trainer.weights_config = WeightsConfig(source="weight")
    with pytest.raises(ValueError, match="use weights.source='score'"):
        RescoreCallback(trainer, make_loglik_rescorer(tokenizer), dataset)


def test_rescoring_refuses_rows_that_share_an_example_id(tokenizer, tmp_path):
    dataset = load_rows(SFT_DATA, 8)
    ids = dataset[EXAMPLE_ID]
    dataset = dataset.remove_columns(EXAMPLE_ID).add_column(EXAMPLE_ID,
                                                            ids[:5] + [ids[1]] + ids[6:])
    trainer = _trainer(tokenizer, tmp_path, dataset, max_steps=1)
    with pytest.raises(ValueError, match=f"rows 1 and 5 share the id {ids[1]!r}"):
        RescoreCallback(trainer, make_loglik_rescorer(tokenizer), dataset)


@pytest.mark.parametrize("scorer_name", ["ica-fit", "ica"])
def test_the_ica_rescorer_plugs_into_training(tokenizer, tmp_path, scorer_name):
    """make_rescorer (the recipe's scorer on the in-memory model) as the callback's scorer."""
    from types import SimpleNamespace

    from ica_hub.config import RecipeError, RescoreConfig
    from ica_hub.scoring import make_rescorer

    rows = load_rows(SFT_DATA)
    holdout = tmp_path / "holdout.jsonl"
    rows.select(range(20, 24)).select_columns(["prompt", "completion"]).to_json(str(holdout))
    score_recipe = tmp_path / "score.yaml"
    score_recipe.write_text(f"data:\n  holdout: {holdout}\nscorer:\n  name: {scorer_name}\n"
                            "  k: 2\n  max_length: 256\n")
    recipe = SimpleNamespace(rescore=RescoreConfig(options={"score_recipe": str(score_recipe)}))

    dataset = rows.select(range(8))
    trainer = _trainer(tokenizer, tmp_path, dataset, max_steps=2)
    tables = []
    rescore = make_rescorer(recipe, tokenizer)

    def recording_rescore(model, batch_rows):
        scores = rescore(model, batch_rows)
        tables.append(scores)
        return scores

    trainer.add_callback(RescoreCallback(trainer, recording_rescore, dataset, every_n_steps=1))
    trainer.train()
    assert len(tables) == 2 and all(len(t) == 8 for t in tables)
    assert all(isinstance(s, float) and math.isfinite(s) for t in tables for s in t)
    assert tables[0] != tables[1]  # the model moved, so did its ICA scores

    bad = SimpleNamespace(rescore=RescoreConfig(options={"holdout": "x"}))
    with pytest.raises(RecipeError, match="score_recipe is missing"):
        make_rescorer(bad, tokenizer)
