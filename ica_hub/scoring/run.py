"""Run one scoring recipe: build its parts in dependency order, score, write, push.

Used by ``python -m ica_hub.score`` (under ``accelerate launch`` or alone) and ``ica-hub score``.
On every process: read the pool and the holdout, build the scorer, score this process's shards
(``ica_hub.scoring.distributed``). On the main process only: write the scored dataset with its
``provenance.json`` and ``run.json``, and push it when the recipe names a repo.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path

import torch
import xxhash
from datasets import Dataset, IterableDataset, load_from_disk

from ica_hub.data.formats import UnknownFormatError
from ica_hub.data.loading import read_rows
from ica_hub.hub.cli import PROVENANCE_FILENAME  # read by `ica-hub push DIR REPO`
from ica_hub.scoring.distributed import ScoreRun, count_rows, score_dataset
from ica_hub.scoring.recipe import DEMO, ScoreRecipe

logger = logging.getLogger(__name__)


def load_rows(spec: str, split: str, *, demo_split: str, revision: str | None = None,
              streaming: bool = False, option: str = "data",
              split_option: str = "split") -> Dataset | IterableDataset:
    """``demo``, a save_to_disk folder, a .json/.jsonl/.parquet file, or a Hub dataset repo.
    ``option`` and ``split_option`` (the recipe fields that named ``spec`` and ``split``) are
    named in the message of any error."""
    if spec == DEMO:
        dataset = _demo_data()[demo_split]
        return dataset.to_iterable_dataset() if streaming else dataset
    return read_rows(spec, split, option, split_option, revision=revision, streaming=streaming)


@functools.cache
def _demo_data():
    from ica_hub.data.demo_data import build_demo_data

    return build_demo_data()  # pool and holdout come from one build


def _stream_key(recipe: ScoreRecipe) -> str:
    """What identifies a streamed pool in the resume key: its spec, and local files' stamps."""
    from ica_hub.data.demo_data import BUILDER_NAME

    d = recipe.data
    stamp = BUILDER_NAME if d.pool == DEMO else None
    path = Path(d.pool)
    if d.pool != DEMO and path.exists():
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        stamp = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    elif d.pool != DEMO and d.revision is None:
        logger.warning("Streaming the Hub repo %s with no data.revision: a resumed run cannot "
                       "tell whether the repo changed since its shards were written. Pin "
                       "data.revision to a commit or tag.", d.pool)
    payload = json.dumps([d.pool, d.pool_split, d.revision, d.max_rows, stamp], default=str)
    return "stream-" + xxhash.xxh3_128(payload.encode()).hexdigest()


def build_scorer(recipe: ScoreRecipe, device: str | None = None):
    from ica_hub.scoring.ica import ICAScorer

    d, s = recipe.data, recipe.scorer
    holdout = load_rows(d.holdout, d.holdout_split, demo_split="holdout", option="data.holdout",
                        split_option="data.holdout_split")
    baseline_pool = None
    if s.baseline == "pool":
        baseline_pool = load_rows(d.baseline_pool, d.pool_split, demo_split="pool",
                                  option="data.baseline_pool", split_option="data.pool_split")
    holdout = list(holdout)
    if s.name == "ica-fit" and holdout and "chosen" in holdout[0]:
        # Preference pairs are scored by the margin change, the published score.
        logger.info("scorer.name = ica-fit scores SFT rows; these are preference pairs: "
                    "scoring them with ica (the change of the chosen-over-rejected margin)")
    elif s.name == "ica-fit":
        from ica_hub.scoring.fit import HoldoutFitScorer

        return HoldoutFitScorer(
            holdout, recipe.model.name_or_path, revision=recipe.model.revision,
            dtype=getattr(torch, recipe.model.dtype), k=s.k, selection=s.selection,
            layout=s.layout, demonstration_order=s.demonstration_order,
            max_length=s.max_length, max_demonstration_tokens=s.max_demonstration_tokens,
            max_tokens_per_batch=s.max_tokens_per_batch, embedder=s.embedder, device=device,
            domain_weight=s.domain_weight, holdout_source=_holdout_source(d))
    return ICAScorer(
        holdout, recipe.model.name_or_path, revision=recipe.model.revision,
        dtype=getattr(torch, recipe.model.dtype), k=s.k, selection=s.selection, layout=s.layout,
        baseline=s.baseline, baseline_pool=list(baseline_pool) if baseline_pool else None,
        demonstration_order=s.demonstration_order, max_length=s.max_length,
        max_demonstration_tokens=s.max_demonstration_tokens,
        max_tokens_per_batch=s.max_tokens_per_batch, embedder=s.embedder, device=device,
        holdout_source=_holdout_source(d),
    )


