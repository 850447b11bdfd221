"""Weighted TRL trainers (SFT, DPO, SimPO) and the re-scoring callback.

``from ica_hub.training import WeightedSFTTrainer, RescoreCallback`` imports TRL; the package
itself stays light so ``ica_hub.config`` can be read without it.
"""

from __future__ import annotations

_EXPORTS = {
    "WeightedSFTTrainer": "ica_hub.training.trainers",
    "WeightedDPOTrainer": "ica_hub.training.trainers",
    "WeightedSimPOTrainer": "ica_hub.training.trainers",
    "TRAINERS": "ica_hub.training.trainers",
    "RescoreCallback": "ica_hub.training.rescoring",
    "rescore_steps": "ica_hub.training.rescoring",
    "run_training": "ica_hub.training.run",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ica_hub.training' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
