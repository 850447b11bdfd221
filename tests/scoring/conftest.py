"""Pieces shared by the scoring tests that run whole recipes.

Data: pools are the first rows of ``tests/data/sft_qa.jsonl`` (32 short real question/answer
rows); the holdout is ``tests/conftest.py``'s HOLDOUT. The model is the tiny 2-layer Llama of
``make_tiny_model`` saved as a plain folder, so recipes and spawned workers load it by path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import HOLDOUT

ROOT = Path(__file__).resolve().parents[2]
SFT_QA = ROOT / "tests" / "data" / "sft_qa.jsonl"
SCORE_RECIPE = ROOT / "recipes" / "score.yaml"


def pool_rows(num_rows: int, with_ids: bool = True) -> list[dict]:
    rows = [json.loads(line) for line in SFT_QA.read_text().splitlines()[:num_rows]]
    keep = ("example_id", "prompt", "completion") if with_ids else ("prompt", "completion")
    return [{key: row[key] for key in keep} for row in rows]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def recipe_overrides(model_dir, pool: Path, holdout: Path, output_dir: Path,
                     **options) -> list[str]:
    """``key=value`` overrides of recipes/score.yaml for a fast run on the tiny model."""
    values = {
        "model.name_or_path": model_dir, "data.pool": pool, "data.holdout": holdout,
        "scorer.name": "ica",
        "scorer.k": 2, "scorer.selection": "fixed", "scorer.max_length": 256,
        "scorer.max_demonstration_tokens": 48, "run.output_dir": output_dir,
        "run.rows_per_shard": 2, "run.batch_size": 2, "run.progress": "false", **options,
    }
    return [f"{key}={value}" for key, value in values.items()]


@pytest.fixture()
def holdout_file(tmp_path):
    return write_jsonl(tmp_path / "holdout.jsonl", HOLDOUT)
