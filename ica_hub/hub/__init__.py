"""Scored versions on the Hub, their dataset cards, evaluation results, browsing them (what
the Space shows), and the local Hub server.

The public names are imported lazily so that ``import ica_hub.hub`` stays cheap (the server
pulls in FastAPI, the versions pull in datasets).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "push_scored": "ica_hub.hub.versions",
    "load_scored": "ica_hub.hub.versions",
    "read_index": "ica_hub.hub.versions",
    "content_hash": "ica_hub.hub.versions",
    "ScoredVersion": "ica_hub.hub.versions",
    "VersionIntegrityError": "ica_hub.hub.versions",
    "push_results": "ica_hub.hub.results",
    "load_results": "ica_hub.hub.results",
    "BrowseError": "ica_hub.hub.browse",
    "list_versions": "ica_hub.hub.browse",
    "load_version": "ica_hub.hub.browse",
    "results_tables": "ica_hub.hub.browse",
    "LocalHub": "ica_hub.hub.local",
    "use_hub": "ica_hub.hub.local",
    "create_app": "ica_hub.hub.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ica_hub.hub' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
