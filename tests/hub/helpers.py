"""Tiny scored datasets and provenance dicts shared by the hub tests."""

from __future__ import annotations

from datasets import Dataset

from ica_hub.columns import PROVENANCE_KEYS


def scored_rows(num_rows: int, offset: int = 0, tag: str = "v") -> Dataset:
    """A tiny scored dataset: ids ``{tag}-{i}``, every third row flagged, every fifth unscored."""
    ids = range(offset, offset + num_rows)
    return Dataset.from_dict({
        "example_id": [f"{tag}-{i}" for i in ids],
        "prompt": [f"question {i}" for i in ids],
        "completion": [f"answer {i} ({tag})" for i in ids],
        "ica_score": [None if i % 5 == 4 else round(0.1 * i - 0.2, 3) for i in ids],
        "ica_flag": ["low" if i % 3 == 0 else None for i in ids],
    })


def provenance(**overrides) -> dict:
    """A complete provenance dict for tests (values are plausible, not from a real run)."""
    values = {key: None for key in PROVENANCE_KEYS}
    values.update(scorer="ica/v1", model="HuggingFaceTB/SmolLM2-135M-Instruct", k=3,
                  training_step=0, selection="nearest", layout="chatml-demos",
                  holdout="local/holdout", embedder="all-MiniLM-L6-v2",
                  created_at="2026-12-03T16:45:00Z")
    values.update(overrides)
    return values
