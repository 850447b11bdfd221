"""Run one training recipe: build its parts in dependency order, train, save.

Used by ``python -m ica_hub.train`` (under ``accelerate launch`` or alone) and ``ica-hub train``.
"""

from __future__ import annotations

import copy
import importlib
import logging
from pathlib import Path

import torch
from datasets import Dataset

from ica_hub.config import LoraConfig, TrainRecipe
from ica_hub.data.formats import detect_format
from ica_hub.data.loading import read_rows
from ica_hub.models import load_model_and_tokenizer
from ica_hub.training.batch_weights import ensure_example_ids, weight_column_values
from ica_hub.training.rescoring import RescoreCallback
from ica_hub.training.trainers import TRAINERS, trl_config_class

logger = logging.getLogger(__name__)

_WRITE_IT_FIRST = ("Write the scored rows first (`ica-hub score recipes/score.yaml` writes "
                   "outputs/scored-demo; `ica-hub demo` writes outputs/demo/scored/pool and "
                   "pairs), or name a scored file or Hub dataset.")


def load_train_dataset(recipe: TrainRecipe) -> Dataset:
    """The recipe's training rows: a local folder or file, or a Hub repo at a revision."""
    data = recipe.data
    try:
        dataset = read_rows(data.train, data.split, "data.train", "data.split",
                            config_name=data.config_name, revision=data.revision)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}. {_WRITE_IT_FIRST}") from None
    if data.max_rows is not None:
        dataset = dataset.select(range(min(data.max_rows, len(dataset))))
    return ensure_example_ids(dataset)


def check_train_data(dataset: Dataset, recipe: TrainRecipe) -> None:
    """The rows suit the method and hold the weights' column: checked before any model loads."""
    fmt = detect_format(dataset.column_names)  # unknown columns: lists the accepted formats
    if fmt.is_preference != (recipe.method in ("dpo", "simpo")):
        raise ValueError(
            f"method = {recipe.method!r} trains on " + (
                "preference pairs (prompt, chosen, rejected)" if recipe.method != "sft" else
                "SFT rows (prompt/completion or messages)")
            + f", but data.train = {recipe.data.train!r} holds {fmt.value} rows (columns "
            f"{dataset.column_names}): use the " + (
                "dpo or simpo recipe (method=dpo)" if fmt.is_preference else "sft recipe "
                "(method=sft)") + " for these rows, or point data.train at the other kind")
    # The column and its type now; its values (NaN, negative...) once the trainer has dropped
    # the rows it cannot train on.
    weight_column_values(dataset, recipe.weights)


def build_trl_args(recipe: TrainRecipe):
    """The TRL config of the recipe's method, from the typed training section."""
    t = recipe.training
    common = {name: getattr(t, name) for name in _SHARED_TRAINING_FIELDS}
    method_args = {
        "sft": {},
        "dpo": {"beta": recipe.dpo.beta},
        "simpo": {
            "loss_type": "simpo",
            "cpo_alpha": 0.0,
            "beta": recipe.simpo.beta,
            "simpo_gamma": recipe.simpo.gamma_beta_ratio * recipe.simpo.beta,
        },
    }[recipe.method]
    # Without an accelerator, train on CPU; this also lets two CPU processes join one gloo group.
    use_cpu = not torch.accelerator.is_available()
    return trl_config_class(recipe.method)(**common, **method_args, use_cpu=use_cpu, **t.extra)


_SHARED_TRAINING_FIELDS = (
    "output_dir", "max_steps", "num_train_epochs", "per_device_train_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_steps",
    "weight_decay", "max_grad_norm", "max_length", "logging_steps", "save_strategy", "seed",
    "bf16", "gradient_checkpointing", "report_to",
)  # fmt: skip


def build_peft_config(lora: LoraConfig):
    if not lora.enabled:
        return None
    import peft

    return peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def load_rescorer(recipe: TrainRecipe, tokenizer):
    """Import ``rescore.scorer`` ("module:function") and build the re-scoring callable."""
    module_name, _, function_name = recipe.rescore.scorer.partition(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    return factory(recipe, tokenizer)


def build_trainer(recipe: TrainRecipe):
    """Data, model, TRL config and weighted trainer; the re-scoring callback when asked."""
    # Data first: a missing dataset fails before any model is fetched or converted
    train_dataset = load_train_dataset(recipe)
    check_train_data(train_dataset, recipe)

    # Model and tokenizer
    dtype = getattr(torch, recipe.model.dtype)
    model, tokenizer = load_model_and_tokenizer(
        recipe.model.name_or_path, revision=recipe.model.revision, dtype=dtype
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    # Trainer
    kwargs = {}
    peft_config = build_peft_config(recipe.lora)
    if recipe.method == "dpo" and peft_config is None:
        # A frozen copy of the initial model; TRL would reload it by name, which the embedded
        # model's name does not allow. Under LoRA, the adapter switched off is the reference.
        kwargs["ref_model"] = copy.deepcopy(model)
    trainer = TRAINERS[recipe.method](
        model=model,
        args=build_trl_args(recipe),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        weights=recipe.weights,
        **({"loss_reduction": recipe.sft.loss_reduction} if recipe.method == "sft" else {}),
        **kwargs,
    )

    # Re-scoring
    if recipe.rescore.enabled:
        callback = RescoreCallback(
            trainer,
            load_rescorer(recipe, tokenizer),
            train_dataset,
            num_rescores=recipe.rescore.num_rescores,
            every_n_steps=recipe.rescore.every_n_steps,
        )
        trainer.add_callback(callback)
    return trainer


def run_training(recipe: TrainRecipe) -> Path:
    """Train as the recipe says and save the model and tokenizer; return the output folder."""
    trainer = build_trainer(recipe)
    state = trainer.accelerator
    t = recipe.training
    effective_batch = t.per_device_train_batch_size * t.gradient_accumulation_steps
    if state.is_main_process:
        logger.info(
            "%s on %d rows: effective batch %d examples (%d per device x %d accumulation x %d "
            "processes), weights from %r (%s)",
            recipe.method.upper(),
            len(trainer.train_dataset),
            effective_batch * state.num_processes,
            t.per_device_train_batch_size, t.gradient_accumulation_steps, state.num_processes,
            recipe.weights.column,
            recipe.weights.rule if recipe.weights.source == "score" else "as given",
        )
    trainer.train()
    output_dir = Path(t.output_dir)
    trainer.save_model(str(output_dir))
    if state.is_main_process:
        trainer.processing_class.save_pretrained(str(output_dir))
        logger.info(
            "Saved to %s; %d effective batches skipped (all weights zero)",
            output_dir, trainer.num_skipped_batches,
        )
    return output_dir
