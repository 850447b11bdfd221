"""Scored versions: push, tag, index, card merge, defaults, races, integrity, restart."""

from __future__ import annotations

import json
import threading

import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard, HfApi

from ica_hub.hub import card as card_lib
from ica_hub.hub import versions
from ica_hub.hub.local import LocalHub
from ica_hub.hub.versions import (
    VersionIntegrityError,
    content_hash,
    load_scored,
    push_scored,
    read_index,
    version_tag,
)

from .helpers import provenance, scored_rows


def _card_at(repo_id: str, revision: str) -> DatasetCard:
    path = HfApi().hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision)
    return DatasetCard.load(path)


def test_each_version_loads_its_own_rows_by_tag(repo_id):
    first = push_scored(scored_rows(4, tag="one"), repo_id, provenance(training_step=0))
    second = push_scored(scored_rows(3, tag="two"), repo_id, provenance(training_step=100))
    assert first.tag != second.tag and first.commit != second.commit
    assert load_scored(repo_id, first.tag)["example_id"] == [f"one-{i}" for i in range(4)]
    assert load_dataset(repo_id, split="train", revision=second.tag)["example_id"] == [
        f"two-{i}" for i in range(3)]
    assert load_scored(repo_id)["example_id"] == [f"two-{i}" for i in range(3)]  # newest
    index = read_index(repo_id)["versions"]
    assert [(v["tag"], v["commit"], v["num_rows"]) for v in index] == [
        (first.tag, first.commit, 4), (second.tag, second.commit, 3)]
    assert index[1]["provenance"]["training_step"] == 100
    assert index[1]["content_hash"] == content_hash(scored_rows(3, tag="two"))
    tags = {t.name: t.target_commit for t in HfApi().list_repo_refs(
        repo_id, repo_type="dataset").tags}
    assert tags == {first.tag: first.commit, second.tag: second.commit}


def test_fewer_rows_replace_the_split_and_the_card_sizes(repo_id):
    push_scored(scored_rows(5), repo_id, provenance())
    smaller = push_scored(scored_rows(4, offset=20), repo_id, provenance())
    assert load_dataset(repo_id, split="train").num_rows == 4
    assert load_scored(repo_id, smaller.tag).num_rows == 4
    card = _card_at(repo_id, smaller.tag)
    assert card_lib.split_sizes(card.data, "default") == {"train": 4}
    assert smaller.splits == {"train": 4}
    # the same through plain push_to_hub, which the card code must not disturb
    scored_rows(5).push_to_hub(repo_id + "-plain")
    scored_rows(4).push_to_hub(repo_id + "-plain")
    assert load_dataset(repo_id + "-plain", split="train").num_rows == 4


def test_card_merge_keeps_what_push_to_hub_wrote(repo_id):
    scored_rows(3, tag="plain").push_to_hub(repo_id)
    before = _card_at(repo_id, "main").data.to_dict()
    version = push_scored(scored_rows(2, tag="ica"), repo_id, provenance(),
                          config_name="scored")
    card = _card_at(repo_id, version.tag)
    configs = {c["config_name"]: c for c in card.data.to_dict()["configs"]}
    # push_to_hub's entry keeps its files and is now explicitly the one default
    assert configs["default"] == {**before["configs"][0], "default": True}
    assert "default" not in configs["scored"]
    assert configs["scored"]["data_files"] == [{"split": "train", "path": "scored/train-*"}]
    assert card_lib.split_sizes(card.data, "default") == {"train": 3}
    assert load_dataset(repo_id, split="train")["example_id"] == ["plain-0", "plain-1", "plain-2"]
    assert load_dataset(repo_id, "scored", split="train").num_rows == 2
    text = card.content
    assert "## Provenance" in text and "| model | HuggingFaceTB/SmolLM2-135M-Instruct |" in text
    assert "images/scored-train-ica_score.png" in text
    assert f'revision="{version.tag}"' in text
    png = HfApi().hf_hub_download(repo_id, "images/scored-train-ica_score.png",
                                  repo_type="dataset", revision=version.tag)
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # pushing again rewrites the generated block, not the text around it
    assert text.count(card_lib.BLOCK_BEGIN) == 1


