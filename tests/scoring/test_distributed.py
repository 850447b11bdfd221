"""Scoring a pool on 1..N processes: exactly once, input order, resume, recipes, bad input.

Fast tests run the recipe in this process (one process). Slow tests launch real CPU processes
with ``accelerate launch`` (gloo) and compare with the one-process result.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from datasets import Dataset, load_from_disk

from ica_hub.cli import main as cli_main
from ica_hub.config import RecipeError
from ica_hub.scoring.distributed import ShardPlan, score_dataset, work_key
from ica_hub.scoring.ica import ICAScorer
from ica_hub.scoring.recipe import ScoreRecipe, load_score_recipe
from ica_hub.scoring.run import run_scoring
from tests.conftest import HOLDOUT
from tests.scoring.conftest import (
    ROOT, SCORE_RECIPE, pool_rows, recipe_overrides, write_jsonl,
)

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
CPU_2PROC = ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"
SCORE_COLUMNS = ("ica_score", "ica_logp_base", "ica_logp_context", "ica_num_response_tokens")


def _score_here(overrides: list[str]):
    run = run_scoring(load_score_recipe(SCORE_RECIPE, overrides))
    return run, load_from_disk(run.output_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_command(num_processes: int, overrides: list[str]) -> list[str]:
    return [ACCELERATE, "launch", "--config_file", str(CPU_2PROC),
            "--num_processes", str(num_processes), "--main_process_port", str(_free_port()),
            "-m", "ica_hub.score", str(SCORE_RECIPE), *overrides]


def _launch(num_processes: int, overrides: list[str], timeout: int = 600):
    done = subprocess.run(_launch_command(num_processes, overrides), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _assert_same_rows(scored: Dataset, reference: Dataset) -> None:
    assert scored["example_id"] == reference["example_id"]
    assert len(set(scored["example_id"])) == scored.num_rows
    for column in SCORE_COLUMNS:
        assert scored[column] == pytest.approx(reference[column], rel=1e-6, abs=1e-6), column


# ---- one process


def test_recipe_run_matches_map_and_keeps_input_order(tiny_model_dir, holdout_file, tmp_path):
    rows = pool_rows(5)
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    run, scored = _score_here(recipe_overrides(tiny_model_dir, pool, holdout_file,
                                               tmp_path / "out"))
    assert (run.num_rows, run.num_shards, run.shards_computed) == (5, 3, 3)
    scorer = ICAScorer(HOLDOUT, str(tiny_model_dir), k=2, selection="fixed", max_length=256,
                       max_demonstration_tokens=48)
    mapped = Dataset.from_list(rows).map(scorer, batched=True, batch_size=2)
    _assert_same_rows(scored, mapped)
    assert scored["prompt"] == [row["prompt"] for row in rows]
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["scorer"] == "ica/v1" and provenance["k"] == 2
    assert not (tmp_path / "out.work" / run.key).exists()  # shards removed once written


def test_the_run_says_how_many_rows_got_no_score_and_why(tiny_model_dir, holdout_file,
                                                        tmp_path, caplog):
    rows = pool_rows(4)
    rows[2]["completion"] = "   "
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    with caplog.at_level("WARNING", logger="ica_hub.scoring.run"):
        _, scored = _score_here(recipe_overrides(tiny_model_dir, pool, holdout_file,
                                                 tmp_path / "out"))
    assert scored.num_rows == 4 and scored["ica_score"][2] is None
    assert "1 of 4 rows have no ica_score" in caplog.text
    assert scored["ica_flag"][2].split(":")[0] in caplog.text


def test_cli_adds_row_index_ids_to_rows_without_them(tiny_model_dir, holdout_file, tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(3, with_ids=False))
    overrides = recipe_overrides(tiny_model_dir, pool, holdout_file, tmp_path / "out")
    assert cli_main(["score", str(SCORE_RECIPE), *overrides]) == 0  # ica-hub score
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["example_id_added"]
    assert load_from_disk(tmp_path / "out")["example_id"] == [0, 1, 2]


def test_stream_gives_the_rows_of_the_dataset(tiny_model_dir, holdout_file, tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(5))
    options = recipe_overrides(tiny_model_dir, pool, holdout_file, tmp_path / "a")
    _, in_memory = _score_here(options)
    options = recipe_overrides(tiny_model_dir, pool, holdout_file, tmp_path / "b",
                               **{"data.streaming": "true"})
    _, streamed = _score_here(options)
    _assert_same_rows(streamed, in_memory)


def test_resume_skips_finished_shards_and_recomputes_none(tiny_model_dir, holdout_file,
                                                          tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(6))
    options = recipe_overrides(tiny_model_dir, pool, holdout_file, tmp_path / "out",
                               **{"run.keep_work_dir": "true"})
    first, reference = _score_here(options)
    shards = Path(first.work_dir) / "shards"
    # As if killed after shards 0 and 2: shard 1's file never got written.
    (shards / "shard-000001.arrow").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}
    second, resumed = _score_here(options)
    assert (second.shards_resumed, second.shards_computed) == (2, 1)
    assert second.processes[0]["shards_computed"] == [1]
    assert all((shards / name).stat().st_mtime_ns == mtime for name, mtime in kept.items())
    _assert_same_rows(resumed, reference)


@pytest.mark.parametrize("change", [{"k": 1}, {"layout": "chat_turns"}, {"holdout": "edited"},
                                    {"model": "other"}])
def test_a_changed_recipe_never_reuses_shards(change, tiny_model_dir, tokenizer, tmp_path):
    from tests.conftest import make_tiny_model

    plan = ShardPlan(num_rows=8, rows_per_shard=2, batch_size=2)
    settings = dict(k=2, selection="fixed", max_length=256)
    before = work_key(ICAScorer(HOLDOUT, str(tiny_model_dir), **settings).identity(), "d", plan)
    holdout, model = [dict(row) for row in HOLDOUT], str(tiny_model_dir)
    if change.pop("holdout", None):
        holdout[0]["completion"] += " Edited."
    if change.pop("model", None):
        model = tmp_path / "other"
        make_tiny_model(tokenizer, seed=1).save_pretrained(model)
        tokenizer.save_pretrained(model)
    after = work_key(ICAScorer(holdout, str(model), **{**settings, **change}).identity(),
                     "d", plan)
    assert after != before
    assert work_key(ICAScorer(HOLDOUT, str(tiny_model_dir), **settings).identity(), "d",
                    plan) == before


def test_library_call_refuses_a_stream_without_a_key(tiny_model_dir, tmp_path):
    scorer = ICAScorer(HOLDOUT, str(tiny_model_dir), k=2, selection="fixed")
    stream = Dataset.from_list(pool_rows(2)).to_iterable_dataset()
    with pytest.raises(ValueError, match="dataset_key="):
        score_dataset(scorer, stream, tmp_path / "out", rows_per_shard=2, batch_size=2)


# ---- recipes and bad input


def test_shipped_recipe_parses():
    recipe = load_score_recipe(SCORE_RECIPE)
    assert isinstance(recipe, ScoreRecipe) and recipe.data.pool == "demo"
    assert "accelerate launch" in SCORE_RECIPE.read_text().splitlines()[2]


def test_bad_recipe_lists_every_problem_with_the_fix(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("scorer:\n  kk: 3\n  layout: single\nrun:\n  rows_per_shard: 10\n"
                      "  batch_size: 4\n  output: x\npush:\n  repo_id: no-slash\nbogus: 1\n")
    assert cli_main(["score", str(recipe), "scorer.max_length=8", "data.pool="]) == 2
    message = capsys.readouterr().err
    assert message.startswith("ica-hub score: error: 8 problem(s)")
    for expected in ("scorer.kk: unknown option; did you mean 'scorer.k'?",
                     "scorer.layout = 'single': not a known choice; did you mean 'single_turn'?",
                     "run.output: unknown option; did you mean 'run.output_dir'?",
                     "bogus: unknown option",
                     "run.rows_per_shard = 10: not a multiple of run.batch_size = 4",
                     "use 8 or 12", "scorer.max_length = 8: must be >= 16",
                     "data.pool = None: expected str", "push.repo_id = 'no-slash'"):
        assert expected in message, expected


def test_a_domain_weight_for_the_published_score_is_refused():
    with pytest.raises(RecipeError, match="scorer.domain_weight = 0.0 is a setting of "
                                          "scorer.name = 'ica-fit'"):
        load_score_recipe(SCORE_RECIPE, ["scorer.name=ica", "scorer.domain_weight=0"])
    assert load_score_recipe(SCORE_RECIPE, ["scorer.name=ica"]).scorer.name == "ica"


def test_recipe_error_is_a_value_error():
    assert issubclass(RecipeError, ValueError)


# ---- several processes (real accelerate launch, gloo)


@pytest.mark.slow
@pytest.mark.parametrize("num_rows, num_processes, batch_size, rows_per_shard", [
    (4, 2, 2, 2),  # one shard per process
    (3, 2, 1, 1),  # three one-row shards on two processes
    (1, 2, 1, 1),  # a process with nothing to do
    (17, 8, 1, 2),  # many processes, an uneven last shard
])
def test_n_processes_score_each_id_once_like_one(num_rows, num_processes, batch_size,
                                                 rows_per_shard, tiny_model_dir,
                                                 holdout_file, tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(num_rows))
    plan = {"run.batch_size": batch_size, "run.rows_per_shard": rows_per_shard}
    _, reference = _score_here(recipe_overrides(tiny_model_dir, pool, holdout_file,
                                                tmp_path / "one", **plan))
    _launch(num_processes, recipe_overrides(tiny_model_dir, pool, holdout_file,
                                            tmp_path / "many", **plan))
    scored = load_from_disk(tmp_path / "many")
    run = json.loads((tmp_path / "many" / "run.json").read_text())
    assert run["num_processes"] == num_processes
    computed = sorted(i for p in run["processes"] for i in p["shards_computed"])
    assert computed == list(range(run["num_shards"]))  # each shard by exactly one process
    _assert_same_rows(scored, reference)


@pytest.mark.slow
def test_two_processes_on_a_stream_give_the_rows_of_one(tiny_model_dir, holdout_file,
                                                        tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(5))
    _, reference = _score_here(recipe_overrides(tiny_model_dir, pool, holdout_file,
                                                tmp_path / "one"))
    _launch(2, recipe_overrides(tiny_model_dir, pool, holdout_file, tmp_path / "many",
                                **{"data.streaming": "true"}))
    _assert_same_rows(load_from_disk(tmp_path / "many"), reference)


@pytest.mark.slow
def test_sigkill_then_resume_recomputes_no_finished_shard(tiny_model_dir, holdout_file,
                                                          tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(32))
    options = recipe_overrides(tiny_model_dir, pool, holdout_file, tmp_path / "out",
                               **{"run.rows_per_shard": 1, "run.batch_size": 1,
                                  "run.keep_work_dir": "true"})
    _, reference = _score_here(recipe_overrides(tiny_model_dir, pool, holdout_file,
                                                tmp_path / "one",
                                                **{"run.rows_per_shard": 1,
                                                   "run.batch_size": 1}))

    # Kill every process of the launch as soon as a few shards are on disk. (torchrun starts
    # its workers in sessions of their own: kill the whole tree, not the process group.)
    work = tmp_path / "out.work"
    launch = subprocess.Popen(_launch_command(2, options), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and launch.poll() is None:
        if len(list(work.glob("*/shards/shard-*.arrow"))) >= 4:
            tree = [launch, *psutil.Process(launch.pid).children(recursive=True)]
            for process in tree:
                process.send_signal(signal.SIGKILL)
            _, alive = psutil.wait_procs(tree[1:], timeout=30)
            assert not alive
            break
        time.sleep(0.02)
    launch.wait()
    assert launch.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done_before_kill = {p.name: p.stat().st_mtime_ns
                        for p in work.glob("*/shards/shard-*.arrow")}
    assert 4 <= len(done_before_kill) < 32 and not (tmp_path / "out").exists()

    finished = _launch(2, options)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["shards_resumed"] == len(done_before_kill)
    assert run["shards_computed"] == 32 - len(done_before_kill)
    recomputed = {f"shard-{i:06d}.arrow" for p in run["processes"]
                  for i in p["shards_computed"]}
    assert not recomputed & set(done_before_kill)
    shards = Path(run["work_dir"]) / "shards"
    assert {name: (shards / name).stat().st_mtime_ns for name in done_before_kill} == \
        done_before_kill
    assert f"resumed: {len(done_before_kill)} of 32 shards already done" in finished.stderr
    _assert_same_rows(load_from_disk(tmp_path / "out"), reference)


def test_recipe_push_and_cli_push_of_the_written_folder(tiny_model_dir, holdout_file,
                                                         tmp_path):
    import datasets
    import huggingface_hub.constants as hf_constants

    from ica_hub.hub.local import LocalHub, restore_hub_settings, use_hub
    from ica_hub.hub.versions import load_scored, read_index

    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(3))
    saved_caches = (hf_constants.HF_HUB_CACHE, datasets.config.HF_DATASETS_CACHE)
    hf_constants.HF_HUB_CACHE = str(tmp_path / "hub-cache")
    datasets.config.HF_DATASETS_CACHE = tmp_path / "datasets-cache"
    with LocalHub(tmp_path / "hub-root") as hub:
        previous = use_hub(hub.endpoint, hub.token)
        try:
            _, scored = _score_here(recipe_overrides(
                tiny_model_dir, pool, holdout_file, tmp_path / "out",
                **{"push.repo_id": "local/scored", "push.endpoint": hub.endpoint}))
            versions = read_index("local/scored")["versions"]
            assert len(versions) == 1 and versions[0]["provenance"]["k"] == 2
            pushed = load_scored("local/scored")
            assert pushed["ica_score"] == scored["ica_score"]
            assert cli_main(["push", str(tmp_path / "out"), "local/again"]) == 0
            assert read_index("local/again")["versions"][0]["provenance"]["scorer"] == "ica/v1"
        finally:
            restore_hub_settings(previous)
            hf_constants.HF_HUB_CACHE, datasets.config.HF_DATASETS_CACHE = saved_caches


# ---- bad holdouts: refused before any model is loaded


def _no_model_loads(monkeypatch):
    import ica_hub.scoring.base as scoring_base

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(scoring_base, "load_model_and_tokenizer", refuse)


def test_holdout_in_another_format_than_the_pool_fails_before_the_model_loads(
        tiny_model_dir, tmp_path, monkeypatch):
    pairs = [{"prompt": row["prompt"], "chosen": row["completion"], "rejected": "No."}
             for row in HOLDOUT]
    holdout = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(4))
    _no_model_loads(monkeypatch)
    with pytest.raises(ValueError, match=r"data.pool .* and data.holdout .* must be rows of the "
                                         r"same kind.*give a holdout in the pool's format"):
        run_scoring(load_score_recipe(SCORE_RECIPE, recipe_overrides(
            tiny_model_dir, pool, holdout, tmp_path / "out")))
    # The other way round: a pool of pairs against an SFT holdout.
    with pytest.raises(ValueError, match=r"data.pool .*pairs.jsonl.* and data.holdout .* must be "
                                         r"rows of the same kind"):
        run_scoring(load_score_recipe(SCORE_RECIPE, recipe_overrides(
            tiny_model_dir, holdout, pool, tmp_path / "out")))


@pytest.mark.parametrize("rows, message", [([], "no rows could be read"),
                                           (HOLDOUT[:1], r"lower k \(scorer.k in a recipe\)")])
def test_empty_or_too_small_holdout_fails_before_the_model_loads(
        rows, message, tiny_model_dir, tmp_path, monkeypatch):
    holdout = tmp_path / "holdout.json"
    holdout.write_text(json.dumps(rows))
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows(4))
    _no_model_loads(monkeypatch)
    with pytest.raises((ValueError, RecipeError), match=message):
        run_scoring(load_score_recipe(SCORE_RECIPE, recipe_overrides(
            tiny_model_dir, pool, holdout, tmp_path / "out")))


def test_the_launch_entry_point_reports_a_bad_recipe_like_the_cli(tmp_path, capsys):
    """``accelerate launch -m ica_hub.score``: one line naming the option, exit status 2."""
    from ica_hub.score import main as module_entry

    recipe = tmp_path / "bad.yaml"
    recipe.write_text("scorer:\n  kk: 3\n")
    assert module_entry([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m ica_hub.score: error: 1 problem(s)")
    assert "scorer.kk: unknown option; did you mean 'scorer.k'?" in err
    assert "Traceback" not in err
