"""Start the local Hub in a background thread, and point the real clients at a Hub endpoint.

    with LocalHub(root) as hub:          # free port on 127.0.0.1, token created on first use
        use_hub(hub.endpoint, hub.token)  # HfApi(), hf_hub_download, datasets now talk to it
        dataset.push_to_hub("local/scores")

Why ``use_hub`` patches modules as well as setting environment variables: huggingface_hub reads
``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET`` once, at import time, into ``huggingface_hub.constants``,
and ``datasets`` copies the endpoint into ``datasets.config.HF_ENDPOINT``, so setting the
variables after the import changes nothing. ``use_hub`` sets both the variables (for child
processes) and the imported constants (for this process).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from ica_hub.hub.auth import ensure_write_token

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 20.0


def use_hub(endpoint: str, token: str | None = None) -> dict[str, object]:
    """Point huggingface_hub and datasets (in this process and its children) at ``endpoint``.

    Returns the previous values, which ``restore_hub_settings`` puts back.
    """
    import datasets.config
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import HfFileSystem

    endpoint = endpoint.rstrip("/")
    previous: dict[str, object] = {
        "env": {key: os.environ.get(key) for key in _ENV_KEYS},
        "hf": {key: getattr(hf_constants, key) for key in _HF_CONSTANTS},
        "datasets": {key: getattr(datasets.config, key) for key in _DATASETS_CONFIG},
    }
    os.environ["HF_ENDPOINT"] = endpoint
    # huggingface_hub >= 1.20 uploads through Xet whenever hf_xet is installed, without asking the
    # server; the local Hub does not speak Xet, so uploads must take the LFS path.
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    if token is not None:
        os.environ["HF_TOKEN"] = token
    hf_constants.ENDPOINT = endpoint
    hf_constants.HUGGINGFACE_CO_URL_TEMPLATE = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    hf_constants.HF_HUB_DISABLE_XET = True
    hf_constants.HF_HUB_DISABLE_TELEMETRY = True
    datasets.config.HF_ENDPOINT = endpoint
    datasets.config.HUB_DATASETS_URL = endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
    # The parquet export lives on a separate dataset-viewer host that a local Hub does not have.
    datasets.config.USE_PARQUET_EXPORT = False
    HfFileSystem.clear_instance_cache()  # cached instances remember the old endpoint
    return previous


def restore_hub_settings(previous: dict[str, object]) -> None:
    import datasets.config
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import HfFileSystem

    for key, value in previous["env"].items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    for key, value in previous["hf"].items():
        setattr(hf_constants, key, value)
    for key, value in previous["datasets"].items():
        setattr(datasets.config, key, value)
    HfFileSystem.clear_instance_cache()


_ENV_KEYS = ("HF_ENDPOINT", "HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_TELEMETRY", "HF_TOKEN")
_HF_CONSTANTS = ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_HUB_DISABLE_XET",
                 "HF_HUB_DISABLE_TELEMETRY")
_DATASETS_CONFIG = ("HF_ENDPOINT", "HUB_DATASETS_URL", "USE_PARQUET_EXPORT")


SERVER_ID_ROUTE = "/api/ica-hub"


@functools.lru_cache(maxsize=16)
def is_local_hub(endpoint: str) -> bool:
    """Whether ``endpoint`` is an ica_hub server (it answers ``SERVER_ID_ROUTE``)."""
    from huggingface_hub.utils import get_session

    try:
        response = get_session().get(endpoint.rstrip("/") + SERVER_ID_ROUTE, timeout=5)
        return response.status_code == 200 and response.json().get("server") == "ica_hub"
    except Exception:  # any network or parsing failure means "not ours"
        return False


@contextlib.contextmanager
def hub_settings(endpoint: str | None, token: str | None = None) -> Iterator[None]:
    """Make the clients talk to ``endpoint`` (None: the configured one) for the ``with`` body.

    Nothing changes when ``endpoint`` is already the configured one, except that Xet is switched
    off for good if that endpoint is a local Hub. Switching to another endpoint patches
    process-wide settings and puts them back afterwards: do not switch from several threads.
    """
    import huggingface_hub.constants as hf_constants

    current = hf_constants.ENDPOINT
    if endpoint is None or endpoint.rstrip("/") == current:
        if not hf_constants.HF_HUB_DISABLE_XET and is_local_hub(current):
            use_hub(current)
        yield
        return
    previous = use_hub(endpoint)
    try:
        yield
    finally:
        restore_hub_settings(previous)


class LocalHub:
    """The local Hub server on ``host`` in a daemon thread; a context manager.

    ``port=0`` picks a free port. ``endpoint`` and ``token`` (a write token from
    ``<root>/tokens.json``, created on first use) are set once ``start()`` returns.
    """

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root)
        self.host = host
        self.port = port
        self.token = ensure_write_token(self.root)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "LocalHub":
        import uvicorn

        from ica_hub.hub.server import create_app

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(str(self.root)), log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="ica-hub-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The local Hub did not start on {self.endpoint} within "
                                   f"{_START_TIMEOUT_S:.0f} s; see the log above for the cause.")
            time.sleep(0.02)
        logger.debug("local Hub serving %s on %s", self.root, self.endpoint)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        with contextlib.suppress(Exception):
            self.stop()