def test_configs_made_default_in_turn_leave_exactly_one_default(repo_id):
    for config_name in ("alpha", "beta", "alpha"):
        rows = scored_rows(2, tag=config_name)
        push_scored(rows, repo_id, provenance(), config_name=config_name, make_default=True)
        card = _card_at(repo_id, "main")
        defaults = [c["config_name"] for c in card.data.to_dict()["configs"] if c.get("default")]
        assert defaults == [config_name]
        assert load_dataset(repo_id, split="train")["example_id"] == rows["example_id"]
    push_scored(scored_rows(2, tag="gamma"), repo_id, provenance(), config_name="gamma")
    assert card_lib.default_config(_card_at(repo_id, "main").data) == "alpha"  # None keeps it


def test_a_named_default_config_cannot_be_outranked(repo_id):
    push_scored(scored_rows(2), repo_id, provenance())
    with pytest.raises(ValueError, match="config named 'default'"):
        push_scored(scored_rows(2), repo_id, provenance(), config_name="other",
                    make_default=True)


@pytest.mark.parametrize("same_config", [True, False], ids=["same-config", "two-configs"])
def test_two_clients_pushing_at_once_both_get_their_own_version(repo_id, same_config):
    HfApi().create_repo(repo_id, repo_type="dataset")
    results: dict[str, object] = {}

    def push(name: str) -> None:
        config_name = "shared" if same_config else name
        try:
            results[name] = push_scored(scored_rows(3, tag=name), repo_id,
                                        provenance(scorer=f"ica/{name}"), config_name=config_name)
        except Exception as error:  # reported below with its type
            results[name] = error

    threads = [threading.Thread(target=push, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, versions.ScoredVersion) for r in results.values()), results
    for name, version in results.items():
        loaded = load_scored(repo_id, version.tag, config_name=version.config_name)
        assert loaded["example_id"] == [f"{name}-{i}" for i in range(3)]
    assert {v["tag"] for v in read_index(repo_id)["versions"]} == {
        r.tag for r in results.values()}
    configs = _card_at(repo_id, "main").data.to_dict()["configs"]
    expected = ["shared"] if same_config else ["left", "right"]
    assert sorted(c["config_name"] for c in configs) == expected


def test_a_mismatched_read_back_raises_and_creates_no_tag(repo_id, monkeypatch):
    real_load = versions.load_dataset
    monkeypatch.setattr(versions, "load_dataset",
                        lambda *args, **kwargs: real_load(*args, **kwargs).select([0, 1]))
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset")
    files_before = sorted(api.list_repo_files(repo_id, repo_type="dataset"))
    with pytest.raises(VersionIntegrityError, match="2 rows read back, 3 pushed"):
        push_scored(scored_rows(3), repo_id, provenance())
    assert api.list_repo_refs(repo_id, repo_type="dataset").tags == []
    assert read_index(repo_id)["versions"] == []
    assert sorted(api.list_repo_files(repo_id, repo_type="dataset")) == files_before
    assert api.list_repo_commits(repo_id, repo_type="dataset")[0].title.startswith("Revert")


