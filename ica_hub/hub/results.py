"""Evaluation results beside the scored versions they evaluate.

Results of one evaluation are one JSON file, ``evaluations/<version tag>/<name>.json``, committed
to the dataset repo's branch (``main``) in one commit. They are never added to the tagged commit
itself: a scored version's tag is immutable and keeps pointing at exactly the data that was
verified. Results that evaluate no particular version go under ``evaluations/untagged/``.
Pushing the same name for the same version again replaces the file; the repo's history keeps
the earlier one.

Files are strict JSON: NaN and infinities (an AUROC with one class, a win rate with no
verdict) are written as null, so that any JSON reader, the Space's included, can load them.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi

from ica_hub.hub.local import hub_settings

logger = logging.getLogger(__name__)

RESULTS_DIR = "evaluations"
UNTAGGED = "untagged"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def dumps_results(results: dict[str, Any]) -> str:
    """``results`` as indented strict JSON, non-finite floats written as null."""
    return json.dumps(_finite(results), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def results_path(version_tag: str | None, name: str) -> str:
    """Where results of ``name`` for ``version_tag`` live in the repo."""
    problems = [f"{what} {value!r}: use letters, digits, '_', '.' or '-' (no '/')"
                for what, value in (("name", name), ("version_tag", version_tag))
                if value is not None and not _NAME.fullmatch(value)]
    if problems:
        raise ValueError("Cannot name the results file:\n- " + "\n- ".join(problems))
    return f"{RESULTS_DIR}/{version_tag or UNTAGGED}/{name}.json"


def push_results(repo_id: str, results: dict[str, Any], *, version_tag: str | None, name: str,
                 endpoint: str | None = None, token: str | None = None,
                 branch: str = "main") -> str:
    """Commit ``results`` as ``evaluations/<version_tag or 'untagged'>/<name>.json`` to
    ``branch``; return that path. A ``version_tag`` must be a tag of the repo."""
    path = results_path(version_tag, name)
    with hub_settings(endpoint, token):
        api = HfApi(endpoint=endpoint, token=token)
        repo_id = api.create_repo(repo_id, repo_type="dataset", exist_ok=True).repo_id
        if version_tag is not None:
            _check_tag(api, repo_id, version_tag)
        api.create_commit(
            repo_id, [CommitOperationAdd(path, dumps_results(results).encode())],
            commit_message=f"Evaluation {name} of {version_tag or 'no tagged version'}",
            repo_type="dataset", revision=branch,
        )
    logger.debug("pushed results %s to %s@%s", path, repo_id, branch)
    return path


def _check_tag(api: HfApi, repo_id: str, version_tag: str) -> None:
    import difflib

    tags = [t.name for t in api.list_repo_refs(repo_id, repo_type="dataset").tags]
    if version_tag in tags:
        return
    close = difflib.get_close_matches(version_tag, tags, n=1)
    hint = f"did you mean {close[0]!r}?" if close else (
        f"its tags: {', '.join(tags)}" if tags else "it has no tags (push a scored version)")
    raise ValueError(f"version_tag {version_tag!r} is not a tag of {repo_id}: {hint} "
                     "(or give no version tag to file the results under 'untagged')")


def load_results(repo_id: str, revision: str = "main", *, endpoint: str | None = None,
                 token: str | None = None) -> list[dict[str, Any]]:
    """Every results file of the repo at ``revision``, in path order, as
    ``{"path", "version_tag" (None for untagged), "name", "results"}``."""
    with hub_settings(endpoint, token):
        api = HfApi(endpoint=endpoint, token=token)
        paths = sorted(p for p in api.list_repo_files(repo_id, repo_type="dataset",
                                                      revision=revision)
                       if p.startswith(RESULTS_DIR + "/") and p.endswith(".json"))
        loaded = []
        for path in paths:
            local = api.hf_hub_download(repo_id, path, repo_type="dataset", revision=revision)
            with open(local, encoding="utf-8") as handle:
                results = json.load(handle)
            folder = path.split("/")[1]
            loaded.append({"path": path, "version_tag": None if folder == UNTAGGED else folder,
                           "name": path.rsplit("/", 1)[-1].removesuffix(".json"),
                           "results": results})
    return loaded
