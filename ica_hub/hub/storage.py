"""Git-like storage for the local Hub: content-addressed blobs, immutable commits, one refs file.

Layout under the root folder::

    tokens.json                          accepted tokens (see ``ica_hub.hub.auth``)
    blobs/ab/abcdef...                   file contents, named by their sha256
    tmp/                                 uploads in progress (same disk, so os.replace is atomic)
    datasets/<namespace>/<name>/
        repo.json                        creation date and visibility
        refs.json                        {"branches": {name: commit}, "tags": {name: commit}}
        commits/<commit id>.json         one immutable commit: parents, message, full tree snapshot
        lock                             flock target: serialises every ref update of this repo

A commit stores the whole tree (path -> blob sha256, size, git oid, lfs flag), so reading any
revision never walks history. Commits are written before the ref that points at them, and refs
are replaced atomically (temp file + ``os.replace``) while the repo lock is held, so a crash or a
concurrent push can leave an unreferenced commit file behind but never a half-written version.

Limits: one server process per root (the flock also guards several processes on one machine,
but not a network file system); no pull requests; dataset repos only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)

# Files stored through LFS: the datasets library deletes each parquet shard right after its
# pre-upload, so binary data must be uploaded before the commit, which only LFS does.
LFS_SUFFIXES = (
    ".parquet", ".arrow", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".bin", ".safetensors",
    ".pt", ".pth", ".npy", ".npz", ".zip", ".gz", ".zst", ".tar", ".gguf", ".pdf", ".wav",
    ".mp3", ".lance",
)
LFS_MIN_SIZE_BYTES = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n"
                        for suffix in LFS_SUFFIXES)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class HubError(Exception):
    """An error the server reports to the client: HTTP status, Hub error code, message."""

    def __init__(self, status: int, message: str, error_code: str | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.extra = extra or {}  # more fields of the JSON body


def repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository {repo_id!r} not found (or private).", "RepoNotFound")


def revision_not_found(repo_id: str, revision: str) -> HubError:
    return HubError(404, f"Revision {revision!r} not found in {repo_id!r}.", "RevisionNotFound")


def entry_not_found(repo_id: str, revision: str, path: str) -> HubError:
    message = f"Entry {path!r} not found in {repo_id!r} at {revision!r}."
    return HubError(404, message, "EntryNotFound")


def check_repo_path(path: str) -> str:
    """Return ``path`` if it stays inside the repo; raise a 400 naming the problem otherwise."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..", ".git") for part in parts)
    ):
        raise HubError(
            400,
            f"Invalid path {path!r}: paths are relative, use '/' between non-empty parts, and "
            "may not contain '.', '..', '.git', a backslash or a NUL byte.",
        )
    return path


def check_ref_name(name: str, kind: str) -> str:
    bad_shape = ".." in name or "//" in name or name.endswith((".lock", "/", "."))
    if not _REF_RE.match(name) or bad_shape:
        raise HubError(
            400,
            f"Invalid {kind} name {name!r}: use letters, digits, '.', '_', '-' (and '/' inside), "
            "no '..', not ending in '.lock'.",
        )
    return name


def git_blob_oid(content: bytes) -> str:
    """The sha1 git gives a blob: what the Hub reports as ``oid`` for regular files."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    return text.encode()


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as tmp:
        json.dump(data, tmp, indent=1, sort_keys=True)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp_name, path)


@dataclass(frozen=True)
class Entry:
    """One file of a commit's tree."""

    sha256: str
    size: int
    lfs: bool
    oid: str  # git oid: of the content (regular file) or of the LFS pointer (LFS file)

    @classmethod
    def from_dict(cls, data: dict) -> "Entry":
        return cls(data["sha256"], data["size"], data["lfs"], data["oid"])

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "size": self.size, "lfs": self.lfs, "oid": self.oid}


@dataclass(frozen=True)
class Commit:
    id: str
    parents: list[str]
    title: str
    message: str
    author: str
    date: str
    tree: dict[str, Entry]

    @classmethod
    def from_dict(cls, data: dict) -> "Commit":
        tree = {path: Entry.from_dict(entry) for path, entry in data["tree"].items()}
        return cls(data["id"], data["parents"], data["title"], data["message"], data["author"],
                   data["date"], tree)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "parents": self.parents, "title": self.title, "message": self.message,
            "author": self.author, "date": self.date,
            "tree": {path: entry.to_dict() for path, entry in sorted(self.tree.items())},
        }


