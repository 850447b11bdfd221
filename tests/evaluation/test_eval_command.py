"""``ica-hub eval`` through the real CLI on the tiny model: results, push, and bad input.

Every test runs ``recipes/eval.yaml`` (the shipped recipe) with overrides, so the shipped
recipe is parsed by the real command line each time.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import datasets.config
import huggingface_hub.constants as hf_constants
import pytest

from ica_hub import eval as eval_module
from ica_hub.cli import build_parser, main
from ica_hub.evaluation.recipe import load_eval_recipe
from ica_hub.hub.local import LocalHub
from ica_hub.hub.results import load_results
from tests.evaluation.helpers import read_rows, write_jsonl

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "eval.yaml")
KINDS = ["target", "off_domain", "swapped", "target", "corrupted", "off_domain"]


@pytest.fixture()
def data_files(tmp_path):
    test = write_jsonl(tmp_path / "test.jsonl", read_rows("sft_qa.jsonl", 4,
                                                          ("prompt", "completion")))
    pairs = write_jsonl(tmp_path / "pairs.jsonl", read_rows(
        "preference_qa.jsonl", 4, ("prompt", "chosen", "rejected")))
    scored_rows = [dict(row, row_kind=kind, ica_score=float(i), loglik=-float(i))
                   for i, (row, kind) in enumerate(zip(
                       read_rows("sft_qa.jsonl", 6, ("prompt", "completion")), KINDS))]
    scored = write_jsonl(tmp_path / "scored.jsonl", scored_rows)
    return {"test": test, "pairs": pairs, "scored": scored}


def overrides(tmp_path, model_dir, files, **options) -> list[str]:
    values = {
        "models": f"[{{name: base, path: {model_dir}}}, {{name: sft, path: {model_dir}}}]",
        "data.test": files["test"], "data.pairs_test": files["pairs"],
        "scores.path": files["scored"], "scores.columns": "{ica: ica_score, loglik: loglik}",
        "eval.max_length": 256, "output.path": tmp_path / "out" / "results.json", **options,
    }
    return [f"{key}={value}" for key, value in values.items()]


def test_the_shipped_recipe_parses_through_the_cli_and_says_how_to_run_it():
    args = build_parser().parse_args(["eval", RECIPE, "data.max_rows=8"])
    recipe = load_eval_recipe(args.recipe, args.overrides)
    assert recipe.model_names == ["base", "sft"] and recipe.data.max_rows == 8
    assert not recipe.judge.enabled and recipe.judged_pair() == ("sft", "base")
    header = Path(RECIPE).read_text().split("\n\n")[0]
    assert header.startswith("#") and "ica-hub eval" in header and "Override:" in header


def test_eval_writes_every_result_and_survives_an_unreachable_judge(
        tmp_path, tiny_model_dir, data_files, capsys, caplog):
    args = overrides(tmp_path, tiny_model_dir, data_files,
                     **{"judge.endpoint": "http://127.0.0.1:9/v1", "judge.num_prompts": 3,
                        "judge.max_new_tokens": 4, "judge.timeout_s": 2})
    start = time.monotonic()
    assert main(["eval", RECIPE, *args]) == 0
    assert time.monotonic() - start < 60
    results = json.loads((tmp_path / "out" / "results.json").read_text())

    assert list(results["models"]) == ["base", "sft"]
    base = results["models"]["base"]
    assert base["path"] == str(tiny_model_dir)
    assert math.isfinite(base["response_loss"]["loss"]) and base["response_loss"][
        "num_examples"] == 4
    assert 0 <= base["preference_accuracy"]["accuracy"] <= 1
    assert results["models"]["sft"]["response_loss"] == base["response_loss"]  # same weights

    # ica_score rises with the row index, loglik falls: mirror images.
    quality = results["score_quality"]
    assert quality["ica"]["clean_over_noisy"]["auroc"] == pytest.approx(
        1 - quality["loglik"]["clean_over_noisy"]["auroc"])
    assert quality["ica"]["target_over_off_domain"]["num_positive"] == 2

    judge = results["judge"]
    assert judge["status"] == "failed" and judge["win_rate"] is None  # NaN written as null
    assert [m["prompt_index"] for m in judge["missing"]] == [0, 1, 2]
    assert "127.0.0.1:9/v1 unreachable" in judge["missing"][0]["reason"]
    assert (judge["candidate"], judge["baseline"]) == ("sft", "base")

    provenance = results["provenance"]
    assert provenance["recipe_path"] == RECIPE
    assert provenance["recipe"]["judge"]["endpoint"] == "http://127.0.0.1:9/v1"
    assert provenance["data"]["test"]["num_rows"] == 4
    assert len(provenance["data"]["pairs_test"]["content_hash"]) == 64
    assert provenance["models"]["base"]["weights_hash"] == \
        provenance["models"]["sft"]["weights_hash"]
    out = capsys.readouterr().out
    assert "win rate" in out and "unreachable" in out and "results.json" in out
    # Said at the start too, before the models' long part, not only in the results.
    early = [r.getMessage() for r in caplog.records if "is unreachable now" in r.getMessage()]
    assert len(early) == 1 and "http://127.0.0.1:9/v1" in early[0]


def test_eval_pushes_beside_a_version_to_a_local_hub(tmp_path, data_files, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    with LocalHub(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_TOKEN", hub.token)
        # Scores only (no models): nothing is loaded, the AUROCs are pushed.
        args = [f"scores.path={data_files['scored']}", "scores.columns={ica: ica_score}",
                "models=[]",
                f"output.path={tmp_path / 'scores.json'}", "push.repo_id=local/evals",
                f"push.endpoint={hub.endpoint}"]
        assert eval_module.main([RECIPE, *args]) == 0
        loaded = load_results("local/evals", endpoint=hub.endpoint)
    assert [(r["path"], r["version_tag"]) for r in loaded] == [
        ("evaluations/untagged/scores.json", None)]
    assert loaded[0]["results"] == json.loads((tmp_path / "scores.json").read_text())
    assert loaded[0]["results"]["models"] == {}


def test_bad_recipes_list_every_problem_at_once(capsys):
    code = main(["eval", RECIPE, "data.tset=x", "eval.max_length=abc",
                 "models=[{name: a, pth: b}, {name: a, path: c}]", "judge.num_prompts=0",
                 "output.path=results.txt"])
    assert code == 2
    error = capsys.readouterr().err
    for expected in ("data.tset: unknown option; did you mean 'data.test'?",
                     "eval.max_length = 'abc': expected int",
                     "models[0].pth: unknown key; did you mean 'path'?",
                     "models[0].path = None", "the name 'a' is used 2 times",
                     "judge.num_prompts = 0", "output.path = 'results.txt'"):
        assert expected in error
    assert eval_module.main([RECIPE, "judge.endpoint=localhost:8080", "judge.candidate=sfft",
                             "judge.max_new_tokens=4096"]) == 2
    error = capsys.readouterr().err
    for expected in ("judge.endpoint = 'localhost:8080': give an http(s) base URL",
                     "judge.candidate = 'sfft': not a name in models",
                     "judge.max_new_tokens = 4096 leaves no room for a prompt"):
        assert expected in error


def test_a_missing_model_folder_is_named_before_anything_loads(tmp_path, data_files, capsys,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)  # "out" exists here, so out/sft is a missing folder, no Hub id
    (tmp_path / "out").mkdir()
    args = overrides(tmp_path, "unused", data_files,
                     models="[{name: base, path: embedded/smollm2-135m-instruct}, "
                            "{name: sft, path: out/sft}, {name: old, path: ./old}]")
    assert main(["eval", RECIPE, *args]) == 2
    error = capsys.readouterr().err
    assert "models[1] ('sft'): path 'out/sft' is no folder on this machine" in error
    assert "models[2] ('old'): path './old'" in error and "ica-hub train" in error
    assert "models[0]" not in error


def test_missing_models_and_data_are_listed_together(tmp_path, data_files, capsys):
    args = overrides(tmp_path, "unused", data_files,
                     models="[{name: sft, path: ./no-model}]")
    args += [f"data.test={tmp_path / 'missing.jsonl'}", "data.pairs_test=./no/such/folder"]
    assert main(["eval", RECIPE, *args]) == 2
    error = capsys.readouterr().err
    assert "models[0] ('sft')" in error
    assert f"data.test = '{tmp_path / 'missing.jsonl'}': no such file" in error
    assert "data.pairs_test = './no/such/folder': no such folder or file" in error


def test_empty_test_data_is_a_clear_error(tmp_path, tiny_model_dir, data_files, capsys):
    data_files["test"] = tmp_path / "empty.jsonl"
    data_files["test"].write_text("")
    assert main(["eval", RECIPE, *overrides(tmp_path, tiny_model_dir, data_files)]) == 2
    error = capsys.readouterr().err
    assert f"data.test = '{data_files['test']}': no rows could be read" in error
    assert "the file is empty" in error


def test_test_rows_and_pairs_of_the_wrong_format_are_both_named_before_models_load(
        tmp_path, data_files, capsys, monkeypatch):
    from ica_hub.evaluation import run

    monkeypatch.setattr(run, "_load_model",
                        lambda *a, **k: pytest.fail("a model loaded before the data check"))
    data_files["test"], data_files["pairs"] = data_files["pairs"], data_files["test"]
    args = overrides(tmp_path, "embedded/smollm2-135m-instruct", data_files)
    assert main(["eval", RECIPE, *args]) == 2
    error = capsys.readouterr().err
    assert "data.test has columns" in error and "need SFT rows" in error
    assert "data.pairs_test has columns" in error and "need prompt, chosen and rejected" in error


@pytest.mark.slow
def test_eval_on_the_demo_data_with_the_embedded_model_as_model_and_judge(
        tmp_path, tiny_model_dir):
    output = tmp_path / "demo.json"
    models = f"[{{name: base, path: embedded/smollm2-135m-instruct}}, " \
        f"{{name: sft, path: {tiny_model_dir}}}]"
    args = [f"models={models}", "data.max_rows=4", "scores.path=null",
            "judge.model=embedded/smollm2-135m-instruct", "judge.num_prompts=2",
            "judge.max_new_tokens=16", f"output.path={output}"]
    assert main(["eval", RECIPE, *args]) == 0
    results = json.loads(output.read_text())
    base, tiny = results["models"]["base"], results["models"]["sft"]
    # The real model knows English; the random tiny one does not.
    assert base["response_loss"]["loss"] < tiny["response_loss"]["loss"]
    assert base["response_loss"]["num_examples"] + base["response_loss"]["num_skipped"] == 4
    assert results["provenance"]["data"]["pairs_test"]["num_rows"] == 4
    judge = results["judge"]
    assert judge["num_judged"] + len(judge["missing"]) == 2