def test_a_commit_landing_mid_push_is_merged_not_lost(repo_id, monkeypatch, caplog):
    push_scored(scored_rows(2, tag="base"), repo_id, provenance(), config_name="base")
    real_build_card, calls = card_lib.build_card, []

    def build_card_then_someone_commits(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # another client lands a commit between our merge and our commit
            HfApi().upload_file(path_or_fileobj=b"meanwhile\n", path_in_repo="meanwhile.txt",
                                repo_id=repo_id, repo_type="dataset")
        return real_build_card(*args, **kwargs)

    monkeypatch.setattr(card_lib, "build_card", build_card_then_someone_commits)
    with caplog.at_level("INFO", logger="ica_hub.hub.versions"):
        version = push_scored(scored_rows(3, tag="late"), repo_id, provenance(), config_name="late")
    assert len(calls) == 2 and "merging again" in caplog.text
    files = HfApi().list_repo_files(repo_id, repo_type="dataset", revision=version.tag)
    assert "meanwhile.txt" in files and "base/train-00000-of-00001.parquet" in files
    assert load_scored(repo_id, version.tag, config_name="late").num_rows == 3


def test_data_survives_a_server_restart(tmp_path, hub):
    import huggingface_hub.constants as hf_constants

    # explicit endpoint= and token= switch the clients for the call and switch them back
    with LocalHub(tmp_path / "root") as first:
        version = push_scored(scored_rows(3), "local/restart", provenance(),
                              endpoint=first.endpoint, token=first.token)
    assert hf_constants.ENDPOINT == hub.endpoint
    with LocalHub(tmp_path / "root") as second:
        assert second.token == first.token  # tokens.json survives too
        loaded = load_scored("local/restart", version.tag, endpoint=second.endpoint,
                             token=second.token)
        assert loaded["example_id"] == scored_rows(3)["example_id"]
        index = read_index("local/restart", endpoint=second.endpoint, token=second.token)
        assert index["versions"][0]["commit"] == version.commit


def test_bad_inputs_are_reported_all_at_once(repo_id):
    incomplete = provenance()
    del incomplete["model"], incomplete["k"]
    incomplete["colour"] = "blue"
    with pytest.raises(ValueError) as caught:
        push_scored(scored_rows(2), repo_id, incomplete)
    assert "['model', 'k']" in str(caught.value) and "['colour']" in str(caught.value)
    rows = scored_rows(2).rename_column("example_id", "id")
    with pytest.raises(ValueError, match="no 'example_id' column"):
        push_scored(rows, repo_id, provenance(), split="bad-split")


def test_version_tag_names_what_the_version_is():
    # golden value: changing the tag format changes every future version name
    tag = version_tag(provenance(training_step=250), "0123456789abcdef")
    assert tag == "ica-v1_smollm2-135m-instruct_k3_step250_20261203T164500Z_01234567"


def test_content_hash_ignores_row_order_but_not_values():
    # golden value of rows-sha256/v1: if it changes, old versions.json hashes stop matching,
    # so a new method needs a new CONTENT_HASH_METHOD name
    assert versions.CONTENT_HASH_METHOD == "rows-sha256/v1"
    assert content_hash(scored_rows(3)) == (
        "0dc573c3ee8ac2368b73024312ee8a5d70f290cf7c9a32700e614933cc8db880")
    rows = scored_rows(6)
    assert content_hash(rows) == content_hash(rows.shuffle(seed=0))
    changed = rows.map(lambda r: {"ica_score": 1.0} if r["example_id"] == "v-1" else {})
    assert content_hash(changed) != content_hash(rows)


def test_cli_push_finds_out_it_talks_to_a_local_hub(repo_id, hub, tmp_path):
    """The real entry point in a fresh process, with HF_ENDPOINT set but Xet not disabled:
    the toolkit must notice the local Hub and switch Xet off itself (hf_xet is installed)."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "scored"
    scored_rows(3).save_to_disk(str(folder))
    (folder / "provenance.json").write_text(json.dumps(provenance()))
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=hub.token, HF_HOME=str(tmp_path / "hf-home"))
    result = subprocess.run(
        [sys.executable, "-m", "ica_hub.cli", "push", str(folder), repo_id, "--config-name", "cli"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    assert printed["num_rows"] == 3
    assert load_scored(repo_id, printed["tag"], config_name="cli").num_rows == 3


def test_cli_token_prints_the_servers_write_token(hub, capsys):
    from ica_hub.cli import main

    assert main(["hub", "token", "--root", str(hub.root)]) == 0
    assert capsys.readouterr().out.strip() == hub.token


@pytest.mark.parametrize("problem", ["missing folder", "no namespace", "no provenance"])
def test_cli_push_names_a_bad_folder_or_repo_id_before_any_request(problem, tmp_path, capsys):
    from ica_hub.cli import main

    folder, repo_id = tmp_path / "scored", "org/name"
    if problem != "missing folder":
        scored_rows(2).save_to_disk(str(folder))
    if problem == "no namespace":
        (folder / "provenance.json").write_text(json.dumps(provenance()))
        repo_id = "name-only"
    assert main(["push", str(folder), repo_id, "--endpoint", "http://127.0.0.1:9"]) == 2
    message = capsys.readouterr().err
    expected = {"missing folder": "no dataset folder", "no namespace": "'namespace/name'",
                "no provenance": "no provenance file"}[problem]
    assert expected in message and "Traceback" not in message
