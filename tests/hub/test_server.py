"""The local Hub server, exercised through the real huggingface_hub client (and raw HTTP where
the client itself would refuse to send the request)."""

from __future__ import annotations

import base64
import json
import threading

import httpx
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationCopy,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

BLOB = bytes(range(256)) * 40  # 10240 bytes with a NUL byte: uploaded through LFS


def _make_repo(api: HfApi, repo_id: str, **kwargs) -> str:
    api.create_repo(repo_id, repo_type="dataset", **kwargs)
    api.create_commit(
        repo_id,
        [CommitOperationAdd("notes/hello.txt", b"hello world\n"),
         CommitOperationAdd("data/blob.bin", BLOB)],
        commit_message="first files", repo_type="dataset",
    )
    return repo_id


def _status(error: HfHubHTTPError) -> int:
    return error.response.status_code


def test_create_existing_repo_is_409_unless_exist_ok(repo_id):
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as caught:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=False)
    assert _status(caught.value) == 409
    assert api.create_repo(repo_id, repo_type="dataset", exist_ok=True).repo_id == repo_id
    assert api.repo_exists(repo_id, repo_type="dataset")
    assert api.file_exists(repo_id, ".gitattributes", repo_type="dataset")
    assert not api.revision_exists(repo_id, "nope", repo_type="dataset")
    assert api.whoami()["name"] == "local"
    api.delete_repo(repo_id, repo_type="dataset")
    assert not api.repo_exists(repo_id, repo_type="dataset")


def test_missing_repo_revision_and_file_raise_the_client_errors(repo_id):
    api = HfApi()
    _make_repo(api, repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("local/does-not-exist", repo_type="dataset")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "notes/hello.txt", repo_type="dataset", revision="bogus-rev")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_tree(repo_id, repo_type="dataset", revision="bogus-rev").__next__()
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "notes/missing.txt", repo_type="dataset")


def test_writes_need_a_write_token(repo_id, hub):
    anonymous, bogus = HfApi(token=False), HfApi(token="hf_not_a_token")
    for api in (anonymous, bogus):
        with pytest.raises(HfHubHTTPError) as caught:
            api.create_repo(repo_id, repo_type="dataset")
        assert _status(caught.value) == 401
        assert "token" in str(caught.value)
    _make_repo(HfApi(), repo_id)
    with pytest.raises(HfHubHTTPError) as caught:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id,
                              repo_type="dataset")
    assert _status(caught.value) == 401
    # raw commit without the client's preupload step: refused as well
    response = httpx.post(f"{hub.endpoint}/api/datasets/{repo_id}/commit/main",
                          content=b'{"key": "header", "value": {"summary": "x"}}\n')
    assert response.status_code == 401


def test_private_repo_is_invisible_without_token(repo_id):
    _make_repo(HfApi(), repo_id, private=True)
    anonymous = HfApi(token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.repo_info(repo_id, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, "notes/hello.txt", repo_type="dataset", token=False)
    assert HfApi().repo_info(repo_id, repo_type="dataset").private is True


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt", "/etc/passwd",
                                  "a//b.txt", ".git/config"])
def test_paths_escaping_the_repo_are_refused(repo_id, hub, path):
    _make_repo(HfApi(), repo_id)
    headers = {"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"}
    lines = [{"key": "header", "value": {"summary": "escape"}},
             {"key": "file", "value": {"path": path, "encoding": "base64",
                                       "content": base64.b64encode(b"x").decode()}}]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    response = httpx.post(f"{hub.endpoint}/api/datasets/{repo_id}/commit/main", content=body,
                          headers=headers)
    assert response.status_code == 400
    assert "Invalid path" in response.json()["error"]
    lines[1] = {"key": "lfsFile", "value": {"path": "ok.bin", "algo": "sha256",
                                            "oid": "../../tokens.json", "size": 1}}
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    response = httpx.post(f"{hub.endpoint}/api/datasets/{repo_id}/commit/main", content=body,
                          headers=headers)
    assert response.status_code == 400 and "Invalid object id" in response.json()["error"]
    encoded = path.replace("..", "%2E%2E")
    response = httpx.get(f"{hub.endpoint}/datasets/{repo_id}/resolve/main/{encoded}")
    assert response.status_code in (400, 404)  # 404: the router never matched a repo path
    assert not (hub.root / "escape.txt").exists()


def test_byte_ranges_head_and_lfs_headers(repo_id, hub):
    api = HfApi()
    _make_repo(api, repo_id)
    url = f"{hub.endpoint}/datasets/{repo_id}/resolve/main/data/blob.bin"
    part = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == BLOB[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(BLOB)}"
    assert httpx.get(url, headers={"Range": "bytes=-5"}).content == BLOB[-5:]
    assert httpx.get(url, headers={"Range": f"bytes={len(BLOB)}-"}).status_code == 416
    head = httpx.head(url)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(BLOB)
    assert int(head.headers["X-Linked-Size"]) == len(BLOB)
    assert head.headers["X-Repo-Commit"] == api.repo_info(repo_id, repo_type="dataset").sha
    assert head.headers["X-Linked-Etag"].strip('"') == api.get_paths_info(
        repo_id, ["data/blob.bin"], repo_type="dataset")[0].lfs.sha256
    with HfFileSystem().open(f"datasets/{repo_id}/data/blob.bin", "rb", block_size=64) as f:
        f.seek(1000)
        assert f.read(300) == BLOB[1000:1300]


