"""Reading the rows a recipe names: a ``save_to_disk`` folder, a data file or a Hub repo.

Shared by scoring, training and evaluation, so that a wrong path, a malformed file or a missing
split gets the same one-line message (naming the recipe option and the fix) everywhere.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict, IterableDataset, load_dataset, load_from_disk

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
ACCEPTED_TEXT = ("a .json, .jsonl or .parquet file, or a folder written by "
                 "Dataset.save_to_disk / DatasetDict.save_to_disk")


def read_rows(spec: str, split: str, option: str, split_option: str = "split", *,
              config_name: str | None = None, revision: str | None = None,
              streaming: bool = False) -> Dataset | IterableDataset:
    """The rows ``spec`` names: a local folder or file (:func:`read_local`), else a Hub dataset
    repo. A name of neither kind, or a repo the Hub does not serve, raises ``FileNotFoundError``
    naming ``option``; an unreachable Hub is found with one request, not the client's retries."""
    from huggingface_hub import constants

    from ica_hub.hub.repo_ids import may_be_hub_repo
    from ica_hub.net import unreachable

    if names_local_rows(spec) or not may_be_hub_repo(spec):
        return read_local(spec, split, option, split_option, streaming=streaming)
    missing = f"{option} = {spec!r}: no local folder or file of that name, and "
    fix = ("Give a local path that exists, or a Hub dataset repo id that the endpoint "
           "(HF_ENDPOINT) serves")
    if problem := unreachable(constants.ENDPOINT):
        raise FileNotFoundError(f"{missing}the Hub at {constants.ENDPOINT} cannot be reached "
                                f"({problem}). {fix}")
    try:
        return load_dataset(spec, config_name, revision=revision, split=split,
                            streaming=streaming)
    except (FileNotFoundError, ConnectionError, OSError) as error:
        cause = str(error).splitlines()[0] if str(error) else ""
        raise FileNotFoundError(f"{missing}the Hub did not serve it ({type(error).__name__}: "
                                f"{cause}). {fix}") from error


def _from_here(path: Path) -> str:
    """Where a relative path was looked for: the usual cause of a path that "is not there"."""
    return "" if path.is_absolute() else f" (looked for from {Path.cwd()}; check the path)"


def names_local_rows(spec: str) -> bool:
    """Whether ``spec`` names rows on this machine (an existing path, or a data file's name)."""
    path = Path(spec).expanduser()
    return path.exists() or path.suffix in FILE_BUILDERS


def read_local(spec: str, split: str, option: str, split_option: str = "split", *,
               streaming: bool = False) -> Dataset | IterableDataset:
    """The rows of the folder or file ``spec`` (``split`` of a DatasetDict folder).

    Raises ``FileNotFoundError`` or ``ValueError`` whose message starts with ``option`` (the
    recipe field, e.g. ``data.pool``; ``split_option`` names the field of its split) and says
    what to give instead.
    """
    path = Path(spec).expanduser()
    where = f"{option} = {spec!r}"
    if path.is_dir():
        try:
            dataset = load_from_disk(str(path))
        except FileNotFoundError:
            raise ValueError(f"{where}: this folder was not written by save_to_disk (no "
                             f"dataset_info.json / dataset_dict.json); give {ACCEPTED_TEXT}"
                             ) from None
        if isinstance(dataset, DatasetDict):
            if split not in dataset:
                raise ValueError(f"{where} holds the splits {sorted(dataset)}, not {split!r}: "
                                 f"name one of them ({split_option}={next(iter(dataset))})")
            dataset = dataset[split]
        return dataset.to_iterable_dataset() if streaming else dataset
    if path.suffix not in FILE_BUILDERS:
        if path.exists():
            raise ValueError(f"{where}: {path.suffix or 'a file without an extension'} is not "
                             f"read here; give {ACCEPTED_TEXT}")
        raise FileNotFoundError(f"{where}: no such folder or file{_from_here(path)}")
    if not path.exists():
        raise FileNotFoundError(f"{where}: no such file{_from_here(path)}")
    from datasets.exceptions import DatasetGenerationError

    try:
        return load_dataset(FILE_BUILDERS[path.suffix], data_files=str(path), split="train",
                            streaming=streaming)
    except DatasetGenerationError as error:  # the cause says which row (pyarrow's words)
        cause = error.__cause__ or error
        raise ValueError(f"{where}: the file could not be read as {path.suffix[1:]} rows: "
                         f"{cause} (rows count from 0); fix that row or drop it") from error
    except (ValueError, StopIteration) as error:  # an empty file has no schema to read
        raise ValueError(f"{where}: no rows could be read from it "
                         f"({str(error) or 'the file is empty'}); give a file with at least "
                         "one row") from error
