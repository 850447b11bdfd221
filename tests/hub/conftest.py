"""Fixtures for tests/hub: one local Hub server, and the real clients pointed at it.

The server runs in a thread on a free port of 127.0.0.1 with its storage in a temp folder; the
real ``huggingface_hub`` and ``datasets`` clients talk to it through ``use_hub``, with their
caches in temp folders too, so nothing reaches any other host or the user's caches.

The fixture is package-scoped (tests/hub is a package): the client settings are put back when
the last hub test finishes, so test folders collected after this one see untouched settings.
All tests here are fast tier (the whole folder runs in well under three minutes on 2 cores).
"""

from __future__ import annotations

import itertools
import re

import datasets
import datasets.config
import huggingface_hub.constants as hf_constants
import huggingface_hub.utils
import pytest
from ica_hub.hub.local import LocalHub, restore_hub_settings, use_hub

_repo_counter = itertools.count()


@pytest.fixture(scope="package")
def hub(tmp_path_factory):
    """The running local Hub (``.endpoint``, ``.token``, ``.root``); clients point at it."""
    caches = tmp_path_factory.mktemp("client-caches")
    saved_caches = (hf_constants.HF_HUB_CACHE, datasets.config.HF_DATASETS_CACHE)
    hf_constants.HF_HUB_CACHE = str(caches / "hub")
    datasets.config.HF_DATASETS_CACHE = caches / "datasets"
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    with LocalHub(tmp_path_factory.mktemp("hub-root")) as server:
        previous = use_hub(server.endpoint, server.token)
        yield server
        restore_hub_settings(previous)
    hf_constants.HF_HUB_CACHE, datasets.config.HF_DATASETS_CACHE = saved_caches


@pytest.fixture
def repo_id(hub, request) -> str:
    """A fresh repo name per test (the repo itself is created by the test)."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.originalname)[:60].strip("-")
    return f"local/{name}-{next(_repo_counter)}"
