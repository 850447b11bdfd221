"""Scored versions on the Hub: push one as one commit, verify it, tag it, index it; load it back.

A push, step by step (``push_scored``):

1. validate the dataset and the provenance (every problem at once);
2. write the split as parquet shards, the score histogram, and the merged dataset card;
3. commit all of it as ONE commit on the branch, with ``parent_commit`` set to the head that the
   card was merged from; if someone else committed meanwhile (HTTP 412) start again from step 2's
   card merge on the new head, up to ``max_attempts`` times;
4. read the version back from the server at that commit with ``load_dataset`` and compare row
   count and content hash with what was pushed; a mismatch reverts the branch to the files it
   had before (a new commit, unless someone committed since), raises ``VersionIntegrityError``,
   and creates no tag;
5. tag the commit (the tag name says what the version is, see ``version_tag``);
6. add the version to ``versions.json`` on the branch (a second, small commit; also retried).

So a tag always points at a commit whose data, card and histogram belong together and were
verified. ``versions.json`` at the branch head lists every version; the copy inside a tagged
commit lists the versions before it (a commit cannot contain its own id).

Content hash (``CONTENT_HASH_METHOD``): sha256 over the column names and Arrow types, then over
each row as canonical JSON (keys sorted), rows sorted by ``example_id``. It depends on values and
types only, not on parquet encoding or shard layout, so it can be recomputed from any copy.

Limits: one split per push (push each split of a DatasetDict on its own). Two pushes of
identical rows with identical provenance racing in the same second pick the same tag name; the
second ``create_tag`` then fails with 409 and its commit stays untagged (a tag name reserved
before the commit would remove this). The read-back loads the whole split into memory once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
from datasets import Dataset, load_dataset
from huggingface_hub import CommitOperationAdd, CommitOperationCopy, CommitOperationDelete, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
from huggingface_hub.hf_api import RepoFile

from ica_hub import __version__
from ica_hub.columns import EXAMPLE_ID, PROVENANCE_KEYS
from ica_hub.hub import card as card_lib
from ica_hub.hub.local import hub_settings

logger = logging.getLogger(__name__)

CONTENT_HASH_METHOD = "rows-sha256/v1"
INDEX_FILENAME = "versions.json"
MAX_SHARD_BYTES = 500 * 1024 * 1024
_HASH_BATCH_ROWS = 10_000
_AUTO_PROVENANCE = ("ica_hub_version", "created_at")


class VersionIntegrityError(RuntimeError):
    """The version read back from the Hub differs from what was pushed; it was not tagged."""


@dataclass(frozen=True)
class ScoredVersion:
    """One immutable scored version: where it is and what it holds."""

    repo_id: str
    tag: str
    commit: str
    config_name: str
    split: str
    num_rows: int
    content_hash: str
    splits: dict[str, int] = field(default_factory=dict)  # rows per split of the config
    provenance: dict = field(default_factory=dict)
    created_at: str = ""
    content_hash_method: str = CONTENT_HASH_METHOD

    def to_index_entry(self) -> dict:
        return asdict(self)


# ---- hashing and naming


def content_hash(data: Dataset | pa.Table) -> str:
    """Hash of the rows' values and types, independent of row order and storage layout."""
    table = data.with_format("arrow")[:] if isinstance(data, Dataset) else data
    if EXAMPLE_ID in table.column_names:
        table = table.sort_by(EXAMPLE_ID)
    table = table.select(sorted(table.column_names))
    digest = hashlib.sha256()
    digest.update(";".join(f"{f.name}:{f.type}" for f in table.schema).encode())
    for batch in table.to_batches(max_chunksize=_HASH_BATCH_ROWS):
        for row in batch.to_pylist():
            digest.update(json.dumps(row, sort_keys=True, default=str).encode() + b"\n")
    return digest.hexdigest()


def version_tag(provenance: dict, content_hash_hex: str, config_name: str = "default") -> str:
    """A git-ref-safe name saying what the version is, e.g.
    ``ica-v1_smollm2-135m-instruct_k3_step0_20261203T164500Z_1a2b3c4d``.

    A config other than "default" is named after the model. The content-hash suffix keeps
    different data pushed in the same second apart; ``unique_tag`` handles identical data.
    """
    model = str(provenance.get("model") or "model").rstrip("/").split("/")[-1]
    created = _parse_time(provenance.get("created_at")).strftime("%Y%m%dT%H%M%SZ")
    parts = [str(provenance.get("scorer") or "scores"), model]
    if config_name != "default":
        parts.append(config_name)
    # Only what applies: a plain-likelihood version has no k, a pre-training one no step.
    if provenance.get("k") is not None:
        parts.append(f"k{provenance['k']}")
    if provenance.get("training_step") is not None:
        parts.append(f"step{provenance['training_step']}")
    parts += [created, content_hash_hex[:8]]
    return "_".join(_sanitize_ref_part(part) for part in parts)


