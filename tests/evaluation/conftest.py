"""Fixtures of the evaluation tests: a few real test rows and held-out pairs.

The model is the tiny 2-layer Llama of ``tests/conftest.py`` (random weights), so values are
exact but say nothing about quality. Every test here is fast tier.
"""

from __future__ import annotations

import pytest
from datasets import Dataset

from tests.evaluation.helpers import read_rows


@pytest.fixture()
def test_rows() -> Dataset:
    return Dataset.from_list(read_rows("sft_qa.jsonl", 6, ("prompt", "completion")))


@pytest.fixture()
def pair_rows() -> Dataset:
    return Dataset.from_list(read_rows("preference_qa.jsonl", 6,
                                       ("prompt", "chosen", "rejected")))
