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


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from ica_hub.models import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture
def sft_rows():
    return load_rows(SFT_DATA)


@pytest.fixture
def preference_rows():
    return load_rows(PREFERENCE_DATA)


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer, tmp_path_factory):
    """The tiny model and the real tokenizer saved as a plain model folder, for recipe runs."""
    from tests.training.helpers import tiny_model

    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