class Store:
    """All repos under one root. Thread-safe and process-safe for writes (per-repo flock)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        for sub in ("blobs", "tmp", "datasets"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---- blobs
    def blob_path(self, sha256: str) -> Path:
        if not _SHA256_RE.match(sha256):  # the id becomes a file name: never trust its shape
            raise HubError(400, f"Invalid object id {sha256!r}: expected 64 lowercase hex digits "
                                "(a sha256).")
        return self.root / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_bytes(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        if not self.has_blob(sha256):
            fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp")
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(content)
            self._install_blob(Path(tmp_name), sha256)
        return sha256

    def new_upload(self) -> tuple[object, Path]:
        """A temp file on the blob disk for an upload in progress: (open binary file, its path)."""
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp")
        return os.fdopen(fd, "wb"), Path(tmp_name)

    def install_upload(self, tmp_path: Path, sha256: str, size: int, expected_sha256: str,
                       expected_size: int) -> None:
        """Keep an upload only if it hashes to what the LFS batch call announced."""
        try:
            if sha256 != expected_sha256 or size != expected_size:
                raise HubError(
                    400,
                    f"Upload does not match its announced object: got sha256 {sha256} and {size} "
                    f"bytes, expected {expected_sha256} and {expected_size} bytes.",
                )
            self._install_blob(tmp_path, expected_sha256)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)

    def _install_blob(self, tmp_path: Path, sha256: str) -> None:
        target = self.blob_path(sha256)
        target.parent.mkdir(exist_ok=True)
        os.replace(tmp_path, target)

    def entry_for(self, sha256: str, lfs: bool) -> Entry:
        size = self.blob_path(sha256).stat().st_size
        if lfs:
            oid = git_blob_oid(lfs_pointer(sha256, size))
        else:
            oid = git_blob_oid(self.blob_path(sha256).read_bytes())
        return Entry(sha256=sha256, size=size, lfs=lfs, oid=oid)

    # ---- repos
    def repo_dir(self, repo_id: str) -> Path:
        namespace, _, name = repo_id.partition("/")
        if not (_NAME_RE.match(namespace) and _NAME_RE.match(name)) or ".." in repo_id:
            raise HubError(
                400,
                f"Invalid repo id {repo_id!r}: expected 'namespace/name' made of letters, digits, "
                "'.', '_' and '-'.",
            )
        return self.root / "datasets" / namespace / name

    def exists(self, repo_id: str) -> bool:
        return (self.repo_dir(repo_id) / "repo.json").is_file()

    def repo_meta(self, repo_id: str) -> dict:
        path = self.repo_dir(repo_id) / "repo.json"
        if not path.is_file():
            raise repo_not_found(repo_id)
        return json.loads(path.read_text())

    def list_repos(self) -> list[str]:
        return sorted(
            f"{path.parent.parent.name}/{path.parent.name}"
            for path in (self.root / "datasets").glob("*/*/repo.json")
        )

    @contextlib.contextmanager
    def locked(self, repo_id: str) -> Iterator[None]:
        lock_path = self.repo_dir(repo_id) / "lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def create_repo(self, repo_id: str, *, private: bool, author: str) -> None:
        with self.locked(repo_id):
            if self.exists(repo_id):
                raise HubError(409, f"You already created this dataset repo: {repo_id!r}.")
            initial = self._write_commit(
                repo_id, parents=[], title="initial commit", message="", author=author,
                tree={".gitattributes": self.entry_for(self.put_bytes(GITATTRIBUTES.encode()),
                                                       lfs=False)},
            )
            write_json_atomic(self.repo_dir(repo_id) / "refs.json",
                              {"branches": {"main": initial.id}, "tags": {}})
            write_json_atomic(self.repo_dir(repo_id) / "repo.json",
                              {"private": private, "created_at": now_iso()})

    def delete_repo(self, repo_id: str) -> None:
        with self.locked(repo_id):
            if not self.exists(repo_id):
                raise repo_not_found(repo_id)
            # Rename first so that readers never see a half-deleted repo.
            trash = self.root / "tmp" / f"deleted-{os.getpid()}-{now_iso()}"
            os.replace(self.repo_dir(repo_id), trash)
            shutil.rmtree(trash, ignore_errors=True)

    # ---- refs and commits
    def refs(self, repo_id: str) -> dict:
        self.repo_meta(repo_id)
        return json.loads((self.repo_dir(repo_id) / "refs.json").read_text())

    def commit(self, repo_id: str, commit_id: str) -> Commit:
        path = self.repo_dir(repo_id) / "commits" / f"{commit_id}.json"
        return Commit.from_dict(json.loads(path.read_text()))

    def resolve(self, repo_id: str, revision: str) -> Commit:
        """Branch, tag (optionally as refs/heads/..., refs/tags/...) or full commit id."""
        refs = self.refs(repo_id)
        name = revision
        for prefix, kind in (("refs/heads/", "branches"), ("refs/tags/", "tags")):
            if name.startswith(prefix) and name[len(prefix):] in refs[kind]:
                return self.commit(repo_id, refs[kind][name[len(prefix):]])
        if name in refs["branches"]:
            return self.commit(repo_id, refs["branches"][name])
        if name in refs["tags"]:
            return self.commit(repo_id, refs["tags"][name])
        commit_file = self.repo_dir(repo_id) / "commits" / f"{name}.json"
        if _COMMIT_RE.match(name) and commit_file.is_file():
            return self.commit(repo_id, name)
        raise revision_not_found(repo_id, revision)

    def history(self, repo_id: str, revision: str) -> list[Commit]:
        """Commits reachable from ``revision``, newest first (first-parent chain)."""
        commit = self.resolve(repo_id, revision)
        chain = [commit]
        while commit.parents:
            commit = self.commit(repo_id, commit.parents[0])
            chain.append(commit)
        return chain

    def _write_commit(self, repo_id: str, *, parents: list[str], title: str, message: str,
                      author: str, tree: dict[str, Entry]) -> Commit:
        body = {
            "parents": parents, "title": title, "message": message, "author": author,
            "date": now_iso(),
            "tree": {path: entry.to_dict() for path, entry in sorted(tree.items())},
        }
        commit_id = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        commit = Commit.from_dict({"id": commit_id, **body})
        commit_path = self.repo_dir(repo_id) / "commits" / f"{commit_id}.json"
        write_json_atomic(commit_path, commit.to_dict())
        return commit

    def commit_changes(
        self, repo_id: str, branch: str, *, title: str, message: str, author: str,
        parent_commit: str | None, apply: Callable[[dict[str, Entry]], None],
    ) -> Commit:
        """Build a new commit on ``branch`` from its head tree, under the repo lock.

        ``apply(tree)`` edits a copy of the head tree in place (and may raise HubError). A stale
        ``parent_commit`` gives 412, which the client reports as a retryable conflict.
        """
        with self.locked(repo_id):
            refs = self.refs(repo_id)
            if branch not in refs["branches"]:
                if branch in refs["tags"]:
                    raise HubError(400, f"Cannot commit to tag {branch!r}: tags are immutable; "
                                        "commit to a branch instead.")
                raise revision_not_found(repo_id, branch)
            head = self.commit(repo_id, refs["branches"][branch])
            if parent_commit is not None and parent_commit != head.id:
                raise HubError(
                    412,
                    f"A commit has happened since. Parent commit {parent_commit} is not the head "
                    f"of {branch!r} ({head.id}); fetch the new head and retry.",
                )
            tree = dict(head.tree)
            apply(tree)
            commit = self._write_commit(repo_id, parents=[head.id], title=title, message=message,
                                        author=author, tree=tree)
            refs["branches"][branch] = commit.id
            write_json_atomic(self.repo_dir(repo_id) / "refs.json", refs)
            return commit

    def create_ref(self, repo_id: str, kind: str, name: str, revision: str) -> str:
        label = "branch" if kind == "branches" else "tag"
        check_ref_name(name, label)
        with self.locked(repo_id):
            refs = self.refs(repo_id)
            if name in refs[kind]:
                raise HubError(409, f"The {label} {name!r} already exists in {repo_id!r}.")
            target = self.resolve(repo_id, revision).id
            refs[kind][name] = target
            write_json_atomic(self.repo_dir(repo_id) / "refs.json", refs)
            return target

    def delete_ref(self, repo_id: str, kind: str, name: str) -> None:
        label = "branch" if kind == "branches" else "tag"
        with self.locked(repo_id):
            refs = self.refs(repo_id)
            if name not in refs[kind]:
                raise revision_not_found(repo_id, name)
            if kind == "branches" and name == "main":
                raise HubError(403, "The 'main' branch cannot be deleted.")
            del refs[kind][name]
            write_json_atomic(self.repo_dir(repo_id) / "refs.json", refs)
            logger.debug("deleted %s %s in %s", label, name, repo_id)
