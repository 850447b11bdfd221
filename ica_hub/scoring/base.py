"""What every scorer shares: lazy model loading, row parsing, prompt fitting, identity.

A scorer is a callable for ``dataset.map(scorer, batched=True)`` (``with_rank=True`` too). It
returns only the columns it adds, one value per input row, in input order: a row that cannot be
scored keeps its place with a null score and a flag naming the reason.

Identity and caching: ``datasets`` fingerprints a ``map`` by pickling the function. A scorer
pickles to its *identity* (scorer name and version, model reference and weights hash, holdout
content hash and every setting that changes a score), never to its loaded model. So the same
inputs give the same fingerprint (a cache hit, the model never called), and any change, an
optimizer step on an in-memory model included, gives a new one. The same pickle lets
``map(num_proc=N)`` rebuild the scorer in each worker, where it loads the model on that
worker's own device.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import xxhash

import ica_hub
from ica_hub.columns import PROVENANCE_KEYS
from ica_hub.data.chat import ChatRenderer
from ica_hub.data.formats import ParsedRow, RowFormat, RowProblem, detect_format, parse_row
from ica_hub.models import ModelRef, load_model_and_tokenizer, resolve_model_path, weights_hash
from ica_hub.scoring.engine import LogProbEngine, ScoringItem

logger = logging.getLogger(__name__)

_WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".gguf")
_file_hash_memo: dict[tuple, str] = {}


def _files_hash(folder: Path) -> str | None:
    """xxh3-128 over a local model folder's weight files, memoised by size and mtime."""
    files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_FILE_SUFFIXES)
    if not files:
        return None
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _file_hash_memo:
        digest = xxhash.xxh3_128()
        for path in files:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 24):
                    digest.update(chunk)
        _file_hash_memo[key] = digest.hexdigest()
    return _file_hash_memo[key]


def device_for_rank(rank: int | None, requested: str | None) -> torch.device:
    """The device a (worker) process should use: ``cuda:rank % n`` when GPUs exist."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", (rank or 0) % torch.cuda.device_count())
    return torch.device("cpu")


class ModelHandle:
    """A model given by reference (loaded on first use) or as an in-memory object."""

    def __init__(self, model: Any, tokenizer: Any = None, *, revision: str | None = None,
                 dtype: torch.dtype = torch.float32, expected_weights_hash: str | None = None):
        self.in_memory = not isinstance(model, (str, os.PathLike))
        self.dtype = dtype
        self.revision = revision
        self.expected_weights_hash = expected_weights_hash
        if self.in_memory:
            if tokenizer is None:
                raise ValueError("A scorer given a model object also needs its tokenizer=.")
            self.model, self.tokenizer = model, tokenizer
            self.name_or_path = model.config.name_or_path or type(model).__name__
        else:
            self.model, self.name_or_path = None, str(model)
            self.tokenizer = tokenizer

    def get_tokenizer(self):
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            path = resolve_model_path(self.name_or_path)
            self.tokenizer = AutoTokenizer.from_pretrained(path, revision=self.revision)
        return self.tokenizer

    def get_model(self, device: torch.device):
        if self.model is None:
            logger.info("Loading %s on %s", self.name_or_path, device)
            self.model, _ = load_model_and_tokenizer(
                self.name_or_path, revision=self.revision, dtype=self.dtype, device=device
            )
            expected = self.expected_weights_hash
            if expected and weights_hash(self.model) != expected:
                raise RuntimeError(
                    f"This scorer was built on an in-memory model whose weights differ from "
                    f"{self.name_or_path!r}, so it cannot be rebuilt in another process. "
                    "Save the model (save_pretrained) and build the scorer from that path."
                )
        return self.model

    def identity(self) -> dict[str, Any]:
        if self.in_memory:
            weights = weights_hash(self.model)
        else:
            local = Path(resolve_model_path(self.name_or_path))
            weights = _files_hash(local) if local.is_dir() else None
        return {
            "model": self.name_or_path,
            "model_revision": ModelRef(self.name_or_path, self.revision).describe_revision(),
            "model_weights_hash": weights,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def pickle_args(self) -> tuple[str, str | None, str | None]:
        """What a worker needs to load the same model: (reference, revision, expected hash)."""
        expected = weights_hash(self.model) if self.in_memory else None
        return self.name_or_path, self.revision, expected


@dataclass(frozen=True)
class PreparedRows:
    """One map batch after parsing: rows that parsed, and problems by row position."""

    fmt: RowFormat
    parsed: dict[int, ParsedRow]
    problems: dict[int, str]
    num_rows: int


def prepare_rows(batch: dict[str, list]) -> PreparedRows:
    fmt = detect_format(list(batch))
    not_lists = [name for name, values in batch.items()
                 if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__")]
    if not_lists:  # one row, not a batch: len() of its strings would count characters
        raise ValueError(f"Scorers take batches (columns of lists), but {not_lists[:3]} hold "
                         "single values: call dataset.map(scorer, batched=True).")
    num_rows = len(next(iter(batch.values()))) if batch else 0
    parsed, problems = {}, {}
    for i in range(num_rows):
        result = parse_row({name: values[i] for name, values in batch.items()}, fmt)
        if isinstance(result, RowProblem):
            problems[i] = result.reason
        else:
            parsed[i] = result
    return PreparedRows(fmt, parsed, problems, num_rows)


class FittedRow:
    """A row's prompt, possibly truncated to fit, and its response token ids."""

    def __init__(self, prompt, responses: tuple[tuple[int, ...], ...], flags: list[str]):
        self.prompt = prompt
        self.responses = responses
        self.flags = flags


