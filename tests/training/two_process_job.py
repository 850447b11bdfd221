"""One optimizer step per method under ``accelerate launch``; rank 0 saves losses and gradients.

    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml \
        -m tests.training.two_process_job OUT.pt PER_DEVICE GRAD_ACCUM
"""

from __future__ import annotations

import sys
import tempfile

import torch
from transformers import AutoTokenizer

from ica_hub.config import WeightsConfig
from ica_hub.models import embedded_model_dir
from tests.training.helpers import (
    PREFERENCE_DATA,
    SFT_DATA,
    build_trainer,
    first_step,
    load_rows,
    tiny_model,
    trl_args,
)

DATA = {"sft": SFT_DATA, "dpo": PREFERENCE_DATA, "simpo": PREFERENCE_DATA}


def one_step(method: str, per_device: int, grad_accum: int, output_dir: str):
    """Loss and gradients of one step on 8 rows, weights from min-max of their scores."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    args = trl_args(method, output_dir, per_device_train_batch_size=per_device,
                    gradient_accumulation_steps=grad_accum, max_length=64)  # fmt: skip
    trainer = build_trainer(method, tiny_model(tokenizer), tokenizer, load_rows(DATA[method], 8),
                            args, weights=WeightsConfig(source="score"))  # fmt: skip
    return first_step(trainer), trainer.accelerator


def main() -> None:
    out, per_device, grad_accum = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    results = {}
    for method in DATA:
        with tempfile.TemporaryDirectory() as tmp:
            (loss, grads), accelerator = one_step(method, per_device, grad_accum, tmp)
        results[method] = {"loss": loss, "grads": grads, "processes": accelerator.num_processes}
    if accelerator.is_main_process:
        torch.save(results, out)


if __name__ == "__main__":
    main()
