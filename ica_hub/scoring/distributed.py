"""Score a dataset on 1..N processes: every row exactly once, in input order, resumable.

How a run is cut and put back together:

- **Shard plan.** Rows ``[0, num_rows)`` are cut into contiguous shards of ``rows_per_shard``
  rows, each scored in batches of ``batch_size`` rows (a batch never spans two shards). The plan
  does not depend on the number of processes, so every process count computes exactly the same
  batches, and a run can be resumed on a different number of processes.
- **Claims.** Processes walk the shards in order and take each unfinished one by creating its
  claim file with ``O_EXCL``: one process per shard, and a fast process takes more shards.
  Claims live under the run's own id, so claims of a killed run do not block its resume.
- **Shard files.** A process writes its shard batch by batch to a temporary Arrow file, then
  renames it into place: a shard file exists only when complete.
- **Output.** The main process waits until every shard file exists, checks each one's row count
  against the plan, concatenates them in shard order (memory-mapped) and writes one dataset with
  ``save_to_disk`` (to a temporary folder, then renamed). Nothing relies on padding gathered
  tensors and truncating them.
- **Resume.** Shard files live in ``work_dir/<key>``, where the key hashes the scorer's identity,
  the dataset's fingerprint and the plan. The same recipe finds its finished shards and skips
  them; any change that alters a score (model, holdout, k, layout, ...) gives another key, so old
  shards are never reused.

Limits: every process needs the same filesystem for ``work_dir`` (on several machines, a shared
one). Two launches of the same run at once on one ``work_dir`` are not supported. A streamed
dataset (``IterableDataset``) is read in full by every process (rows of other processes' shards
are read and skipped), and is counted once first when its size is unknown.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
import xxhash
from datasets import Dataset, Features, IterableDataset, Value, concatenate_datasets
from datasets.utils.tqdm import is_progress_bar_enabled

from ica_hub.columns import EXAMPLE_ID

logger = logging.getLogger(__name__)

# Bump when shard files or the plan change meaning, so older work dirs are never reused.
_SHARD_FORMAT = "shards/v1"
RUN_SUMMARY_FILENAME = "run.json"


@dataclass(frozen=True)
class ShardPlan:
    num_rows: int
    rows_per_shard: int
    batch_size: int

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.rows_per_shard)

    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.rows_per_shard
        return start, min(start + self.rows_per_shard, self.num_rows)


@dataclass
class ProcessStats:
    rank: int
    shards_computed: list[int] = field(default_factory=list)
    rows_scored: int = 0
    scoring_seconds: float = 0.0
    scoring_cpu_seconds: float = 0.0  # CPU time of all this process's threads while scoring
    peak_rss_bytes: int = 0
    torch_threads: int = 0


@dataclass
class ScoreRun:
    """What one run did, as written to ``output_dir/run.json``."""

    output_dir: str
    work_dir: str
    key: str
    num_rows: int
    num_shards: int
    shards_resumed: int  # finished by earlier runs, not recomputed
    shards_computed: int  # by this run, over all processes
    num_processes: int
    example_id_added: bool
    wall_seconds: float
    processes: list[dict] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        rows = sum(p["rows_scored"] for p in self.processes)
        return rows / self.wall_seconds if self.wall_seconds else 0.0


def work_key(scorer_identity: dict[str, Any], dataset_key: str, plan: ShardPlan) -> str:
    """The hash that names a run's shard folder (see the module docstring)."""
    payload = {"format": _SHARD_FORMAT, "scorer": scorer_identity, "dataset": dataset_key,
               "plan": asdict(plan)}
    return xxhash.xxh3_128(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class ShardStore:
    """The files of one keyed run: ``shards/``, ``claims/<run id>/``, ``stats/<run id>/``."""

    def __init__(self, path: Path):
        self.path = path
        self.shards = path / "shards"
        self.claims = path / "claims"
        self.stats = path / "stats"

    def shard_path(self, index: int) -> Path:
        return self.shards / f"shard-{index:06d}.arrow"

    def is_done(self, index: int) -> bool:
        return self.shard_path(index).exists()

    def done_indices(self) -> set[int]:
        if not self.shards.is_dir():
            return set()
        return {int(name[6:12]) for name in os.listdir(self.shards)
                if name.startswith("shard-") and name.endswith(".arrow")}

    def prepare(self, manifest: dict) -> None:
        """Main process, before any claim: folders, manifest, and no leftovers of killed runs."""
        for folder in (self.shards, self.claims, self.stats):
            folder.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(self.shards):
            if name.endswith(".tmp"):  # a shard being written when its run was killed
                os.remove(self.shards / name)
        for folder in (self.claims, self.stats):
            for old_run in os.listdir(folder):
                shutil.rmtree(folder / old_run, ignore_errors=True)
        _write_atomic(self.path / "manifest.json", json.dumps(manifest, indent=2, default=str))

    def claim(self, run_id: str, index: int) -> bool:
        folder = self.claims / run_id
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(folder / str(index), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return not self.is_done(index)  # finished between our check and our claim


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ---- reading the input in plan batches


def input_features(dataset: Dataset | IterableDataset) -> Features:
    features = dataset.features
    if features is None:  # a stream whose types are only known once read
        features = dataset._resolve_features().features
    return features


def count_rows(dataset: Dataset | IterableDataset) -> int:
    """Rows of a dataset; a stream of unknown size is read once to count them."""
    if isinstance(dataset, Dataset):
        return dataset.num_rows
    split = dataset.info.splits.get(str(dataset.split)) if dataset.info.splits else None
    if split is not None and split.num_examples:
        return split.num_examples
    logger.info("Counting the rows of the stream (one pass)")
    return sum(len(next(iter(batch.values()))) for batch in dataset.iter(batch_size=1024))


class _BatchReader:
    """The plan's batches of one shard, as Arrow tables, for a dataset or a stream."""

    def __init__(self, dataset: Dataset | IterableDataset, plan: ShardPlan, features: Features):
        self.plan = plan
        self.features = features
        if isinstance(dataset, Dataset):
            self._table = dataset.with_format("arrow")
            self._stream = None
        else:
            self._table = None
            self._stream = dataset.iter(batch_size=plan.batch_size)
            self._stream_row = 0  # first row of the next batch the stream yields

    def batches(self, index: int) -> Iterator[tuple[int, pa.Table]]:
        """``(first row, table)`` for each batch of shard ``index``; shards asked in order."""
        start, stop = self.plan.bounds(index)
        if self._table is not None:
            for first in range(start, stop, self.plan.batch_size):
                yield first, self._table[first:min(first + self.plan.batch_size, stop)]
            return
        schema = self.features.arrow_schema
        while self._stream_row < stop:
            batch = next(self._stream)
            first = self._stream_row
            self._stream_row += len(next(iter(batch.values())))
            if first >= start:  # rows before the shard belong to shards of other processes
                table = pa.Table.from_pydict(self.features.encode_batch(batch), schema=schema)
                yield first, table


# ---- the run


def score_dataset(
    scorer,
    dataset: Dataset | IterableDataset,
    output_dir: str | os.PathLike,
    *,
    work_dir: str | os.PathLike | None = None,
    rows_per_shard: int = 64,
    batch_size: int = 8,
    dataset_key: str | None = None,
    num_rows: int | None = None,
    keep_work_dir: bool = False,
    progress: bool = True,  # off too when datasets' progress bars are disabled
    extra_files: dict[str, str] | None = None,
    state=None,
) -> ScoreRun | None:
    """Score ``dataset`` with ``scorer`` on every process of ``state``; write one dataset.

    Call it on every process (under ``accelerate launch``, or alone). The main process writes
    ``output_dir`` (``save_to_disk``) and ``output_dir/run.json`` and returns the
    :class:`ScoreRun`; the other processes return None once their shards are written.

    ``scorer`` needs ``identity()``, ``output_features(column_names)`` and
    ``__call__(batch, rank)`` (``ICAScorer`` has them). ``dataset_key`` identifies the input in
    the resume key: a ``Dataset``'s fingerprint by default; a stream must be given one.
    Rows with no ``example_id`` column get ``example_id`` = row index. ``extra_files`` (name:
    text) are written inside ``output_dir`` with the dataset, in the same atomic rename.
    """
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    started = time.perf_counter()
    state = state or PartialState()
    output_dir = Path(output_dir)
    work_root = Path(work_dir) if work_dir is not None else output_dir.with_name(
        output_dir.name + ".work")
    if rows_per_shard % batch_size:
        raise ValueError(f"rows_per_shard={rows_per_shard} must be a multiple of "
                         f"batch_size={batch_size}: a batch never spans two shards")
    if dataset_key is None:
        if not isinstance(dataset, Dataset):
            raise ValueError("A streamed dataset has no fingerprint: pass dataset_key= (e.g. a "
                             "hash of its files and revision) so a resumed run finds its shards.")
        dataset_key = dataset._fingerprint

    # Plan and key: the same on every process, from the same inputs.
    features = input_features(dataset)
    num_rows = count_rows(dataset) if num_rows is None else num_rows
    plan = ShardPlan(num_rows, rows_per_shard, batch_size)
    key = work_key(scorer.identity(), dataset_key, plan)
    store = ShardStore(work_root / key)
    example_id_added = EXAMPLE_ID not in features
    output_features = _output_features(scorer, features, example_id_added)

    # The main process clears leftovers of killed runs before anyone claims; one run id for all.
    done_at_start: set[int] = set()
    if state.is_main_process:
        store.prepare({"key": key, "plan": asdict(plan), "dataset": dataset_key,
                       "scorer": scorer.identity(), "features": output_features.to_dict()})
        done_at_start = store.done_indices() & set(range(plan.num_shards))
        if done_at_start:
            logger.info("resumed: %d of %d shards already done (%s)", len(done_at_start),
                        plan.num_shards, store.path)
        if example_id_added:
            logger.info("The dataset has no %r column: using the row index as %r",
                        EXAMPLE_ID, EXAMPLE_ID)
    shared = [uuid.uuid4().hex if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(shared)
    run_id = shared[0]
    state.wait_for_everyone()

    # Score: claim unfinished shards in order, write each one atomically.
    stats = ProcessStats(rank=state.process_index)
    bar = _ProgressBar(plan, store, done_at_start,
                       enabled=progress and state.is_main_process and is_progress_bar_enabled())
    reader = _BatchReader(dataset, plan, features)
    for index in range(plan.num_shards):
        if store.is_done(index) or not store.claim(run_id, index):
            continue
        shard_started, cpu_started = time.perf_counter(), time.process_time()
        _score_shard(scorer, reader, index, store, output_features, example_id_added,
                     state.process_index, bar)
        stats.shards_computed.append(index)
        stats.rows_scored += plan.bounds(index)[1] - plan.bounds(index)[0]
        stats.scoring_seconds += time.perf_counter() - shard_started
        stats.scoring_cpu_seconds += time.process_time() - cpu_started
        bar.sync()
    stats.torch_threads = torch.get_num_threads()
    stats.peak_rss_bytes = _peak_rss_bytes()
    (store.stats / run_id).mkdir(parents=True, exist_ok=True)
    _write_atomic(store.stats / run_id / f"rank{state.process_index}.json",
                  json.dumps(asdict(stats)))
    if not state.is_main_process:
        return None

    # Main: wait for every shard and every process's stats, then write one dataset in order.
    while len(store.done_indices() & set(range(plan.num_shards))) < plan.num_shards or \
            len(list((store.stats / run_id).glob("rank*.json"))) < state.num_processes:
        bar.sync()
        time.sleep(0.2)
    bar.close()
    scored = _concatenate(store, plan)
    processes = [json.loads((store.stats / run_id / f"rank{r}.json").read_text())
                 for r in range(state.num_processes)]
    run = ScoreRun(
        output_dir=str(output_dir), work_dir=str(store.path), key=key, num_rows=num_rows,
        num_shards=plan.num_shards, shards_resumed=len(done_at_start),
        shards_computed=sum(len(p["shards_computed"]) for p in processes),
        num_processes=state.num_processes, example_id_added=example_id_added,
        wall_seconds=time.perf_counter() - started, processes=processes,
    )
    files = {RUN_SUMMARY_FILENAME: json.dumps(asdict(run), indent=2), **(extra_files or {})}
    _save_atomic(scored, output_dir, files)
    if not keep_work_dir:
        shutil.rmtree(store.path, ignore_errors=True)
        if work_root.is_dir() and not any(work_root.iterdir()):
            work_root.rmdir()
    return run


def _output_features(scorer, features: Features, example_id_added: bool) -> Features:
    added = scorer.output_features(list(features))
    kept = {name: feature for name, feature in features.items() if name not in added}
    if len(kept) < len(features):
        logger.warning("Input columns %s are replaced by the new scores",
                       sorted(set(features) - set(kept)))
    if example_id_added:
        kept[EXAMPLE_ID] = Value("int64")
    return Features({**kept, **added})


def _score_shard(scorer, reader: _BatchReader, index: int, store: ShardStore,
                 features: Features, example_id_added: bool, rank: int, bar) -> None:
    schema = features.arrow_schema
    final = store.shard_path(index)
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for first, table in reader.batches(index):
            if example_id_added:
                ids = pa.array(range(first, first + table.num_rows), pa.int64())
                table = table.append_column(EXAMPLE_ID, ids)
            added = scorer(table.to_pydict(), rank=rank)
            columns = {name: table.column(name) for name in schema.names if name not in added}
            for name, values in added.items():
                columns[name] = pa.array(values, type=schema.field(name).type)
            writer.write_table(pa.table(columns, schema=schema))
            bar.advance(table.num_rows)
    os.replace(tmp, final)


def _concatenate(store: ShardStore, plan: ShardPlan) -> Dataset:
    shards = []
    for index in range(plan.num_shards):
        shard = Dataset.from_file(str(store.shard_path(index)))
        start, stop = plan.bounds(index)
        if shard.num_rows != stop - start:
            raise RuntimeError(f"Shard {index} of {store.path} has {shard.num_rows} rows where "
                               f"the plan says {stop - start}: delete that folder and run again.")
        shards.append(shard)
    return concatenate_datasets(shards)


def _save_atomic(dataset: Dataset, output_dir: Path, files: dict[str, str]) -> None:
    """Write next to ``output_dir`` and rename, so a kill never leaves a half-written output."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.{os.getpid()}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    dataset.save_to_disk(str(staging))
    for name, text in files.items():
        (staging / name).write_text(text)
    if output_dir.exists():
        old = output_dir.with_name(f".{output_dir.name}.{os.getpid()}.old")
        os.replace(output_dir, old)
        os.replace(staging, output_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, output_dir)


class _ProgressBar:
    """Rows of all processes on the main process: its own batches live, others' per shard."""

    def __init__(self, plan: ShardPlan, store: ShardStore, done_at_start: set[int],
                 enabled: bool):
        self.plan, self.store = plan, store
        self._bar = None
        self._own_in_flight = 0
        if enabled:
            from tqdm.auto import tqdm

            initial = sum(self._rows(i) for i in done_at_start)
            self._bar = tqdm(total=plan.num_rows, initial=initial, unit=" rows",
                             desc="Scoring rows (all processes)", dynamic_ncols=True)

    def _rows(self, index: int) -> int:
        start, stop = self.plan.bounds(index)
        return stop - start

    def advance(self, rows: int) -> None:
        if self._bar is not None:
            self._own_in_flight += rows
            self._move_to(self._position())

    def sync(self) -> None:
        """Called between shards: the finished shards on disk replace the in-flight count."""
        if self._bar is not None:
            self._own_in_flight = 0
            self._move_to(self._position())

    def _position(self) -> int:
        done = self.store.done_indices()
        return sum(self._rows(i) for i in done if i < self.plan.num_shards) + self._own_in_flight

    def _move_to(self, position: int) -> None:
        if position > self._bar.n:
            self._bar.update(position - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
