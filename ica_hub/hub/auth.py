"""Tokens of the local Hub: ``<root>/tokens.json`` maps each accepted token to a user name.

File format::

    {"tokens": {"hf_local_...": {"user": "local", "role": "write"}}}

Every token in the file may read private repos; a token with role "write" may also write. The
server reads the file on each request, so tokens added by ``ica-hub hub token`` work at once.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from ica_hub.hub.storage import write_json_atomic

TOKENS_FILENAME = "tokens.json"
DEFAULT_USER = "local"


def load_tokens(root: str | Path) -> dict[str, dict]:
    path = Path(root) / TOKENS_FILENAME
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("tokens", {})


def ensure_write_token(root: str | Path, user: str = DEFAULT_USER) -> str:
    """Return a write token for ``user``, creating ``tokens.json`` and the token on first use."""
    tokens = load_tokens(root)
    for token, info in sorted(tokens.items()):
        if info.get("user") == user and info.get("role") == "write":
            return token
    token = "hf_local_" + secrets.token_hex(16)
    tokens[token] = {"user": user, "role": "write"}
    write_json_atomic(Path(root) / TOKENS_FILENAME, {"tokens": tokens})
    return token
