"""``ica-hub hub serve|token`` and ``ica-hub push``: parse, call the library, report.

``ica-hub push DATASET_DIR REPO_ID`` reads a dataset written by ``Dataset.save_to_disk`` and its
provenance from ``DATASET_DIR/provenance.json`` (or ``--provenance FILE``): a JSON object with
the keys of ``ica_hub.columns.PROVENANCE_KEYS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_ROOT = os.environ.get("ICA_HUB_ROOT", str(Path.home() / ".cache" / "ica_hub" / "hub"))
DEFAULT_PORT = 8765
PROVENANCE_FILENAME = "provenance.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    hub = subparsers.add_parser("hub", help="run the local Hub server for dataset repos")
    hub_commands = hub.add_subparsers(dest="hub_command", metavar="HUB_COMMAND", required=True)

    serve = hub_commands.add_parser("serve", help="serve the repos under --root over HTTP")
    serve.add_argument("--host", default="127.0.0.1",
                       help="interface to bind (default: %(default)s)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    _add_root(serve)
    serve.set_defaults(func=_serve)

    token = hub_commands.add_parser("token", help="print a write token (created on first use)")
    _add_root(token)
    token.set_defaults(func=_token)

    push = subparsers.add_parser("push", help="push a scored dataset as a new tagged version")
    push.add_argument("dataset_dir", help="folder written by Dataset.save_to_disk")
    push.add_argument("repo_id", help="dataset repo, 'namespace/name'")
    push.add_argument("--provenance",
                      help=f"JSON file (default: DATASET_DIR/{PROVENANCE_FILENAME})")
    push.add_argument("--config-name", default="default", help="default: %(default)s")
    push.add_argument("--split", default="train", help="default: %(default)s")
    push.add_argument("--make-default", action=argparse.BooleanOptionalAction, default=None,
                      help="make this config the default one (default: only if none is)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--branch", default="main", help="default: %(default)s")
    push.add_argument("--endpoint", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    push.set_defaults(func=_push)


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=DEFAULT_ROOT,
                        help="storage folder (default: $ICA_HUB_ROOT or %(default)s)")


def _serve(args: argparse.Namespace) -> int:
    from ica_hub.hub.auth import ensure_write_token
    from ica_hub.hub.server import serve

    _check_port_free(args.host, args.port)
    token = ensure_write_token(args.root)
    endpoint = f"http://{args.host}:{args.port}"
    print(f"Serving dataset repos from {args.root} on {endpoint}. Point clients at it with:\n"
          f"  export HF_ENDPOINT={endpoint} HF_HUB_DISABLE_XET=1 HF_TOKEN={token}", flush=True)
    serve(args.root, host=args.host, port=args.port)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Fail before printing the client settings when the server could not start anyway."""
    import socket

    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: a port is a number from 0 to 65535")
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port} ({error.strerror}): "
                          "pick another --port or stop what uses it") from None


def _token(args: argparse.Namespace) -> int:
    from ica_hub.hub.auth import ensure_write_token

    print(ensure_write_token(args.root))
    return 0


def _push(args: argparse.Namespace) -> int:
    from datasets import load_from_disk

    from ica_hub.hub.repo_ids import is_repo_id
    from ica_hub.hub.versions import push_scored

    if not Path(args.dataset_dir).is_dir():
        raise ValueError(f"no dataset folder at {args.dataset_dir}: give the folder a scoring run "
                         "wrote (run.output_dir of the score recipe) or Dataset.save_to_disk made.")
    if not is_repo_id(args.repo_id):
        raise ValueError(f"repo_id {args.repo_id!r}: write it as 'namespace/name', e.g. "
                         "'my-org/pool-scored'.")
    provenance_path = Path(args.provenance or Path(args.dataset_dir) / PROVENANCE_FILENAME)
    if not provenance_path.is_file():
        raise ValueError(f"no provenance file at {provenance_path}: write the provenance dict "
                         f"there as JSON, or pass --provenance FILE.")
    provenance = json.loads(provenance_path.read_text())
    dataset = load_from_disk(args.dataset_dir)
    version = push_scored(
        dataset, args.repo_id, provenance, config_name=args.config_name,
        make_default=args.make_default, split=args.split, private=args.private,
        token=args.token, endpoint=args.endpoint, branch=args.branch,
    )
    print(json.dumps({"repo_id": version.repo_id, "tag": version.tag, "commit": version.commit,
                      "num_rows": version.num_rows, "content_hash": version.content_hash},
                     indent=2))
    return 0
