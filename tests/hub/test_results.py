"""Evaluation results beside scored versions: push, list, read back; tags stay where they were."""

from __future__ import annotations

import math

import pytest
from huggingface_hub import HfApi

from ica_hub.hub.results import load_results, push_results
from ica_hub.hub.versions import push_scored

from .helpers import provenance, scored_rows


def test_results_round_trip_beside_an_immutable_version(repo_id):
    version = push_scored(scored_rows(4), repo_id, provenance())
    results = {"models": {"base": {"loss": 2.5, "auroc": math.nan}}, "judge": None}
    path = push_results(repo_id, results, version_tag=version.tag, name="base-vs-sft")
    assert path == f"evaluations/{version.tag}/base-vs-sft.json"
    untagged = push_results(repo_id, {"models": {}}, version_tag=None, name="smoke")
    assert untagged == "evaluations/untagged/smoke.json"

    loaded = load_results(repo_id)
    assert [(r["path"], r["version_tag"], r["name"]) for r in loaded] == [
        (path, version.tag, "base-vs-sft"), (untagged, None, "smoke")]
    # NaN is stored as null: the files are strict JSON.
    assert loaded[0]["results"] == {"models": {"base": {"loss": 2.5, "auroc": None}},
                                    "judge": None}

    # The tag still points at the verified commit, which holds no results.
    api = HfApi()
    tags = {t.name: t.target_commit for t in api.list_repo_refs(
        repo_id, repo_type="dataset").tags}
    assert tags[version.tag] == version.commit
    assert load_results(repo_id, revision=version.tag) == []

    # Pushing the same name again replaces the file.
    push_results(repo_id, {"models": {"base": {"loss": 2.0}}}, version_tag=version.tag,
                 name="base-vs-sft")
    assert load_results(repo_id)[0]["results"] == {"models": {"base": {"loss": 2.0}}}


def test_a_wrong_tag_or_name_is_refused(repo_id):
    version = push_scored(scored_rows(3), repo_id, provenance())
    with pytest.raises(ValueError, match="did you mean"):
        push_results(repo_id, {}, version_tag=version.tag[:-1], name="x")
    with pytest.raises(ValueError, match="name 'a/b'"):
        push_results(repo_id, {}, version_tag=None, name="a/b")
    assert load_results(repo_id) == []
