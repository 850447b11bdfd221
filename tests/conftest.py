"""Shared fixtures, and the test tiers.

Tiers (the marker is declared in pyproject.toml):

- fast (no marker): `make test`, i.e. `.venv/bin/python -m pytest`. Tiny models built from a
  config with the real SmolLM2 tokenizer, plus a few checks on the real embedded model. This is
  what CI runs; it must stay under 30 minutes on a 2-core machine (it takes a few minutes).
- slow (`@pytest.mark.slow`): `make test-slow`, i.e. `pytest -m slow`. Multi-process runs,
  the first-use model conversion raced by two processes, and end-to-end jobs on real data.
- everything: `make test-all`, i.e. `pytest -m "slow or not slow"`.

The fast tier is selected by default through `-m "not slow"` below unless `-m` is given.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # The fast tier by default: slow tests are deselected (not skipped) unless -m says otherwise.
    if not config.option.markexpr:
        config.option.markexpr = "not slow"


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (ChatML template) from the embedded model package."""
    from transformers import AutoTokenizer

    from ica_hub.models import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def make_tiny_model(tokenizer, seed: int = 0):
    """A 2-layer Llama with random weights and the real tokenizer's vocabulary: fast and exact."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.config.name_or_path = f"tiny-llama-seed{seed}"
    return model


@pytest.fixture()
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer, tmp_path_factory):
    """The tiny model and the real tokenizer as a plain model folder, loaded by path."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def real_model():
    """The real embedded SmolLM2-135M-Instruct (loads in about a second once converted)."""
    from ica_hub.models import load_model_and_tokenizer

    return load_model_and_tokenizer()


HOLDOUT = [
    {"prompt": "How do I reverse a list in Python?",
     "completion": "Use slicing: `my_list[::-1]` returns a reversed copy; `my_list.reverse()` "
                   "reverses it in place."},
    {"prompt": "What does a dict comprehension look like?",
     "completion": "Like `{key: value for key, value in pairs}`; it builds a dict in one line."},
    {"prompt": "How can I read a file line by line in Python?",
     "completion": "Open it in a with block and iterate: `for line in open_file:` yields lines."},
    {"prompt": "How do I remove duplicates from a list but keep the order?",
     "completion": "Use `list(dict.fromkeys(items))`: dicts keep insertion order."},
]

POOL = [
    {"prompt": "How do I sort a list of numbers in Python?",
     "completion": "Call `sorted(numbers)` for a new list or `numbers.sort()` in place."},
    {"prompt": "Who wrote the play Hamlet?",
     "completion": "William Shakespeare wrote Hamlet around 1600."},
    {"prompt": "How do I count words in a string in Python?",
     "completion": "Split it and take the length: `len(text.split())`."},
    {"prompt": "What is the boiling point of water at sea level?",
     "completion": "100 degrees Celsius, or 212 degrees Fahrenheit."},
    {"prompt": "How do I merge two dicts in Python 3.9?",
     "completion": "Use the union operator: `merged = first | second`."},
    {"prompt": "Name a large desert in Africa.",
     "completion": "The Sahara, the largest hot desert in the world."},
]


@pytest.fixture()
def holdout_rows():
    return [dict(row) for row in HOLDOUT]


@pytest.fixture()
def pool_rows():
    return [dict(row, example_id=f"row-{i}") for i, row in enumerate(POOL)]
