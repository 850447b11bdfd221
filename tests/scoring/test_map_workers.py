"""``dataset.map(scorer, batched=True, with_rank=True, num_proc=N)`` in user code."""

from __future__ import annotations

import multiprocess
import pytest
import torch
from datasets import Dataset

from ica_hub.scoring import base
from ica_hub.scoring.ica import ICAScorer
from tests.conftest import HOLDOUT
from tests.scoring.conftest import pool_rows


def _scorer(model_dir) -> ICAScorer:
    return ICAScorer(HOLDOUT, str(model_dir), k=2, selection="fixed", max_length=256,
                     max_demonstration_tokens=48)


@pytest.mark.slow
def test_two_spawned_workers_give_the_scores_of_one(tiny_model_dir):
    rows = Dataset.from_list(pool_rows(6))
    one = rows.map(_scorer(tiny_model_dir), batched=True, batch_size=2)

    scorer = _scorer(tiny_model_dir)
    previous = multiprocess.get_start_method(allow_none=True)
    multiprocess.set_start_method("spawn", force=True)
    try:
        two = rows.map(scorer, batched=True, batch_size=2, with_rank=True, num_proc=2)
    finally:
        multiprocess.set_start_method(previous, force=True)

    assert scorer.handle.model is None  # the parent never loaded the model: only the workers
    assert two["example_id"] == one["example_id"]
    # Sums of float32 log-probs in the tens, where one unit in the last place is a few 1e-6:
    # on the cached-prefix path a spawned worker's sums differ from the parent's by ~2e-6
    # (measured; the thread count alone does not do it), so compare to float32 resolution.
    for column in ("ica_score", "ica_logp_base", "ica_logp_context"):
        assert two[column] == pytest.approx(one[column], rel=1e-6, abs=1e-5)


def test_each_worker_rank_gets_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [str(base.device_for_rank(rank, None)) for rank in (None, 0, 1, 2, 3)] == \
        ["cuda:0", "cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert str(base.device_for_rank(1, "cpu")) == "cpu"  # an explicit device wins


def test_building_a_scorer_from_a_path_loads_no_model(tiny_model_dir):
    scorer = _scorer(tiny_model_dir)
    scorer.identity()
    assert scorer.handle.model is None
