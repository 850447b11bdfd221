"""A Hub-compatible HTTP server for dataset repos, spoken to by the real huggingface_hub client.

It serves the routes that ``HfApi``, ``hf_hub_download``, ``snapshot_download``, ``HfFileSystem``
and ``datasets`` (``push_to_hub``, ``load_dataset``) call for dataset repos, with the JSON shapes
and ``X-Error-Code`` headers those clients parse. Storage is ``ica_hub.hub.storage``.

Uploads: small text files travel inside the commit ("regular"); binary files and files over
10 MB go through the LFS batch API first ("lfs"), which ``push_to_hub`` needs because it deletes
each parquet shard right after pre-uploading it. The server does not speak Xet: clients must set
``HF_HUB_DISABLE_XET=1`` (``ica_hub.hub.local.use_hub`` does).

Auth: reads of public repos are open; private repos and every write need a token listed in
``<root>/tokens.json``. Revisions and paths arrive percent-encoded (``refs%2Fpr%2F1``), so routes
that take them re-split the raw request path instead of trusting the decoded one.

Limits: dataset repos only (model and space routes answer 404); no pull requests, no Xet, no
multipart LFS, no pagination (every listing comes in one page).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from typing import Callable
from urllib.parse import parse_qs, unquote

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ica_hub import __version__
from ica_hub.hub.auth import load_tokens
from ica_hub.hub.local import SERVER_ID_ROUTE
from ica_hub.hub.storage import (
    LFS_MIN_SIZE_BYTES,
    LFS_SUFFIXES,
    Commit,
    Entry,
    HubError,
    Store,
    check_repo_path,
    entry_not_found,
    lfs_pointer,
    repo_not_found,
)

logger = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 1024 * 1024


def _error_response(error: HubError) -> JSONResponse:
    headers = {"X-Error-Message": error.message.replace("\n", " ")}
    if error.error_code:
        headers["X-Error-Code"] = error.error_code
    body = {**error.extra, "error": error.message}
    return JSONResponse(body, status_code=error.status, headers=headers)


def _raw_segments(request: Request) -> list[str]:
    """The request path split on '/', each part decoded once (so '%2F' stays inside its part)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return [unquote(part) for part in raw.decode("latin-1").split("?")[0].split("/")[1:]]


def _repo_id_from_body(body: dict, user: str) -> str:
    # create/delete bodies carry the namespace as "organization"; none means the token's user
    return f"{body.get('organization') or user}/{body['name']}"


def _upload_mode(path: str, size: int, sample: bytes) -> str:
    if path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE_BYTES or b"\x00" in sample:
        return "lfs"
    return "regular"


