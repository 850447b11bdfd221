"""The main job (`ica-hub demo`): its data and options, checked without the model; and one
slow end-to-end run at tiny sizes on the embedded model."""

import collections
import json

import pytest

from ica_hub.cli import main
from ica_hub.data.demo_data import DemoDataConfig, build_demo_data
from ica_hub.demo import DEMO_SPLITS, load_demo_recipe

TINY = ["data.num_pool=8", "data.num_holdout=4", "scorer.k=2", "data.num_test=2",
        "data.num_pairs=4", "data.num_pairs_test=2", "training.per_device_train_batch_size=2",
        "training.overrides=[training.max_steps=1]"]


def test_the_demo_defaults_build_real_data():
    recipe = load_demo_recipe(None)
    assert load_demo_recipe("recipes/demo.yaml") == recipe  # the shipped recipe = the defaults
    data = build_demo_data(recipe.data)
    assert set(DEMO_SPLITS) <= set(data)
    assert len(data["pool"]) == recipe.data.num_pool
    kinds = collections.Counter(data["pool"]["row_kind"])
    assert set(kinds) == {"target", "off_domain", "swapped", "truncated", "corrupted"}
    assert len(data["holdout_pairs"]) == len(data["holdout"])
    assert set(data["holdout_pairs"].column_names) >= {"prompt", "chosen", "rejected"}


def test_demo_data_is_deterministic_and_splits_do_not_overlap():
    first, second = build_demo_data(), build_demo_data()
    assert first["pool"]["example_id"] == second["pool"]["example_id"]
    prompts = {name: set(split["prompt"]) for name, split in first.items()}
    assert not prompts["test"] & (prompts["pool"] | prompts["holdout"])
    assert not prompts["holdout"] & prompts["pool"]
    assert not prompts["pairs_test"] & (prompts["pairs"] | prompts["pool"] | prompts["holdout"])


def test_bad_demo_options_are_listed_at_once_without_a_traceback(capsys):
    code = main(["demo", "data.num_pool=0", "scorer.k=0", "data.num_holdout=0",
                 "training.methods=[sft, ppo]"])
    message = capsys.readouterr().err
    assert code == 2
    for option in ("data.num_pool", "scorer.k", "training.methods"):
        assert option in message
    assert "Traceback" not in message


def test_a_typo_in_the_training_overrides_fails_before_anything_is_built(tmp_path, capsys):
    code = main(["demo", f"output_dir={tmp_path}", "training.overrides=[training.max_stepz=1]"])
    assert code == 2
    assert "did you mean 'training.max_steps'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_bad_scorer_and_model_options_fail_before_anything_is_built(tmp_path, capsys):
    code = main(["demo", f"output_dir={tmp_path}", "scorer.layout=chat",
                 "scorer.domain_weight=-1", "model.dtype=fp16"])
    assert code == 2
    message = capsys.readouterr().err
    for option in ("scorer.layout = 'chat'", "scorer.domain_weight = -1", "model.dtype = 'fp16'"):
        assert option in message
    assert not any(tmp_path.iterdir())  # no data, no model, no Hub


def test_holdout_smaller_than_k_fails_before_anything_is_built(tmp_path, capsys):
    code = main(["demo", f"output_dir={tmp_path}", "data.num_holdout=2", "scorer.k=3"])
    assert code == 2
    assert "data.num_holdout = 2" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no data, no model, no Hub


@pytest.mark.parametrize("question, answer, domain", [
    ("How do I make an HTTP request in Javascript?", "Use fetch:\n```js\nfetch(url)\n```", "code"),
    ("how to load csv file to sql server?", "Use BULK INSERT in SQL Server ...", "code"),
    ("Write me a poem about the sea.", "The sea is wide and grey ...", "other"),
    # Technical or code-shaped, yet no programming question: left out of both groups.
    ("Why doesn't the parabola cross the x axis? Use ASCII art.", "```\n  *  *\n```", None),
    ("When should I use SSR in frontend development?", "Server-side rendering helps ...", None),
    ("create qr code for my shop", "Here is how to make a QR code ...", None),
    ("why are there so many third class levers in our body?", "Levers of the third ...", None),
])
def test_domain_labels_leave_ambiguous_rows_out(question, answer, domain):
    from ica_hub.data.demo_data import _domain

    assert _domain(question, answer) == domain


@pytest.mark.parametrize("size", [10_000])
def test_too_large_demo_names_the_knobs(size):
    with pytest.raises(ValueError, match="max_answer_chars"):
        build_demo_data(DemoDataConfig(num_pool=size))


@pytest.mark.slow
def test_the_main_job_runs_end_to_end_at_tiny_sizes(tmp_path, capsys):
    from ica_hub.hub.local import LocalHub
    from ica_hub.hub.results import load_results

    assert main(["demo", f"output_dir={tmp_path}", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "sft-ica" in printed and "sft-uniform" in printed and "ica-hub hub serve" in printed
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["models"]) == {"base", "sft-ica", "sft-uniform", "dpo-ica", "simpo-ica"}
    # The scored version and its results are on the job's Hub, readable after a restart.
    with LocalHub(tmp_path / "hub") as hub:
        pushed = load_results("local/ica-demo", endpoint=hub.endpoint, token=hub.token)
    assert [entry["name"] for entry in pushed] == ["demo-eval"]
