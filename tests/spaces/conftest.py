"""Fixtures for tests/spaces: a local Hub holding two hand-made scored versions and results.

The ``hub`` fixture is tests/hub's: the server in a thread on a free port of 127.0.0.1, its
storage and the clients' caches in temp folders, the real ``huggingface_hub`` and ``datasets``
clients pointed at it. The versions are pushed once for the package (tests/spaces is a package,
so the client settings are put back when its last test ends).

What is pushed (``Published``): ``POOL_ROWS`` as config ``pool`` with ``POOL_RESULTS`` filed
under its tag, then ``PAIR_ROWS`` as config ``pairs`` one day later, with no results. The
values are binary fractions, so every table can be compared with ``==``. All tests here are
fast tier.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from datasets import Dataset

from ica_hub.columns import PROVENANCE_KEYS
from ica_hub.hub.local import LocalHub
from ica_hub.hub.results import push_results
from ica_hub.hub.versions import ScoredVersion, push_scored
from tests.hub import conftest as hub_conftest

# The package-scoped local Hub of tests/hub, scoped here to this package.
hub = hub_conftest.hub

REPO_ID = "local/ica-browse"

# example_id, row_kind, prompt, completion, fit_score, ica_score, ica_flag
POOL_ROWS = [
    ("p-0", "target", "How do I sort a list in Python?", "Call sorted(numbers).", 1.5, 0.25,
     None),
    ("p-1", "off_domain", "Who wrote Hamlet?", "William Shakespeare.", -0.5, 0.75, None),
    ("p-2", "swapped", "How do I read a file?", "The Sahara is a desert.", -2.0, 0.125, None),
    ("p-3", "target", "How do I merge two dicts?", "Use first | second.", 2.25, None,
     "no response tokens"),
    ("p-4", "truncated", "How do I count words?", "Split the", -1.0, -0.5, None),
    ("p-5", "corrupted", "How do I reverse a list?", "list reverse a slicing", None, -0.75,
     "over max_length"),
    ("p-6", "target", "How do I remove duplicates?", "Use dict.fromkeys(items).", 0.75, 0.5,
     None),
    ("p-7", "off_domain", "Name a desert in Africa.", "The Sahara.", 0.0, 1.25, None),
]
PAIR_ROWS = [
    {"example_id": "q-0", "prompt": "Sort a list?", "chosen": "sorted(x)", "rejected": "Paris.",
     "ica_score": 0.5},
    {"example_id": "q-1", "prompt": "Count words?", "chosen": "len(s.split())",
     "rejected": "Blue.", "ica_score": -0.25},
]
POOL_RESULTS = {
    "format": "ica-hub-eval/v1",
    "models": {
        "base": {"path": "embedded", "response_loss": {"loss": 2.5, "perplexity": 12.25,
                                                        "num_examples": 6},
                 "preference_accuracy": {"accuracy": 0.625, "num_pairs": 8}},
        "sft-ica": {"path": "out/sft-ica", "response_loss": {"loss": 2.125, "perplexity": 8.375,
                                                              "num_examples": 6},
                    "preference_accuracy": None},
    },
    "score_quality": {
        "ica-fit": {"column": "fit_score",
                    "clean_over_noisy": {"auroc": 0.9375, "num_positive": 4, "num_negative": 3},
                    "target_over_off_domain": {"auroc": 0.8125, "num_positive": 3,
                                               "num_negative": 2}},
        "ica (published)": {"column": "ica_score",
                            "clean_over_noisy": {"auroc": 0.3125, "num_positive": 4,
                                                 "num_negative": 4},
                            "target_over_off_domain": {"auroc": float("nan"),
                                                       "num_positive": 3, "num_negative": 0}},
    },
    "judge": None,
}


@dataclass(frozen=True)
class Published:
    """What the fixture pushed: the running Hub and the two versions."""

    hub: LocalHub
    repo_id: str
    pool: ScoredVersion
    pairs: ScoredVersion


def provenance(**values) -> dict:
    """A complete provenance dict (plausible values, not from a real run)."""
    complete = {key: None for key in PROVENANCE_KEYS}
    complete.update(scorer="ica-fit/v2", model="embedded/smollm2-135m-instruct", k=3,
                    selection="nearest", holdout="local/holdout")
    complete.update(values)
    return complete


def pool_dataset() -> Dataset:
    names = ("example_id", "row_kind", "prompt", "completion", "fit_score", "ica_score",
             "ica_flag")
    columns = {name: [row[i] for row in POOL_ROWS] for i, name in enumerate(names)}
    # An integer column: a token count, which is not a score.
    columns["ica_num_response_tokens"] = [4 * (i + 1) for i in range(len(POOL_ROWS))]
    return Dataset.from_dict(columns)


@pytest.fixture(scope="package")
def published(hub) -> Published:
    """``POOL_ROWS`` and ``PAIR_ROWS`` pushed as two versions of ``REPO_ID``, results beside
    the pool's."""
    pool = push_scored(pool_dataset(), REPO_ID, provenance(created_at="2026-12-03T10:00:00Z"),
                       config_name="pool", make_default=True)
    push_results(REPO_ID, POOL_RESULTS, version_tag=pool.tag, name="demo-eval")
    pairs = push_scored(Dataset.from_list(PAIR_ROWS), REPO_ID,
                        provenance(scorer="ica/v1", created_at="2026-12-04T10:00:00Z"),
                        config_name="pairs", make_default=False)
    return Published(hub=hub, repo_id=REPO_ID, pool=pool, pairs=pairs)