def fit_row(row: ParsedRow, renderer: ChatRenderer, max_length: int) -> FittedRow | str:
    """Tokenize the responses and cut the prompt's last user turn until the base pass fits.

    Returns the reason as a string when the row cannot fit at all: the response is never cut.
    """
    responses = tuple(renderer.encode(text) for text in row.responses)
    longest = max(map(len, responses))
    prompt_len = len(renderer.encode(renderer.prompt_text(row.prompt)))
    if longest + 1 > max_length:
        return (f"response_too_long: the response has {longest} tokens and max_length is "
                f"{max_length}; raise max_length or drop the row")
    flags = []
    prompt = row.prompt
    excess = prompt_len + longest - max_length
    if excess > 0:
        prompt = truncate_question(renderer, prompt, excess)
        if prompt is None:
            return (f"prompt_too_long: even with its question emptied the prompt does not fit "
                    f"beside a {longest}-token response in max_length={max_length}")
        flags.append(f"prompt_truncated: {excess} question tokens cut to fit max_length")
    return FittedRow(prompt, responses, flags)


def fit_rows(rows: PreparedRows, renderer: ChatRenderer, max_length: int):
    """``(fitted rows, flags)`` by row position: parse problems and fitting notes as flags."""
    flags = {i: [reason] for i, reason in rows.problems.items()}
    fitted = {}
    for i, row in rows.parsed.items():
        result = fit_row(row, renderer, max_length)
        if isinstance(result, str):
            flags[i] = [result]
        else:
            fitted[i], flags[i] = result, list(result.flags)
    return fitted, flags


def truncate_question(renderer: ChatRenderer, prompt, excess: int):
    """The prompt with ``excess`` tokens cut from the start of its last user turn, or None."""
    question = prompt[-1]["content"]
    keep = len(renderer.encode(question)) - excess - 1  # one spare: re-tokenizing may merge
    if keep <= 0:
        return None
    cut = renderer.truncate(question, keep, keep="end")
    return tuple(prompt[:-1]) + ({"role": "user", "content": cut},)


def base_item(renderer: ChatRenderer, prompt, response: tuple[int, ...],
              keep_state: bool = False) -> ScoringItem:
    return ScoringItem((), renderer.encode(renderer.prompt_text(prompt)), response,
                       keep_state=keep_state)


def content_hash(rows: list[ParsedRow]) -> str:
    digest = xxhash.xxh3_128()
    for row in rows:
        digest.update(repr((row.prompt, row.responses)).encode())
    return digest.hexdigest()


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def provenance_record(scorer_name: str, **values: Any) -> dict[str, Any]:
    """A provenance dict with exactly ``PROVENANCE_KEYS``: None where a key does not apply."""
    unknown = set(values) - set(PROVENANCE_KEYS)
    if unknown:
        raise KeyError(f"not provenance keys: {sorted(unknown)}")
    record = dict.fromkeys(PROVENANCE_KEYS)
    record.update(scorer=scorer_name, ica_hub_version=ica_hub.__version__, created_at=now_utc())
    record.update(values)
    return record


def make_engine(handle: ModelHandle, rank: int | None, runtime: dict,
                reuse_prefix: bool = True) -> LogProbEngine:
    """An engine on the handle's model: an in-memory model stays where it is; a referenced
    one loads on the device for this (worker) rank."""
    if handle.in_memory:
        device = next(handle.model.parameters()).device
    else:
        device = device_for_rank(rank, runtime["device"])
    return LogProbEngine(handle.get_model(device),
                         max_tokens_per_batch=runtime["max_tokens_per_batch"],
                         reuse_prefix=reuse_prefix)
