"""Shared pieces of the training tests.

Tiers: tests not marked run in a few minutes on 2 CPU cores with a tiny Llama (2 layers,
hidden 64) built from a config and the real SmolLM2 tokenizer. ``@pytest.mark.slow`` marks the
ones that launch processes through ``accelerate launch`` or run the real embedded model; run them
with ``pytest -m slow tests/training``.

Data: ``tests/data/sft_qa.jsonl`` and ``tests/data/preference_qa.jsonl``, 32 real question/answer
rows written for these tests; preference rows pair each answer (chosen) with the real answer to
another question (rejected). Their ``ica_score`` values are golden numbers written by hand.
"""

from __future__ import annotations

import os

import pytest

from tests.training.helpers import PREFERENCE_DATA, SFT_DATA, load_rows

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def sft_rows():
    return load_rows(SFT_DATA)


@pytest.fixture
def preference_rows():
    return load_rows(PREFERENCE_DATA)
