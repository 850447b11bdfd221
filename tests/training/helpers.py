"""Builders shared by the training tests and the two-process job they launch."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import DPOTrainer, SFTTrainer
from trl.experimental.cpo import CPOTrainer

from ica_hub.config import WeightsConfig
from ica_hub.training.trainers import TRAINERS, trl_config_class

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SFT_DATA = DATA_DIR / "sft_qa.jsonl"
PREFERENCE_DATA = DATA_DIR / "preference_qa.jsonl"

STOCK = {"sft": SFTTrainer, "dpo": DPOTrainer, "simpo": CPOTrainer}


def tiny_model(tokenizer, seed: int = 0):
    """The suite's tiny Llama (tests/conftest.py), in training mode as TRL expects."""
    from tests.conftest import make_tiny_model

    return make_tiny_model(tokenizer, seed).train()


def load_rows(path: Path, n: int | None = None) -> Dataset:
    dataset = Dataset.from_json(str(path))
    return dataset.select(range(n)) if n is not None else dataset


def trl_args(method: str, output_dir, **overrides):
    """TRL config for one-step gradient checks: no clipping, constant LR, log every step."""
    common = dict(
        output_dir=str(output_dir),
        max_steps=1,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        disable_tqdm=True,
        max_length=128,
        bf16=False,
        use_cpu=True,  # also what lets two CPU processes form a gloo group
    )
    method_defaults = {
        "sft": {},
        "dpo": {"beta": 0.5},
        "simpo": {"loss_type": "simpo", "cpo_alpha": 0.0, "beta": 2.5, "simpo_gamma": 1.375},
    }[method]
    return trl_config_class(method)(**{**common, **method_defaults, **overrides})


class GradientRecorder(TrainerCallback):
    """Keeps the gradients of the first optimizer step, before the optimizer sees them."""

    def __init__(self):
        self.grads: dict[str, torch.Tensor] | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = {
                name: param.grad.detach().clone()
                for name, param in model.named_parameters()
                if param.grad is not None
            }


def build_trainer(method, model, tokenizer, dataset, args, *, weighted=True, weights=None, **kw):
    kwargs = dict(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, **kw)
    if method == "dpo":
        kwargs.setdefault("ref_model", copy.deepcopy(model))
    if not weighted:
        return STOCK[method](**kwargs)
    return TRAINERS[method](weights=weights or WeightsConfig(source="weight"), **kwargs)


def first_step(trainer) -> tuple[float, dict[str, torch.Tensor]]:
    """Train one optimizer step; return its logged loss and its gradients."""
    recorder = GradientRecorder()
    trainer.add_callback(recorder)
    trainer.train()
    loss = next(log["loss"] for log in trainer.state.log_history if "loss" in log)
    return loss, recorder.grads


def assert_same_grads(a: dict, b: dict, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol, msg=name)
