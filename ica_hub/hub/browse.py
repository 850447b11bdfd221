"""Browse scored versions and their evaluation results: what the Space shows, as tables.

The Space (``spaces/ica_browser``) is a thin layer over these functions; they serve a notebook
or a script as well. Every function that reads the Hub takes ``endpoint`` and ``token`` like
the rest of ``ica_hub.hub`` (None: the configured Hub and token) and reads through the real
``huggingface_hub`` and ``datasets`` clients.

- ``list_versions``: the version index of a dataset repo, newest first;
- ``load_version``: one version's rows, by tag;
- ``rows_table``, ``score_summaries``, ``score_histogram``: a table sorted by a score column,
  the summary of every score column, the histogram of one;
- ``results_tables``: the evaluation results filed under a version, as a table of models and
  a table of scores.

A problem the user can fix (no such repo, no version yet, an unknown tag, column or row kind)
raises ``BrowseError``, naming the repo, tag or value and what to do instead.

Limits: ``load_version`` holds a version's rows in memory, the last ``_CACHED_VERSIONS``
versions at most; that is safe because a tag never moves, and the cache key includes the commit
the index gives for the tag. ``rows_table`` sorts the whole version in one pandas frame (fine
up to about a million rows) and returns the first ``max_rows``: the browser is for looking, use
``load_scored`` for every row. ``results_tables`` reads every results file of the repo, then
keeps the ones filed under the tag.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from datasets import Dataset

from ica_hub.columns import EXAMPLE_ID, ICA_FLAG, ICA_SCORE, PROVENANCE_KEYS, ROW_KIND
from ica_hub.hub import card as card_lib
from ica_hub.hub.local import hub_settings

logger = logging.getLogger(__name__)

# Score columns shown first, in this order, when a version has them; then the others.
PREFERRED_SCORES = ("fit_score", ICA_SCORE, "ica_score_per_token")
# Columns that hold the row's text, shown as one-line previews.
TEXT_COLUMNS = ("prompt", "completion", "chosen", "rejected", "messages")
DISPLAY_DECIMALS = 4
_CACHED_VERSIONS = 4
_FLOAT_DTYPES = ("float16", "float32", "float64")


class BrowseError(LookupError):
    """Something to browse is not there: the message names it and says what to do."""


# ---- the versions of a repo


def list_versions(repo_id: str, *, endpoint: str | None = None,
                  token: str | None = None) -> list[dict[str, Any]]:
    """The scored versions of dataset repo ``repo_id``, newest first (by ``created_at``, then
    by push order), each as ``{"repo_id", "tag", "config_name", "split", "num_rows",
    "scorer", "model", "k", "created_at", "commit", "provenance"}``.

    Raises ``BrowseError`` when the repo does not exist (or the token cannot read it), when
    the Hub cannot be reached, or when the repo has no indexed version yet.
    """
    from ica_hub.hub.versions import read_index

    with hub_settings(endpoint, token):
        api = _api(endpoint, token)
        _check_repo(api, repo_id)
        entries = read_index(repo_id, api=api)["versions"]
    if not entries:
        raise BrowseError(f"{repo_id} has no scored versions yet (its versions.json is missing "
                          "or empty): push one with push_scored() or `ica-hub push DATASET_DIR "
                          f"{repo_id}`.")
    ordered = sorted(enumerate(entries), key=lambda pair: (_created(pair[1]), pair[0]),
                     reverse=True)
    return [_version_row(entry) for _, entry in ordered]


def _api(endpoint: str | None, token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def _check_repo(api, repo_id: str) -> None:
    """Fail with the fix when ``repo_id`` is empty, missing, unreadable or the Hub is down."""
    import httpx2  # the HTTP client of huggingface_hub: its transport errors mean "unreachable"
    from huggingface_hub.errors import (HfHubHTTPError, HFValidationError,
                                        RepositoryNotFoundError)

    if not repo_id or not repo_id.strip():
        raise BrowseError("No dataset repo given: enter its id, e.g. 'local/ica-demo'.")
    try:
        api.repo_info(repo_id, repo_type="dataset")
    except HFValidationError as error:
        raise BrowseError(f"{repo_id!r} is not a repo id ({error}): enter namespace/name, "
                          "e.g. 'local/ica-demo'.") from error
    except RepositoryNotFoundError as error:
        raise BrowseError(_not_found(api, repo_id)) from error
    except HfHubHTTPError as error:
        if error.response is None or error.response.status_code not in (401, 403, 404):
            raise
        raise BrowseError(_not_found(api, repo_id)) from error
    except httpx2.TransportError as error:
        raise BrowseError(f"Cannot reach the Hub at {api.endpoint} to read {repo_id} ({error}): "
                          "start it (`ica-hub hub serve --root DIR --port 8765`) or set "
                          "ICA_HUB_ENDPOINT to a running one.") from error


def _not_found(api, repo_id: str) -> str:
    return (f"Dataset repo {repo_id!r} was not found on {api.endpoint}: check the id "
            "(namespace/name, e.g. 'local/ica-demo'), the Hub it is on (ICA_HUB_ENDPOINT), and "
            "for a private repo a token that can read it (ICA_HUB_TOKEN).")


def _created(entry: dict) -> dt.datetime:
    text = str(entry.get("created_at") or "1970-01-01T00:00:00Z")
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _version_row(entry: dict) -> dict[str, Any]:
    provenance = entry.get("provenance") or {}
    return {"repo_id": entry["repo_id"], "tag": entry["tag"],
            "config_name": entry["config_name"], "split": entry["split"],
            "num_rows": entry["num_rows"], "scorer": provenance.get("scorer"),
            "model": provenance.get("model"), "k": provenance.get("k"),
            "created_at": entry.get("created_at"), "commit": entry["commit"],
            "provenance": provenance}


def version_label(version: dict[str, Any]) -> str:
    """One line naming a version, for a drop-down: ``tag (config/split, N rows)``."""
    return (f"{version['tag']} ({version['config_name']}/{version['split']}, "
            f"{version['num_rows']} rows)")


def versions_table(versions: list[dict[str, Any]]) -> pd.DataFrame:
    """``list_versions``' result as a table, one row per version, newest first."""
    columns = ("tag", "config_name", "split", "num_rows", "scorer", "model", "k", "created_at")
    return pd.DataFrame([{name: version[name] for name in columns} for version in versions],
                        columns=list(columns))


