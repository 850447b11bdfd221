"""Rows for the evaluation tests: the first rows of tests/data's real Q/A files.

``sft_qa.jsonl`` holds 32 short question/answer rows, ``preference_qa.jsonl`` pairs of a real
answer against an answer to another question.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def read_rows(name: str, num_rows: int, keep: tuple[str, ...]) -> list[dict]:
    lines = (DATA_DIR / name).read_text().splitlines()[:num_rows]
    return [{key: json.loads(line)[key] for key in keep} for line in lines]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
