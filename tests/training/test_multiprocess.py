"""One process against two CPU processes through the real ``accelerate launch`` (slow tier)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.helpers import assert_same_grads
from tests.training.two_process_job import DATA, one_step

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
CPU_2PROC = str(ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml")


def _launch(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ACCELERATE, "launch", "--config_file", CPU_2PROC, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow
def test_two_processes_give_the_gradients_of_one(tmp_path):
    out = tmp_path / "two.pt"
    # 2 processes x 2 per device x 2 accumulation steps = the same 8 rows as 1 x 8 x 1
    done = _launch(["-m", "tests.training.two_process_job", str(out), "2", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    two = torch.load(out)
    for method in DATA:
        (loss, grads), accelerator = one_step(method, 8, 1, str(tmp_path / method))
        assert accelerator.num_processes == 1 and two[method]["processes"] == 2
        assert two[method]["loss"] == pytest.approx(loss, rel=1e-5), method
        assert_same_grads(two[method]["grads"], grads)


@pytest.mark.slow
def test_accelerate_launch_runs_the_recipe_from_this_tree(tmp_path, tiny_model_dir):
    done = _launch([
        "-m", "ica_hub.train", str(ROOT / "recipes" / "sft.yaml"),
        f"model.name_or_path={tiny_model_dir}", f"data.train={ROOT / 'tests/data/sft_qa.jsonl'}",
        "weights.score_column=ica_score", "training.max_steps=1", "training.per_device_train_batch_size=2",
        f"training.output_dir={tmp_path / 'out'}",
        "rescore.num_rescores=1", "rescore.scorer=tests.training.scorers:make_rescorer",
    ])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # ica_hub is not installed in the environment: this line can only come from this tree
    assert "effective batch 8 examples (2 per device x 2 accumulation x 2 processes)" in done.stderr
    # each process scored half of the 32 rows; the scores were gathered into one table
    assert "Re-scored 32 rows at step 0" in done.stderr
    assert (tmp_path / "out" / "config.json").exists()
