"""Recipes: every shipped recipe parses through the real CLI; errors are collected and precise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ica_hub.cli import build_parser
from ica_hub.config import RecipeError, TrainRecipe, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(
    p
    for p in (ROOT / "recipes").rglob("*.yaml")
    if "method" in (yaml.safe_load(p.read_text()) or {})  # accelerate configs have no method
)
ACCELERATE_CONFIGS = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))


def test_the_training_recipes_are_found():
    names = {p.name for p in RECIPES}
    assert {"sft.yaml", "dpo.yaml", "simpo.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_parses_through_the_cli(path):
    args = build_parser().parse_args(["train", str(path), "training.max_steps=3"])
    recipe = load_recipe(args.recipe, args.overrides)
    assert isinstance(recipe, TrainRecipe)
    assert recipe.training.max_steps == 3
    assert path.read_text().startswith("#"), "a recipe opens with how to run it"
    header = path.read_text().split("\n\n")[0]
    assert "ica_hub.train" in header or "ica-hub train" in header
    assert "Override:" in header


def test_paper_values_in_the_preference_recipes():
    assert load_recipe(ROOT / "recipes" / "dpo.yaml").dpo.beta == 0.5
    simpo = load_recipe(ROOT / "recipes" / "simpo.yaml").simpo
    assert (simpo.beta, simpo.gamma_beta_ratio) == (2.5, 0.55)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_are_valid_yaml_with_a_run_line(path):
    config = yaml.safe_load(path.read_text())
    assert config["distributed_type"] in {"NO", "MULTI_CPU", "MULTI_GPU", "DEEPSPEED", "FSDP"}
    assert "accelerate launch --config_file recipes/accelerate/" in path.read_text()


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_overrides_apply_on_top_of_the_yaml(tmp_path):
    path = _write(tmp_path, "method: dpo\ndata:\n  train: x.jsonl\ndpo:\n  beta: 0.5\n")
    recipe = load_recipe(path, ["dpo.beta=0.1", "training.learning_rate=1e-6", "lora.enabled=true"])
    assert recipe.dpo.beta == 0.1
    assert recipe.training.learning_rate == 1e-6  # "1e-6" reads as a string in YAML 1.1
    assert recipe.lora.enabled is True


def test_every_problem_is_reported_at_once_with_did_you_mean(tmp_path):
    path = _write(
        tmp_path,
        "method: dpoo\n"
        "data:\n  train: x.jsonl\n"
        "weights:\n  rul: minmax\n"
        "training:\n  per_device_train_batch_size: zero\n  gradient_accumulation_steps: 0\n"
        "beta: 0.5\n",
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, ["rescore.num_rescores=2"])
    problems = caught.value.problems
    text = str(caught.value)
    assert len(problems) == 6, text
    assert "method = 'dpoo'" in text and "did you mean 'dpo'" in text
    assert "weights.rul: unknown option; did you mean 'weights.rule'" in text
    assert "per_device_train_batch_size = 'zero': expected int" in text
    assert "gradient_accumulation_steps = 0: must be >= 1" in text
    assert "beta: unknown option; it lives at 'dpo.beta'" in text
    assert "rescore.scorer is empty" in text


def test_packing_with_weights_is_refused_up_front(tmp_path):
    path = _write(tmp_path, "method: sft\ndata:\n  train: x.jsonl\n")
    with pytest.raises(RecipeError, match="training.extra.packing = True: refused"):
        load_recipe(path, ["training.extra.packing=true"])


def test_unknown_trl_option_under_extra_gets_a_suggestion(tmp_path):
    path = _write(tmp_path, "method: sft\ndata:\n  train: x.jsonl\n")
    with pytest.raises(RecipeError, match="did you mean 'training.extra.dataset_text_field'"):
        load_recipe(path, ["training.extra.dataset_text_feild=text"])
    # A misspelt typed option points at its typed place, not at extra (which refuses it).
    with pytest.raises(RecipeError, match="did you mean 'training.learning_rate'"):
        load_recipe(path, ["training.extra.lerning_rate=1e-4"])


def test_bad_override_syntax_is_named(tmp_path):
    path = _write(tmp_path, "method: sft\ndata:\n  train: x.jsonl\n")
    with pytest.raises(RecipeError, match="not of the form key=value"):
        load_recipe(path, ["training.max_steps"])


def test_a_recipe_that_is_not_yaml_is_named_without_a_traceback(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [\n")
    with pytest.raises(RecipeError, match="(?s)broken.yaml.*not valid YAML"):
        load_recipe(path)


@pytest.mark.parametrize(("command", "recipe", "other"), [
    ("score", "recipes/sft.yaml", "ica-hub train"),
    ("train", "recipes/score.yaml", "ica-hub score"),
    ("eval", "recipes/demo.yaml", "ica-hub demo"),
    ("demo", "recipes/eval.yaml", "ica-hub eval"),
])
def test_a_recipe_given_to_the_wrong_command_names_the_right_one(command, recipe, other,
                                                                  capsys):
    from ica_hub.cli import main

    assert main([command, recipe]) == 2
    message = capsys.readouterr().err
    assert "recipe of another kind" in message and f"`{other}`" in message
    assert "unknown option" not in message