def find_version(repo_id: str, tag: str, *, endpoint: str | None = None,
                 token: str | None = None) -> dict[str, Any]:
    """The entry of ``tag`` in ``list_versions(repo_id)``; ``BrowseError`` (with the closest
    tag and the list of tags) when the repo has no such version."""
    versions = list_versions(repo_id, endpoint=endpoint, token=token)
    for version in versions:
        if version["tag"] == tag:
            return version
    tags = [version["tag"] for version in versions]
    close = difflib.get_close_matches(str(tag), tags, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise BrowseError(f"Tag {tag!r} is not a scored version of {repo_id}: {hint}"
                      f"its versions, newest first: {', '.join(tags)}.")


def version_markdown(version: dict[str, Any]) -> str:
    """What a version is (tag, rows, commit, provenance) and how to load it, in Markdown."""
    provenance = {key: value for key, value in version["provenance"].items()
                  if value is not None and key in PROVENANCE_KEYS and key != "settings"}
    table = ["| " + " | ".join(provenance) + " |", "|" + "---|" * len(provenance),
             "| " + " | ".join(_cell(value) for value in provenance.values()) + " |", ""]
    return "\n".join([
        f"**{version['tag']}**: config `{version['config_name']}`, split `{version['split']}`, "
        f"{version['num_rows']} rows, commit `{version['commit'][:12]}`", "",
        *(table if provenance else []),
        f"Load it: `load_dataset(\"{version['repo_id']}\", \"{version['config_name']}\", "
        f"split=\"{version['split']}\", revision=\"{version['tag']}\")`",
    ])


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


# ---- one version's rows


def load_version(repo_id: str, tag: str, *, endpoint: str | None = None,
                 token: str | None = None) -> Dataset:
    """The rows of version ``tag`` of ``repo_id`` (its config and split from the index).

    ``BrowseError`` when the repo or the tag is unknown. Kept in memory for the next call (see
    the module's limits).
    """
    import huggingface_hub.constants as hf_constants

    version = find_version(repo_id, tag, endpoint=endpoint, token=token)
    with hub_settings(endpoint, token):
        return _load_tagged(hf_constants.ENDPOINT, repo_id, tag, version["commit"],
                            version["config_name"], version["split"], token)


@functools.lru_cache(maxsize=_CACHED_VERSIONS)
def _load_tagged(endpoint: str, repo_id: str, tag: str, commit: str, config_name: str,
                 split: str, token: str | None) -> Dataset:
    # endpoint and commit only key the cache: hub_settings already points the clients there.
    from ica_hub.hub.versions import load_scored

    logger.debug("loading %s@%s (commit %s) from %s", repo_id, tag, commit[:8], endpoint)
    return load_scored(repo_id, version=tag, config_name=config_name, split=split, token=token)


def score_columns(dataset: Dataset) -> list[str]:
    """The float columns of ``dataset`` (scores, log-probs, signals), ``PREFERRED_SCORES``
    first. Integer columns (token counts) are not scores."""
    floats = [name for name, feature in dataset.features.items()
              if getattr(feature, "dtype", None) in _FLOAT_DTYPES]
    preferred = [name for name in PREFERRED_SCORES if name in floats]
    return preferred + [name for name in floats if name not in preferred]


def row_kinds(dataset: Dataset) -> list[str]:
    """The distinct values of the ``row_kind`` column, sorted; [] when there is none."""
    if ROW_KIND not in dataset.column_names:
        return []
    return sorted({kind for kind in dataset[ROW_KIND] if kind is not None})


def rows_table(dataset: Dataset, sort_by: str, *, descending: bool = True,
               kind: str | None = None, text_contains: str | None = None,
               max_rows: int = 200, preview_chars: int = 160) -> pd.DataFrame:
    """The first ``max_rows`` rows of ``dataset`` sorted by score column ``sort_by``.

    Rows with a null or NaN score come last; ties keep dataset order. ``kind`` keeps the rows
    of that ``row_kind`` (None or "": all). ``text_contains`` keeps rows whose text (any of
    ``TEXT_COLUMNS``) contains it, ignoring case. Columns: ``example_id``, ``row_kind``,
    ``sort_by``, ``ica_flag``, the text previews (cut to ``preview_chars`` characters), then
    the other score columns, each only when the dataset has it; scores are rounded to
    ``DISPLAY_DECIMALS`` decimals. ``BrowseError`` names an unknown column or kind.
    """
    scores = score_columns(dataset)
    _check_choice("sort_by", sort_by, scores, "score column")
    if kind:
        _check_choice("kind", kind, row_kinds(dataset), f"value of {ROW_KIND!r}")
    texts = [name for name in TEXT_COLUMNS if name in dataset.column_names]
    leading = [name for name in (EXAMPLE_ID, ROW_KIND, sort_by, ICA_FLAG)
               if name in dataset.column_names]
    shown = leading + texts + [name for name in scores if name != sort_by]

    frame = pd.DataFrame({name: dataset[name] for name in shown})
    full_texts = [frame[name].map(_as_text) for name in texts]
    keep = pd.Series(True, index=frame.index)
    if kind:
        keep &= frame[ROW_KIND] == kind
    if text_contains:
        needle = text_contains.lower()
        keep &= functools.reduce(lambda a, b: a | b,
                                 [text.str.lower().str.contains(needle, regex=False)
                                  for text in full_texts], pd.Series(False, index=frame.index))
    for name, text in zip(texts, full_texts, strict=True):
        frame[name] = text.map(lambda value: _preview(value, preview_chars))
    frame = frame[keep].sort_values(sort_by, ascending=not descending, na_position="last",
                                    kind="stable")
    return frame.head(max_rows).round(DISPLAY_DECIMALS).reset_index(drop=True)


def _check_choice(option: str, value: str, choices: list[str], what: str) -> None:
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise BrowseError(f"{option}={value!r} is not a {what} of this version: {hint}"
                      f"choose one of {choices}.")


def _as_text(value: Any) -> str:
    """A string, or a conversation (a list of ``{"role", "content"}``) as ``role: content``."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " | ".join(f"{turn.get('role', '?')}: {turn.get('content', '')}"
                          if isinstance(turn, dict) else str(turn) for turn in value)
    return str(value)


def _preview(text: str, max_chars: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= max_chars else flat[:max_chars - 1] + "…"


def score_summaries(dataset: Dataset) -> pd.DataFrame:
    """One row per score column: rows, scored, null (null or NaN), flagged (non-null
    ``ica_flag``, the same for every column; empty without that column), mean and the
    quantiles of ``card.QUANTILES``, rounded to ``DISPLAY_DECIMALS`` decimals."""
    rows = []
    for column in score_columns(dataset):
        summary = card_lib.score_summary(_as_ica_score(dataset, column))
        rows.append({"score": column, "rows": summary["num_rows"],
                     "scored": summary["num_scored"],
                     "null": summary["num_rows"] - summary["num_scored"],
                     "flagged": summary["num_flagged"], "mean": summary["mean"],
                     **summary["quantiles"]})
    quantiles = [f"p{round(q * 100)}" for q in card_lib.QUANTILES]
    columns = ["score", "rows", "scored", "null", "flagged", "mean", *quantiles]
    return pd.DataFrame(rows, columns=columns).round(DISPLAY_DECIMALS)


def _as_ica_score(dataset: Dataset, column: str) -> Dataset:
    """``column`` (and ``ica_flag``) with ``column`` named ``ica_score``: what
    ``card.score_summary`` summarises."""
    kept = dataset.select_columns([column] + ([ICA_FLAG] if ICA_FLAG in dataset.column_names
                                              else []))
    return kept if column == ICA_SCORE else kept.rename_column(column, ICA_SCORE)


def score_histogram(dataset: Dataset, column: str):
    """A matplotlib ``Figure``: the histogram of score column ``column`` (null and NaN left
    out; the bins follow the card's rule, sqrt of the count within 5..50)."""
    _check_choice("column", column, score_columns(dataset), "score column")
    num_scored = sum(v is not None and not math.isnan(v) for v in dataset[column])
    return card_lib.histogram_figure(
        dataset, column, f"{column}: {num_scored} of {dataset.num_rows} rows scored")


# ---- evaluation results


@dataclass(frozen=True)
class EvaluationTables:
    """The evaluation results filed under one version.

    ``models``: one row per (results file, model): test loss (nats per response token),
    perplexity, test rows, preference accuracy, pairs. ``scores``: one row per (results file,
    score): AUROC of clean over noisy rows and of target over off-domain rows, with the row
    counts behind each. ``note``: which files they come from, or how to file some.
    """

    models: pd.DataFrame
    scores: pd.DataFrame
    note: str


MODEL_TABLE_COLUMNS = ("results", "model", "test loss (nats/token)", "perplexity",
                       "test rows", "preference accuracy", "pairs")
SCORE_TABLE_COLUMNS = ("results", "score", "column", "AUROC clean>noisy, target rows",
                       "AUROC clean>noisy", "clean / noisy rows", "AUROC target>off-domain",
                       "target / off-domain rows")


def results_tables(repo_id: str, tag: str, *, endpoint: str | None = None,
                   token: str | None = None) -> EvaluationTables:
    """The results files under ``evaluations/<tag>/`` of ``repo_id`` as tables (empty, with a
    note saying how to file some, when there are none). A missing number (a section the
    evaluation did not run, an AUROC with one class) is NaN, which the Space shows empty.

    ``BrowseError`` when the repo or the tag is unknown.
    """
    from ica_hub.hub.results import load_results

    find_version(repo_id, tag, endpoint=endpoint, token=token)
    files = [entry for entry in load_results(repo_id, endpoint=endpoint, token=token)
             if entry["version_tag"] == tag]
    models = [row for entry in files for row in _model_rows(entry)]
    scores = [row for entry in files for row in _score_rows(entry)]
    if files:
        note = f"Evaluation results of {tag}: " + ", ".join(f"`{e['path']}`" for e in files)
    else:
        note = (f"No evaluation results are filed under {tag} yet: run `ica-hub eval` with "
                f"push.repo_id={repo_id} and push.revision={tag}.")
    return EvaluationTables(
        models=_table(models, MODEL_TABLE_COLUMNS), scores=_table(scores, SCORE_TABLE_COLUMNS),
        note=note)


def _table(rows: list[dict], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns)).round(DISPLAY_DECIMALS)


def _model_rows(entry: dict) -> list[dict]:
    rows = []
    for name, model in (entry["results"].get("models") or {}).items():
        loss, accuracy = model.get("response_loss") or {}, model.get("preference_accuracy") or {}
        rows.append(dict(zip(MODEL_TABLE_COLUMNS, (
            entry["name"], name, loss.get("loss"), loss.get("perplexity"),
            loss.get("num_examples"), accuracy.get("accuracy"), accuracy.get("num_pairs")),
            strict=True)))
    return rows


def _score_rows(entry: dict) -> list[dict]:
    rows = []
    for name, quality in (entry["results"].get("score_quality") or {}).items():
        clean, target = (quality.get("clean_over_noisy") or {},
                         quality.get("target_over_off_domain") or {})
        in_target = quality.get("clean_over_noisy_in_target") or {}  # older results lack it
        rows.append(dict(zip(SCORE_TABLE_COLUMNS, (
            entry["name"], name, quality.get("column"), in_target.get("auroc"),
            clean.get("auroc"), _counts(clean), target.get("auroc"), _counts(target)),
            strict=True)))
    return rows


def _counts(auroc: dict) -> str:
    if auroc.get("num_positive") is None:
        return ""
    return f"{auroc['num_positive']} / {auroc.get('num_negative')}"
