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
from pathlib import Path

import pytest
import torch
from datasets import Dataset

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SFT_DATA = DATA_DIR / "sft_qa.jsonl"
PREFERENCE_DATA = DATA_DIR / "preference_qa.jsonl"

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from ica_hub.models import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_model(tokenizer, seed: int = 0):
    """A 2-layer Llama with hidden size 64 and the real tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_rows(path: Path, n: int | None = None) -> Dataset:
    dataset = Dataset.from_json(str(path))
    return dataset.select(range(n)) if n is not None else dataset


@pytest.fixture
def sft_rows() -> Dataset:
    return load_rows(SFT_DATA)


@pytest.fixture
def preference_rows() -> Dataset:
    return load_rows(PREFERENCE_DATA)