def test_refs_tree_history_and_downloads(repo_id):
    api = HfApi()
    _make_repo(api, repo_id)
    first = api.repo_info(repo_id, repo_type="dataset").sha
    api.create_branch(repo_id, branch="dev", repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as caught:
        api.create_branch(repo_id, branch="dev", repo_type="dataset")
    assert _status(caught.value) == 409
    api.create_tag(repo_id, tag="v1", repo_type="dataset", revision=first)
    api.upload_file(path_or_fileobj=b"second\n", path_in_repo="notes/second.txt",
                    repo_id=repo_id, repo_type="dataset", revision="dev")
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", first)]

    tree = list(api.list_repo_tree(repo_id, repo_type="dataset", revision="dev",
                                   recursive=True, expand=True))
    assert {e.path for e in tree} >= {"notes", "data", "notes/second.txt", "data/blob.bin"}
    blob = next(e for e in tree if e.path == "data/blob.bin")
    assert blob.lfs is not None and blob.size == len(BLOB)
    assert blob.last_commit.oid == first
    top = [e.path for e in api.list_repo_tree(repo_id, repo_type="dataset", revision="v1")]
    assert "notes/hello.txt" not in top and "notes" in top

    commits = api.list_repo_commits(repo_id, repo_type="dataset", revision="dev")
    assert [c.title for c in commits[:2]] == ["Upload notes/second.txt with huggingface_hub",
                                              "first files"]
    local = snapshot_download(repo_id, repo_type="dataset", revision="v1")
    with open(f"{local}/data/blob.bin", "rb") as f:
        assert f.read() == BLOB

    # a branch name with a slash travels percent-encoded in one URL segment
    api.create_branch(repo_id, branch="feature/x", repo_type="dataset", revision="dev")
    with open(hf_hub_download(repo_id, "notes/second.txt", repo_type="dataset",
                              revision="feature/x")) as f:
        assert f.read() == "second\n"
    api.delete_branch(repo_id, branch="feature/x", repo_type="dataset")
    assert repo_id in {d.id for d in api.list_datasets()}

    api.delete_tag(repo_id, tag="v1", repo_type="dataset")
    api.delete_branch(repo_id, branch="dev", repo_type="dataset")
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    assert not refs.tags and [b.name for b in refs.branches] == ["main"]


def test_copy_and_delete_operations(repo_id):
    api = HfApi()
    _make_repo(api, repo_id)
    api.create_commit(
        repo_id,
        [CommitOperationCopy("data/blob.bin", "copies/blob.bin"),
         CommitOperationCopy("notes/hello.txt", "copies/hello.txt"),
         CommitOperationDelete("notes/")],
        commit_message="copy and delete", repo_type="dataset",
    )
    files = set(api.list_repo_files(repo_id, repo_type="dataset"))
    assert {"copies/blob.bin", "copies/hello.txt", "data/blob.bin"} <= files
    assert not any(f.startswith("notes/") for f in files)
    with open(hf_hub_download(repo_id, "copies/hello.txt", repo_type="dataset")) as f:
        assert f.read() == "hello world\n"
    with pytest.raises(EntryNotFoundError):
        api.delete_file("notes/hello.txt", repo_id, repo_type="dataset")


def test_stale_parent_commit_is_412_and_races_never_lose_a_commit(repo_id):
    api = HfApi()
    _make_repo(api, repo_id)
    parent = api.repo_info(repo_id, repo_type="dataset").sha
    results: dict[int, object] = {}

    def commit(i: int) -> None:
        try:
            results[i] = api.create_commit(
                repo_id, [CommitOperationAdd(f"race/{i}.txt", f"{i}\n".encode())],
                commit_message=f"race {i}", repo_type="dataset", parent_commit=parent,
            )
        except HfHubHTTPError as error:
            results[i] = error

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results.values() if not isinstance(r, Exception)]
    losers = [r for r in results.values() if isinstance(r, Exception)]
    assert len(winners) == 1
    assert all(_status(e) == 412 and "retry" in str(e) for e in losers)
    files = api.list_repo_files(repo_id, repo_type="dataset")
    assert sum(f.startswith("race/") for f in files) == 1


def test_datasets_push_twice_to_the_same_branch(repo_id):
    from datasets import load_dataset

    from .helpers import scored_rows

    HfApi().create_repo(repo_id, repo_type="dataset")
    HfApi().create_branch(repo_id, branch="scores", repo_type="dataset")
    scored_rows(3).push_to_hub(repo_id, revision="scores")
    scored_rows(2, offset=10).push_to_hub(repo_id, revision="scores")
    loaded = load_dataset(repo_id, split="train", revision="scores")
    assert loaded["example_id"] == ["v-10", "v-11"]


def test_cli_serve_runs_the_server(tmp_path):
    """The real entry point: ``python -m ica_hub.cli hub serve`` answers on its port."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "ica_hub.cli", "hub", "serve", "--port", str(port),
               "--root", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    response = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/ica-hub", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert response is not None and response.json()["server"] == "ica_hub"
        assert (tmp_path / "tokens.json").is_file()
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
    assert "HF_HUB_DISABLE_XET=1" in output