def unique_tag(api: HfApi, repo_id: str, tag: str) -> str:
    """``tag``, or ``tag.2``, ``tag.3``... when identical data was pushed the same second."""
    taken = {t.name for t in api.list_repo_refs(repo_id, repo_type="dataset").tags}
    candidate, number = tag, 1
    while candidate in taken:
        number += 1
        candidate = f"{tag}.{number}"
    return candidate


def _sanitize_ref_part(text: str) -> str:
    # Lower case except the time stamp, whose T and Z read better upper case.
    text = text if re.fullmatch(r"\d{8}T\d{6}Z", text) else text.lower()
    text = re.sub(r"[^A-Za-z0-9.-]+", "-", text)
    return re.sub(r"-{2,}", "-", text.replace("..", ".")).strip(".-") or "x"


def _parse_time(value) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, str) and value:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(dt.timezone.utc) if parsed.tzinfo else parsed
    return dt.datetime.now(dt.timezone.utc)


# ---- validation


def complete_provenance(provenance: dict) -> dict:
    """Fill ``ica_hub_version`` and ``created_at`` when absent; check every key at once."""
    problems = []
    missing = [k for k in PROVENANCE_KEYS if k not in provenance and k not in _AUTO_PROVENANCE]
    unknown = sorted(set(provenance) - set(PROVENANCE_KEYS))
    if missing:
        problems.append(f"provenance misses {missing}: add them (None is allowed for a key "
                        "that does not apply)")
    if unknown:
        problems.append(f"provenance has unknown keys {unknown}: the keys are "
                        f"ica_hub.columns.PROVENANCE_KEYS = {list(PROVENANCE_KEYS)}")
    if problems:
        raise ValueError("Invalid provenance:\n- " + "\n- ".join(problems))
    completed = dict(provenance)
    if completed.get("ica_hub_version") is None:
        completed["ica_hub_version"] = __version__
    if completed.get("created_at") is None:
        completed["created_at"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return completed


def _check_dataset(dataset: Dataset, config_name: str, split: str) -> None:
    problems = []
    if not isinstance(dataset, Dataset):
        problems.append(f"dataset must be a datasets.Dataset, got {type(dataset).__name__} "
                        "(push each split of a DatasetDict with its own split=)")
    elif EXAMPLE_ID not in dataset.column_names:
        problems.append(f"dataset has no {EXAMPLE_ID!r} column: scored rows need a stable id")
    elif len(set(dataset[EXAMPLE_ID])) != dataset.num_rows:
        problems.append(f"{EXAMPLE_ID!r} has duplicates: each row needs its own id")
    if not re.fullmatch(r"\w+(\.\w+)*", split):
        problems.append(f"split {split!r} must be letters, digits, '_' or '.' (e.g. 'train')")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", config_name):
        problems.append(f"config_name {config_name!r} must be letters, digits, '_', '.', '-'")
    if problems:
        raise ValueError("Cannot push this scored dataset:\n- " + "\n- ".join(problems))


# ---- push


def push_scored(
    dataset: Dataset,
    repo_id: str,
    provenance: dict,
    *,
    config_name: str = "default",
    make_default: bool | None = None,
    split: str = "train",
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    branch: str = "main",
    max_attempts: int = 5,
) -> ScoredVersion:
    """Push ``dataset`` as the ``split`` of ``config_name``: one verified, tagged version.

    ``make_default``: True makes this config the default one, False never does, None (default)
    does only when the repo has no default config yet. Raises ``VersionIntegrityError`` when the
    read-back differs, and ``HfHubHTTPError`` (status 412) when ``max_attempts`` commits all lost
    a race with other pushes; both leave no tag.
    """
    _check_dataset(dataset, config_name, split)
    provenance = complete_provenance(provenance)
    with hub_settings(endpoint, token):
        api = HfApi(endpoint=endpoint, token=token)
        repo_id = api.create_repo(repo_id, repo_type="dataset", private=private,
                                  exist_ok=True).repo_id
        expected_hash = content_hash(dataset)
        tag = unique_tag(api, repo_id, version_tag(provenance, expected_hash, config_name))
        data_dir = config_name if config_name != "default" else "data"
        with tempfile.TemporaryDirectory(prefix="ica_hub_push_") as tmp:
            shards = _write_shards(dataset, Path(tmp), data_dir, split)
            histogram_path = f"images/{config_name}-{split}-ica_score.png"
            histogram = card_lib.histogram_png(dataset, f"{repo_id} {config_name}/{split} {tag}")
            commit, parent, card_data = _commit_version(
                api, repo_id, branch, dataset, provenance, shards, histogram, histogram_path,
                config_name=config_name, split=split, data_dir=data_dir, tag=tag,
                make_default=make_default, max_attempts=max_attempts,
            )
        try:
            _verify(repo_id, commit, config_name, split, dataset.num_rows, expected_hash, token)
        except VersionIntegrityError:
            _revert(api, repo_id, branch, commit, parent)
            raise
        api.create_tag(repo_id, tag=tag, revision=commit, repo_type="dataset",
                       tag_message=f"{config_name}/{split}: {dataset.num_rows} rows")
        version = ScoredVersion(
            repo_id=repo_id, tag=tag, commit=commit, config_name=config_name, split=split,
            num_rows=dataset.num_rows, content_hash=expected_hash,
            splits=card_lib.split_sizes(card_data, config_name), provenance=provenance,
            created_at=provenance["created_at"],
        )
        _add_to_index(api, repo_id, branch, version, max_attempts)
    logger.debug("pushed %s@%s (%d rows, commit %s)", repo_id, tag, version.num_rows, commit[:8])
    return version


def _write_shards(dataset: Dataset, folder: Path, data_dir: str, split: str) -> dict[str, Path]:
    """Parquet shards named like push_to_hub's: ``{data_dir}/{split}-00000-of-00002.parquet``."""
    num_shards = max(1, math.ceil(dataset.data.nbytes / MAX_SHARD_BYTES))
    shards = {}
    for index in range(num_shards):
        path_in_repo = f"{data_dir}/{split}-{index:05d}-of-{num_shards:05d}.parquet"
        local_path = folder / path_in_repo.replace("/", "__")
        dataset.shard(num_shards, index, contiguous=True).to_parquet(str(local_path))
        shards[path_in_repo] = local_path
    return shards


def _commit_version(
    api: HfApi, repo_id: str, branch: str, dataset: Dataset, provenance: dict,
    shards: dict[str, Path], histogram: bytes, histogram_path: str, *, config_name: str,
    split: str, data_dir: str, tag: str, make_default: bool | None, max_attempts: int,
):
    """Commit data + card + histogram in one commit on top of the current head; retry on 412."""
    summary = card_lib.score_summary(dataset)
    num_bytes = dataset.data.nbytes
    download_bytes = sum(path.stat().st_size for path in shards.values())
    for attempt in range(1, max_attempts + 1):
        head = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
        files = {path: f.size for path, f in _files_at(api, repo_id, head).items()}
        old_split_files = [path for path in files
                           if path.startswith(f"{data_dir}/{split}-") and path.endswith(".parquet")]
        existing_card = _read_text(api, repo_id, head, "README.md")
        new_card = card_lib.build_card(
            existing_card,
            metadata=dict(config_name=config_name, split=split,
                          data_files=f"{data_dir}/{split}-*", features=dataset.features,
                          num_rows=dataset.num_rows, num_bytes=num_bytes,
                          download_bytes=download_bytes,
                          replaced_download_bytes=sum(files[p] for p in old_split_files),
                          make_default=make_default),
            block_kwargs=dict(repo_id=repo_id, tag=tag, config_name=config_name, split=split,
                              provenance=provenance, summary=summary,
                              histogram_path=histogram_path),
        )
        stale = sorted(path for path in old_split_files if path not in shards)
        operations = [
            *[CommitOperationAdd(path, str(local)) for path, local in shards.items()],
            CommitOperationAdd(histogram_path, histogram),
            CommitOperationAdd("README.md", str(new_card).encode()),
            *[CommitOperationDelete(path) for path in stale],
        ]
        try:
            info = api.create_commit(
                repo_id, operations, commit_message=f"Scored version {tag}",
                commit_description=f"config {config_name}, split {split}, "
                                   f"{dataset.num_rows} rows",
                repo_type="dataset", revision=branch, parent_commit=head,
            )
        except HfHubHTTPError as error:
            if _status(error) != 412 or attempt == max_attempts:
                raise
            logger.info("%s moved during the push (attempt %d/%d); merging again",
                        branch, attempt, max_attempts)
            continue
        return info.oid, head, new_card.data
    raise AssertionError("unreachable")


def _files_at(api: HfApi, repo_id: str, revision: str) -> dict[str, RepoFile]:
    tree = api.list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True)
    return {entry.path: entry for entry in tree if isinstance(entry, RepoFile)}


