"""Telling Hub repo ids from local paths, in one place, for every command that takes either."""

from __future__ import annotations

import re
from pathlib import Path

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_HUB_SHAPED = re.compile(r"[\w.-]+(/[\w.-]+)?")


def is_repo_id(text: str) -> bool:
    """``namespace/name``: what a push needs."""
    return bool(_REPO_ID.fullmatch(text))


def may_be_hub_repo(spec: str) -> bool:
    """Whether a spec that names nothing on this machine can still be a Hub repo: it has the
    shape (``name`` or ``namespace/name``, not starting with ``.``) and its first part is not
    a local folder (``outputs/sft`` beside an ``outputs`` folder is a missing local path)."""
    shaped = _HUB_SHAPED.fullmatch(spec) and not spec.startswith(".")
    return bool(shaped) and not Path(spec.split("/")[0]).exists()
