"""Shipped recipes run end to end on CPU through the real CLI, with a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from ica_hub.cli import main

ROOT = Path(__file__).resolve().parents[2]
DATA = {"sft": "tests/data/sft_qa.jsonl", "dpo": "tests/data/preference_qa.jsonl",
        "simpo": "tests/data/preference_qa.jsonl"}  # fmt: skip


def _train(method, tiny_model_dir, output_dir, *extra):
    overrides = [
        f"model.name_or_path={tiny_model_dir}",
        f"data.train={ROOT / DATA[method]}",
        "weights.score_column=ica_score",  # the test rows carry the published score only
        "data.max_rows=8",
        "training.max_steps=2",
        "training.per_device_train_batch_size=2",
        "training.gradient_accumulation_steps=2",
        "training.learning_rate=1e-3",
        "training.max_length=64",
        f"training.output_dir={output_dir}",
        *extra,
    ]
    assert main(["train", str(ROOT / "recipes" / f"{method}.yaml"), *overrides]) == 0


def _changed_parameters(before_dir, after_dir) -> int:
    before = AutoModelForCausalLM.from_pretrained(before_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(after_dir).state_dict()
    assert before.keys() == after.keys()
    return sum(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "method", ["sft", pytest.param("dpo", marks=pytest.mark.slow), "simpo"]
)
def test_recipe_trains_and_writes_a_model_that_loads(method, tiny_model_dir, tmp_path):
    _train(method, tiny_model_dir, tmp_path / "out")
    assert _changed_parameters(tiny_model_dir, tmp_path / "out") > 0


def test_recipe_with_rescoring_runs(tiny_model_dir, tmp_path, caplog):
    caplog.set_level("INFO", logger="ica_hub")
    _train("sft", tiny_model_dir, tmp_path / "out",
           "rescore.num_rescores=2", "rescore.scorer=tests.training.scorers:make_rescorer")
    passes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Re-scored")]
    assert len(passes) == 2 and "spearman_vs_previous=" in passes[1]


def test_recipe_with_lora_writes_an_adapter(tiny_model_dir, tmp_path):
    _train("sft", tiny_model_dir, tmp_path / "out", "lora.enabled=true", "lora.r=4")
    assert (tmp_path / "out" / "adapter_config.json").exists()


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "save_to_disk"])
def test_recipe_data_from_a_local_file_or_folder(kind, tmp_path):
    from ica_hub.config import TrainRecipe
    from ica_hub.training.run import load_train_dataset
    from tests.training.helpers import SFT_DATA, load_rows

    rows = load_rows(SFT_DATA)
    path = {"jsonl": SFT_DATA, "parquet": tmp_path / "rows.parquet",
            "save_to_disk": tmp_path / "rows"}[kind]  # fmt: skip
    if kind == "parquet":
        rows.to_parquet(str(path))
    elif kind == "save_to_disk":
        rows.save_to_disk(str(path))
    recipe = TrainRecipe()
    recipe.data.train, recipe.data.max_rows = str(path), 5
    loaded = load_train_dataset(recipe)
    assert loaded["example_id"] == rows["example_id"][:5]
    assert loaded["ica_score"] == rows["ica_score"][:5]