def _status(error: HfHubHTTPError) -> int | None:
    return error.response.status_code if error.response is not None else None


def _read_text(api: HfApi, repo_id: str, revision: str, path: str) -> str | None:
    try:
        local = api.hf_hub_download(repo_id, path, repo_type="dataset", revision=revision)
    except EntryNotFoundError:
        return None
    return Path(local).read_text(encoding="utf-8")


def _verify(repo_id: str, commit: str, config_name: str, split: str, num_rows: int,
            expected_hash: str, token: str | None) -> None:
    """Load the version back at ``commit`` the way users will, and compare."""
    loaded = load_dataset(repo_id, config_name, split=split, revision=commit, token=token)
    problems = []
    if loaded.num_rows != num_rows:
        problems.append(f"{loaded.num_rows} rows read back, {num_rows} pushed")
    loaded_hash = content_hash(loaded)
    if loaded_hash != expected_hash:
        problems.append(f"content hash {loaded_hash[:12]} read back, {expected_hash[:12]} pushed")
    if problems:
        raise VersionIntegrityError(
            f"{repo_id}@{commit} ({config_name}/{split}) does not match what was pushed: "
            + "; ".join(problems) + ". No tag was created; push again, and if it repeats, check "
            "the server's storage."
        )


def _revert(api: HfApi, repo_id: str, branch: str, commit: str, parent: str) -> None:
    """Put ``branch`` back to ``parent``'s files with a new commit, if nobody committed since."""

    before, after = _files_at(api, repo_id, parent), _files_at(api, repo_id, commit)
    operations = [
        *[CommitOperationCopy(path, path, src_revision=parent) for path, f in before.items()
          if path not in after or after[path].blob_id != f.blob_id],
        *[CommitOperationDelete(path) for path in after if path not in before],
    ]
    try:
        api.create_commit(repo_id, operations, commit_message=f"Revert unverified {commit[:8]}",
                          repo_type="dataset", revision=branch, parent_commit=commit)
    except HfHubHTTPError as error:
        if _status(error) != 412:
            raise
        logger.warning("%s moved after the unverified commit %s; not reverting it", branch,
                       commit[:8])


