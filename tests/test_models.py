import subprocess
import sys
from pathlib import Path

import pytest

from ica_hub.models import EMBEDDED_MODEL, load_embedder, resolve_model_path, weights_hash


def test_weights_hash_changes_with_any_parameter(tiny_model):
    import torch

    before = weights_hash(tiny_model)
    assert weights_hash(tiny_model) == before
    with torch.no_grad():
        next(tiny_model.parameters())[0, 0] += 1e-3
    assert weights_hash(tiny_model) != before


def test_other_names_pass_through():
    assert resolve_model_path("org/some-model") == "org/some-model"


def test_embedded_embedder_works_offline():
    embeddings = load_embedder().encode(["reverse a list", "sort a list"])
    assert embeddings.shape == (2, 384)


def test_real_embedded_model_is_a_plain_llama(real_model):
    model, tokenizer = real_model
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert "<|im_start|>" in tokenizer.chat_template
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.name_or_path == EMBEDDED_MODEL


_CONVERT = (
    "import sys; from ica_hub.models import embedded_model_dir, load_model_and_tokenizer; "
    "path = embedded_model_dir(); model, _ = load_model_and_tokenizer(); print(path)"
)


@pytest.mark.slow
def test_two_processes_converting_at_once_share_one_good_folder(tmp_path):
    env = {"ICA_HUB_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [subprocess.Popen([sys.executable, "-c", _CONVERT], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=900) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(paths) == 1
    leftovers = [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".convert")]
    assert leftovers == []


def test_a_missing_local_path_says_so():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path("./no/such/model")