class HubApp:
    """Route handlers over one ``Store``; ``create_app`` wires them to URLs."""

    def __init__(self, root: str):
        self.store = Store(root)
        self.root = root
        # Signs LFS upload URLs: the client PUTs to them without an Authorization header.
        self._upload_secret = secrets.token_bytes(32)

    # ---- auth
    def user_for(self, request: Request) -> dict | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        return load_tokens(self.root).get(header[7:].strip())

    def _require_write(self, request: Request) -> str:
        user = self.user_for(request)
        if user is not None and user.get("role") != "write":
            raise HubError(403, "This token may read but not write; use a token whose role is "
                                "'write' in tokens.json.")
        if user is None:
            raise HubError(
                401,
                "Invalid credentials in Authorization header: writing needs a write token of this "
                "server (print one with `ica-hub hub token --root ROOT`; pass it as --token to "
                "`ica-hub push`, token= in Python, or the HF_TOKEN environment variable).",
            )
        return user["user"]

    def check_visible(self, request: Request, repo_id: str) -> dict:
        meta = self.store.repo_meta(repo_id)
        if meta["private"] and self.user_for(request) is None:
            raise repo_not_found(repo_id)
        return meta

    # ---- JSON shapes
    @staticmethod
    def _file_json(path: str, entry: Entry) -> dict:
        data = {"type": "file", "path": path, "size": entry.size, "oid": entry.oid}
        if entry.lfs:
            data["lfs"] = {"oid": entry.sha256, "size": entry.size,
                           "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        return data

    @staticmethod
    def _folder_json(path: str, commit: Commit) -> dict:
        # Like a git tree id: depends on the folder's content only, not on the commit.
        listing = "".join(f"{p} {e.oid}\n" for p, e in sorted(commit.tree.items())
                          if p.startswith(path + "/"))
        return {"type": "directory", "path": path,
                "oid": hashlib.sha1(listing.encode()).hexdigest()}

    def _last_commit_json(self, repo_id: str, head: Commit, path: str) -> dict:
        """The newest commit that changed ``path`` (file or folder), walking first parents."""

        def snapshot(commit: Commit) -> dict:
            return {p: e for p, e in commit.tree.items() if p == path or p.startswith(path + "/")}

        current, last = snapshot(head), head
        commit = head
        while commit.parents:
            parent = self.store.commit(repo_id, commit.parents[0])
            if snapshot(parent) != current:
                break
            last, commit = parent, parent
        return {"id": last.id, "title": last.title, "date": last.date}

    def _entries(self, repo_id: str, commit: Commit, folder: str, recursive: bool,
                 expand: bool) -> list[dict]:
        prefix = folder + "/" if folder else ""
        files, folders = [], set()
        for path, entry in sorted(commit.tree.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):].split("/")
            for depth in range(1, len(rest)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                files.append(self._file_json(path, entry))
        if folder and not files and not folders:
            raise entry_not_found(repo_id, commit.id, folder)
        out = [self._folder_json(path, commit) for path in sorted(folders)] + files
        if expand:
            for item in out:
                item["lastCommit"] = self._last_commit_json(repo_id, commit, item["path"])
        return out

    def info_json(self, request: Request, repo_id: str, commit: Commit, blobs: bool) -> dict:
        meta = self.store.repo_meta(repo_id)
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size,
                                      "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sibling)
        card_data = None
        if "README.md" in commit.tree:
            card_data = _front_matter(self.store.blob_path(commit.tree["README.md"].sha256)
                                      .read_text(errors="replace"))
        namespace = repo_id.split("/")[0]
        return {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
            "author": namespace, "sha": commit.id, "private": meta["private"],
            "createdAt": meta["created_at"], "lastModified": commit.date, "disabled": False,
            "gated": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "cardData": card_data, "usedStorage": sum(e.size for e in commit.tree.values()),
        }

    # ---- repo routes
    def whoami(self, request: Request) -> dict:
        user = self.user_for(request)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header: unknown token.")
        return {"type": "user", "id": user["user"], "name": user["user"], "fullname": user["user"],
                "orgs": [], "auth": {"type": "access_token", "accessToken": {
                    "displayName": "local", "role": user.get("role", "read")}}}

    def create_repo(self, request: Request, body: dict) -> dict:
        user = self._require_write(request)
        repo_type = body.get("type") or "model"
        if repo_type != "dataset":
            raise HubError(400, f"This server hosts dataset repos only, got type={repo_type!r}; "
                                "pass repo_type='dataset'.")
        repo_id = _repo_id_from_body(body, user)
        private = body.get("visibility") == "private" or bool(body.get("private"))
        url = f"{request.base_url}datasets/{repo_id}"
        try:
            self.store.create_repo(repo_id, private=private, author=user)
        except HubError as error:
            error.extra["url"] = url  # the client reads it when create_repo(exist_ok=True)
            raise
        return {"url": url, "name": repo_id, "id": repo_id}

    def delete_repo(self, request: Request, body: dict) -> dict:
        user = self._require_write(request)
        self.store.delete_repo(_repo_id_from_body(body, user))
        return {}

    def dispatch(self, request: Request, repo_id: str, action: str, rest: list[str]):
        """Dispatch ``/api/datasets/{repo_id}/{action}/...`` by action and HTTP method."""
        self.check_visible(request, repo_id)
        handler: Callable | None = {
            ("GET", "revision"): self._info_at, ("GET", "refs"): self._refs,
            ("GET", "tree"): self._tree, ("GET", "commits"): self._commits,
            ("POST", "paths-info"): self._paths_info, ("POST", "preupload"): self._preupload,
            ("POST", "commit"): self._commit, ("POST", "branch"): self._create_branch,
            ("DELETE", "branch"): self._delete_branch, ("POST", "tag"): self._create_tag,
            ("DELETE", "tag"): self._delete_tag,
        }.get((request.method, action))
        if handler is None or not rest:
            raise HubError(404, f"No route {request.method} /api/datasets/{repo_id}/{action}.")
        return handler(request, repo_id, rest)

    async def _info_at(self, request, repo_id, rest):
        commit = self.store.resolve(repo_id, "/".join(rest))
        return self.info_json(request, repo_id, commit, "blobs" in request.query_params)

    async def _refs(self, request, repo_id, rest):
        refs = self.store.refs(repo_id)

        def refs_json(kind: str, prefix: str) -> list[dict]:
            return [{"name": name, "ref": f"refs/{prefix}/{name}", "targetCommit": target}
                    for name, target in sorted(refs[kind].items())]

        return {"branches": refs_json("branches", "heads"), "tags": refs_json("tags", "tags"),
                "converts": [], "pullRequests": []}

    async def _tree(self, request, repo_id, rest):
        commit = self.store.resolve(repo_id, rest[0])
        folder = "/".join(rest[1:]).strip("/")
        if folder:
            check_repo_path(folder)
        recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
        expand = request.query_params.get("expand", "").lower() in ("1", "true")
        return self._entries(repo_id, commit, folder, recursive, expand)

    async def _commits(self, request, repo_id, rest):
        return [{"id": c.id, "title": c.title, "message": c.message, "date": c.date,
                 "authors": [{"user": c.author}]}
                for c in self.store.history(repo_id, "/".join(rest))]

    async def _paths_info(self, request, repo_id, rest):
        commit = self.store.resolve(repo_id, "/".join(rest))
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            form = json.loads(raw or b"{}")
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = parse_qs(raw.decode())
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        out = []
        for path in paths:
            path = check_repo_path(path.strip("/"))
            if path in commit.tree:
                item = self._file_json(path, commit.tree[path])
            elif any(p.startswith(path + "/") for p in commit.tree):
                item = self._folder_json(path, commit)
            else:
                continue
            if expand:
                item["lastCommit"] = self._last_commit_json(repo_id, commit, path)
            out.append(item)
        return out

    async def _preupload(self, request, repo_id, rest):
        self._require_write(request)
        commit = self.store.resolve(repo_id, "/".join(rest))
        files = []
        for item in (await request.json())["files"]:
            path = check_repo_path(item["path"])
            mode = _upload_mode(path, item["size"], base64.b64decode(item.get("sample", "")))
            existing = commit.tree.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if mode == "lfs" else existing.oid
            files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": files, "commitOid": commit.id}

    async def _commit(self, request, repo_id, rest):
        user = self._require_write(request)
        if request.query_params.get("create_pr") in ("1", "true"):
            raise HubError(400, "Pull requests are not supported by the local Hub; commit to a "
                                "branch (create_pr=False).")
        branch = "/".join(rest)
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a 'header' line (NDJSON).")
        header, operations = lines[0]["value"], lines[1:]
        # Store regular contents before taking the lock: the lock covers only the ref update.
        staged = [self._stage_operation(repo_id, op) for op in operations]

        def apply(tree: dict[str, Entry]) -> None:
            for kind, path, entry in staged:
                if kind == "add":
                    tree[path] = entry
                elif kind == "delete_file":
                    if path not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {path!r}.",
                                       "EntryNotFound")
                    del tree[path]
                else:  # delete_folder
                    doomed = [p for p in tree if p.startswith(path.rstrip("/") + "/")]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path!r}.",
                                       "EntryNotFound")
                    for doomed_path in doomed:
                        del tree[doomed_path]

        commit = self.store.commit_changes(
            repo_id, branch, title=header.get("summary") or "commit",
            message=header.get("description") or "", author=user,
            parent_commit=header.get("parentCommit"), apply=apply,
        )
        return {"commitUrl": f"{request.base_url}datasets/{repo_id}/commit/{commit.id}",
                "commitOid": commit.id, "pullRequestUrl": None, "success": True}

    def _stage_operation(self, repo_id: str, op: dict) -> tuple[str, str, Entry | None]:
        key, value = op.get("key"), op.get("value", {})
        path = check_repo_path(str(value.get("path", "")).rstrip("/") if key == "deletedFolder"
                               else str(value.get("path", "")))
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path!r}.")
            sha256 = self.store.put_bytes(base64.b64decode(value["content"]))
            return "add", path, self.store.entry_for(sha256, lfs=False)
        if key == "lfsFile":
            sha256 = value["oid"]
            if not self.store.has_blob(sha256, value.get("size")):
                raise HubError(400, f"LFS object {sha256} for {path!r} was never uploaded; upload "
                                    "it through the LFS batch API before committing.")
            return "add", path, self.store.entry_for(sha256, lfs=True)
        if key == "deletedFile":
            return "delete_file", path, None
        if key == "deletedFolder":
            return "delete_folder", path, None
        raise HubError(400, f"Unknown commit operation {key!r}.")

    async def _create_branch(self, request, repo_id, rest):
        self._require_write(request)
        body = json.loads(await request.body() or b"{}")
        self.store.create_ref(repo_id, "branches", "/".join(rest),
                              body.get("startingPoint") or "main")
        return {}

    async def _delete_branch(self, request, repo_id, rest):
        self._require_write(request)
        self.store.delete_ref(repo_id, "branches", "/".join(rest))
        return {}

    async def _create_tag(self, request, repo_id, rest):
        self._require_write(request)
        body = await request.json()
        self.store.create_ref(repo_id, "tags", body["tag"], "/".join(rest))
        return {}

    async def _delete_tag(self, request, repo_id, rest):
        self._require_write(request)
        self.store.delete_ref(repo_id, "tags", "/".join(rest))
        return {}

    # ---- LFS
    def _upload_signature(self, repo_id: str, oid: str, size: int) -> str:
        message = f"{repo_id}:{oid}:{size}".encode()
        return hmac.new(self._upload_secret, message, hashlib.sha256).hexdigest()

    async def lfs_batch(self, request: Request, repo_id: str) -> dict:
        self._require_write(request)
        self.check_visible(request, repo_id)
        body = await request.json()
        if body.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is served; downloads go through "
                                "/resolve/.")
        base = f"{request.base_url}datasets/{repo_id}.git/info/lfs"
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item = {"oid": oid, "size": size, "authenticated": True}
            if not self.store.has_blob(oid, size):
                signature = self._upload_signature(repo_id, oid, size)
                item["actions"] = {
                    "upload": {"href": f"{base}/upload/{oid}/{size}/{signature}"},
                    "verify": {"href": f"{base}/verify"},
                }
            objects.append(item)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    async def lfs_upload(self, request: Request, repo_id: str, oid: str, size: int,
                         signature: str) -> dict:
        expected = self._upload_signature(repo_id, oid, size)
        if not hmac.compare_digest(expected, signature):
            raise HubError(403, "Invalid LFS upload URL signature; ask the batch API for a new "
                                "one.")
        digest, num_bytes = hashlib.sha256(), 0
        tmp, tmp_path = self.store.new_upload()
        with tmp:
            async for chunk in request.stream():
                digest.update(chunk)
                num_bytes += len(chunk)
                tmp.write(chunk)
        self.store.install_upload(tmp_path, digest.hexdigest(), num_bytes, oid, size)
        return {}

    async def lfs_verify(self, request: Request, repo_id: str) -> dict:
        self._require_write(request)
        body = await request.json()
        if not self.store.has_blob(body["oid"], int(body["size"])):
            raise HubError(404, f"LFS object {body['oid']} ({body['size']} bytes) is not stored.")
        return {}

    # ---- downloads
    def resolve_file(self, request: Request, repo_id: str, revision: str, path: str) -> Response:
        self.check_visible(request, repo_id)
        commit = self.store.resolve(repo_id, revision)
        check_repo_path(path)
        entry = commit.tree.get(path)
        if entry is None:
            raise entry_not_found(repo_id, revision, path)
        etag = f'"{entry.sha256 if entry.lfs else entry.oid}"'
        headers = {"X-Repo-Commit": commit.id, "ETag": etag, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(entry.size)})
        start, end, status = 0, entry.size - 1, 200
        range_header = request.headers.get("range")
        if range_header:
            start, end = _parse_range(range_header, entry.size)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = max(end - start + 1, 0)
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        blob_path = self.store.blob_path(entry.sha256)

        def read_range():
            with open(blob_path, "rb") as blob:
                blob.seek(start)
                left = length
                while left > 0:
                    chunk = blob.read(min(_READ_CHUNK_BYTES, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    yield chunk

        return StreamingResponse(read_range(), status_code=status, headers=headers)


def _parse_range(header: str, size: int) -> tuple[int, int]:
    """One ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range, clipped to the file; else 416."""
    unit, _, spec = header.partition("=")
    try:
        if unit.strip() != "bytes" or "," in spec:
            raise ValueError
        first, _, last = spec.strip().partition("-")
        if first == "":
            start, end = max(size - int(last), 0), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        if start > end or start >= size:
            raise ValueError
    except ValueError:
        raise HubError(416, f"Range {header!r} cannot be served for a file of {size} bytes.")
    return start, end


def _front_matter(text: str) -> dict | None:
    if not text.startswith("---"):
        return None
    block = text[3:].split("\n---", 1)[0]
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def create_app(root: str) -> FastAPI:
    """The FastAPI app serving the repos stored under ``root``."""
    hub = HubApp(str(root))
    app = FastAPI(title="ica_hub local Hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = hub

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, error: HubError):
        return _error_response(error)

    @app.exception_handler(json.JSONDecodeError)
    async def _bad_json(request: Request, error: json.JSONDecodeError):
        return _error_response(HubError(400, f"Request body is not valid JSON: {error}."))

    @app.exception_handler(KeyError)
    async def _missing_key(request: Request, error: KeyError):
        return _error_response(HubError(400, f"Request body misses the field {error}."))

    @app.get(SERVER_ID_ROUTE)
    async def server_id():
        return {"server": "ica_hub", "version": __version__}

    @app.get("/api/whoami-v2")
    async def whoami(request: Request):
        return hub.whoami(request)

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request):
        content = (await request.json()).get("content", "")
        if content.startswith("---"):
            try:
                yaml.safe_load(content[3:].split("\n---", 1)[0])
            except yaml.YAMLError as error:
                return JSONResponse({"errors": [{"message": f"Invalid YAML: {error}"}],
                                     "warnings": []}, status_code=400)
        return {"errors": [], "warnings": []}

    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        return hub.create_repo(request, await request.json())

    @app.delete("/api/repos/delete")
    async def delete_repo(request: Request):
        return hub.delete_repo(request, await request.json())

    @app.get("/api/datasets")
    async def list_datasets(request: Request):
        visible = [r for r in hub.store.list_repos()
                   if not hub.store.repo_meta(r)["private"] or hub.user_for(request) is not None]
        return [{"id": repo_id, "private": hub.store.repo_meta(repo_id)["private"]}
                for repo_id in visible]

    @app.get("/api/datasets/{namespace}/{name}")
    async def repo_info(request: Request, namespace: str, name: str):
        repo_id = f"{namespace}/{name}"
        hub.check_visible(request, repo_id)
        commit = hub.store.resolve(repo_id, "main")
        return hub.info_json(request, repo_id, commit, "blobs" in request.query_params)

    @app.api_route("/api/datasets/{namespace}/{name}/{action}/{rest:path}",
                   methods=["GET", "POST", "DELETE"])
    async def repo_action(request: Request, namespace: str, name: str, action: str, rest: str):
        segments = _raw_segments(request)[5:]  # after api/datasets/{namespace}/{name}/{action}
        return await hub.dispatch(request, f"{namespace}/{name}", action, segments)

    @app.post("/datasets/{namespace}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch(request: Request, namespace: str, name: str):
        return await hub.lfs_batch(request, f"{namespace}/{name}")

    @app.put("/datasets/{namespace}/{name}.git/info/lfs/upload/{oid}/{size}/{signature}")
    async def lfs_upload(request: Request, namespace: str, name: str, oid: str, size: int,
                         signature: str):
        return await hub.lfs_upload(request, f"{namespace}/{name}", oid, size, signature)

    @app.post("/datasets/{namespace}/{name}.git/info/lfs/verify")
    async def lfs_verify(request: Request, namespace: str, name: str):
        return await hub.lfs_verify(request, f"{namespace}/{name}")

    @app.api_route("/datasets/{namespace}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
    async def resolve(request: Request, namespace: str, name: str, rest: str):
        segments = _raw_segments(request)[4:]  # after datasets/{namespace}/{name}/resolve
        if len(segments) < 2:
            raise HubError(400, "Expected /datasets/{repo}/resolve/{revision}/{path}.")
        return hub.resolve_file(request, f"{namespace}/{name}", segments[0],
                                "/".join(segments[1:]))

    return app


def serve(root: str, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(create_app(root), host=host, port=port, log_level=log_level)