def _add_to_index(api: HfApi, repo_id: str, branch: str, version: ScoredVersion,
                  max_attempts: int) -> None:
    for attempt in range(1, max_attempts + 1):
        head = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
        index = read_index(repo_id, revision=head, api=api)
        index["versions"] = [v for v in index["versions"] if v["tag"] != version.tag]
        index["versions"].append(version.to_index_entry())
        payload = json.dumps(index, indent=2, sort_keys=True).encode() + b"\n"
        try:
            api.create_commit(
                repo_id, [CommitOperationAdd(INDEX_FILENAME, payload)],
                commit_message=f"Index version {version.tag}", repo_type="dataset",
                revision=branch, parent_commit=head,
            )
            return
        except HfHubHTTPError as error:
            if _status(error) != 412 or attempt == max_attempts:
                raise


# ---- read


def read_index(repo_id: str, revision: str = "main", *, api: HfApi | None = None,
               token: str | None = None, endpoint: str | None = None) -> dict:
    """The version index (``{"versions": [...]}``, oldest first) at ``revision``."""
    api = api or HfApi(endpoint=endpoint, token=token)
    text = _read_text(api, repo_id, revision, INDEX_FILENAME)
    return json.loads(text) if text else {"versions": []}


def load_scored(
    repo_id: str,
    version: str | None = None,
    config_name: str | None = None,
    split: str = "train",
    *,
    token: str | None = None,
    endpoint: str | None = None,
) -> Dataset:
    """Load one scored version: by tag, or the newest indexed one (of ``config_name`` if given).

    ``config_name=None`` loads the default config of that tag, or with ``version=None`` the
    config of the newest version. With a tag, this is
    ``load_dataset(repo_id, config_name, split=split, revision=tag)``.
    """
    with hub_settings(endpoint, token):
        if version is None:
            entries = read_index(repo_id, token=token, endpoint=endpoint)["versions"]
            entries = [e for e in entries if config_name in (None, e["config_name"])]
            if not entries:
                raise ValueError(f"{repo_id} has no indexed version"
                                 + (f" of config {config_name!r}" if config_name else "")
                                 + "; push one with push_scored or pass version=<tag>.")
            version = entries[-1]["tag"]
            config_name = config_name or entries[-1]["config_name"]
        return load_dataset(repo_id, config_name, split=split, revision=version, token=token)