def _holdout_source(d) -> dict[str, str]:
    return {"name": "ica_hub demo data (ShareGPT, holdout split)" if d.holdout == DEMO
            else d.holdout}


def _torch_threads(recipe: ScoreRecipe, num_local_processes: int) -> int:
    if recipe.run.torch_threads is not None:
        return recipe.run.torch_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // num_local_processes)


def run_scoring(recipe: ScoreRecipe) -> ScoreRun | None:
    """Score the recipe's pool on every process of this launch; see the module docstring."""
    from accelerate import PartialState

    d, r = recipe.data, recipe.run

    # Processes: without an accelerator, CPU processes join one gloo group.
    state = PartialState(cpu=not torch.accelerator.is_available())
    num_local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    torch.set_num_threads(_torch_threads(recipe, num_local))

    # Pool, scorer (the model loads on this process's device at its first batch).
    pool = load_rows(d.pool, d.pool_split, demo_split="pool", revision=d.revision,
                     streaming=d.streaming, option="data.pool",
                     split_option="data.pool_split")
    if d.max_rows is not None:
        pool = pool.take(d.max_rows) if d.streaming else pool.select(
            range(min(d.max_rows, len(pool))))
    scorer = build_scorer(recipe, device=None if state.device.type == "cpu" else str(state.device))
    if pool.column_names:  # a stream may not know its columns before the first row
        try:
            scorer.check_columns(list(pool.column_names))
        except UnknownFormatError:
            raise
        except ValueError as error:  # the formats disagree: say which recipe options
            raise ValueError(f"data.pool ({d.pool!r}) and data.holdout ({d.holdout!r}) must "
                             f"be rows of the same kind, SFT rows or preference pairs: "
                             f"{error}") from None
    num_rows = count_rows(pool) if not d.streaming or state.is_main_process else None
    if state.num_processes > 1 and d.streaming:
        from accelerate.utils import broadcast_object_list

        shared = [num_rows]
        broadcast_object_list(shared)
        num_rows = shared[0]
    if state.is_main_process:
        logger.info(
            "Scoring %d rows with %s on %d process(es), %d torch thread(s) each: shards of %d "
            "rows, %d rows per scorer call, at most %d padded tokens per forward pass",
            num_rows, scorer.name, state.num_processes, torch.get_num_threads(),
            r.rows_per_shard, r.batch_size, recipe.scorer.max_tokens_per_batch,
        )

    # Score every shard once; the main process writes the dataset in input order.
    provenance = scorer.provenance() if state.is_main_process else None
    run = score_dataset(
        scorer, pool, r.output_dir, work_dir=r.work_dir, rows_per_shard=r.rows_per_shard,
        batch_size=r.batch_size, dataset_key=_stream_key(recipe) if d.streaming else None,
        num_rows=num_rows, keep_work_dir=r.keep_work_dir, progress=r.progress,
        extra_files={PROVENANCE_FILENAME: json.dumps(provenance, indent=2)}, state=state,
    )
    if run is None:
        return None
    logger.info("Scored %d rows (%d shards computed, %d resumed) in %.1f s: %.2f rows/s; "
                "written to %s", run.num_rows, run.shards_computed, run.shards_resumed,
                run.wall_seconds, run.rows_per_second, r.output_dir)
    _log_unscored(load_from_disk(r.output_dir), scorer.score_column)

    # Push one version when the recipe names a repo.
    if recipe.push.repo_id:
        _push(recipe, provenance)
    return run


def _log_unscored(scored: Dataset, score_column: str) -> None:
    """Say how many rows got no score, and the commonest reasons their flag columns give."""
    import collections

    import pyarrow.compute as pc

    missing = pc.is_null(scored.data.column(score_column))
    count = pc.sum(missing).as_py() or 0
    if not count:
        return
    reasons = collections.Counter()
    for name in (c for c in scored.column_names if c.endswith("_flag")):
        flags = pc.filter(scored.data.column(name), missing).to_pylist()
        # A flag is "reason_code: explanation"; several are joined with "; ".
        reasons.update(code for row in flags if row
                       for code in re.findall(r"(?:^|; )([a-z_]+):", row))
    common = ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common(3))
    logger.warning("%d of %d rows have no %s (kept in place, null): %s; each row's *_flag "
                   "column says why", count, scored.num_rows, score_column,
                   common or "no flag given")


def _push(recipe: ScoreRecipe, provenance: dict) -> None:
    from ica_hub.hub.versions import push_scored

    p = recipe.push
    version = push_scored(
        load_from_disk(recipe.run.output_dir), p.repo_id, provenance,
        config_name=p.config_name, split=p.split, private=p.private, endpoint=p.endpoint,
        make_default=p.make_default,
    )
    logger.info("Pushed %s@%s (%d rows, commit %s)", version.repo_id, version.tag,
                version.num_rows, version.commit[:8])
