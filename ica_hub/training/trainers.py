"""TRL trainers whose loss weighs each example: SFT, DPO and SimPO.

Each trainer keeps TRL's data handling (tokenization, truncation, collators) and reduces the loss
over the whole effective batch, every gradient-accumulation micro-step and every process:

    loss = sum_i w_i * loss_i / sum_i w_i * d_i

where d_i is 1 (per-example losses) or the number of response tokens of example i (the SFT
"token" reduction, whose loss_i is the example's summed token NLL). The transformers Trainer
pre-fetches the micro-batches of one optimizer step (``get_batch_samples``); the weights and the
normaliser are computed there, once per step, and gathered across processes. Each process's loss
is multiplied by the number of processes because DDP averages gradients. Splitting the same
effective batch differently (8x1, 2x4, 1x8, or over processes) gives the same gradient.

Per-example losses:

- SFT: mean token NLL of the example's response (labelled) tokens, from TRL's fused LM head.
- DPO: the sigmoid loss ``-log sigmoid(beta * margin)`` restated from TRL (its loss code averages
  inside one function); ``tests/training`` shows it equal to TRL's when every weight is 1. Other
  DPO loss types, ``ld_alpha``, WPO weighting and f-divergences are refused.
- SimPO: TRL's own ``CPOTrainer.cpo_loss``, which already returns one loss per pair; ``cpo_alpha``
  (a batch-level NLL term) must be 0.

Limits: packing and padding-free batches are refused (an example's weight could no longer be
told apart); an effective batch whose weights are all zero skips its optimizer step (a warning,
and the count ``skipped_effective_batches`` in the logs); rows whose response is null or blank
(the scorer keeps them, flagged) and rows whose response truncation would empty are dropped
before training with a count in the log.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import gather_object
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.experimental.cpo import CPOConfig, CPOTrainer

from ica_hub.columns import EXAMPLE_ID
from ica_hub.config import WeightsConfig
from ica_hub.training.batch_weights import (
    PRIVATE_KEYS,
    VALUES_KEY,
    WEIGHTS_KEY,
    KeepColumnsCollator,
    as_float_array,
    check_weight_column,
    drop_rows_without_response,
    effective_batch_weights,
    ensure_example_ids,
)

logger = logging.getLogger(__name__)


def trl_config_class(method: str) -> type:
    """The TRL config dataclass a method's trainer takes."""
    return {"sft": SFTConfig, "dpo": DPOConfig, "simpo": CPOConfig}[method]


class _SkipEmptyStep(TrainerCallback):
    """Drops the gradients of an effective batch whose weights are all zero, so the optimizer
    (momentum, weight decay) leaves the parameters as they are."""

    def __init__(self, trainer: _WeightedLossMixin):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if self.trainer._skip_step and optimizer is not None:
            optimizer.zero_grad(set_to_none=True)


class _WeightedLossMixin:
    """What the three weighted trainers share; subclasses define ``_per_example_losses``."""

    weights_config: WeightsConfig
    # Why rows may be dropped while TRL prepares the data, for the log line.
    _drop_reason = "no response token left after truncation"

    # ---- Set-up ----

    def _before_init(self, train_dataset, weights: WeightsConfig | None):
        self.weights_config = weights or WeightsConfig()
        train_dataset = drop_rows_without_response(ensure_example_ids(train_dataset))
        check_weight_column(train_dataset, self.weights_config)
        return train_dataset

    def _after_init(self) -> None:
        self.data_collator = KeepColumnsCollator(self.data_collator, self.weights_config.column)
        # The loss is divided by the effective batch's normaliser: no division by the
        # number of accumulation steps afterwards.
        self.loss_is_scaled_for_ga = True
        self.score_table: dict | None = None  # example_id -> score, set by re-scoring
        self.num_skipped_batches = 0
        self._normaliser = 1.0
        self._skip_step = False
        self._last_mean_weight = float("nan")
        self.add_callback(_SkipEmptyStep(self))

    def _set_signature_columns_if_needed(self):
        # Keep the id and weight/score columns through `remove_unused_columns`.
        super()._set_signature_columns_if_needed()
        for column in (EXAMPLE_ID, self.weights_config.column):
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def _prepare_dataset(self, dataset, *args, **kwargs):
        num_rows = len(dataset)
        dataset = super()._prepare_dataset(dataset, *args, **kwargs)
        _log_dropped(num_rows, len(dataset), self._drop_reason)
        return dataset

    def set_scores(self, scores_by_id: dict) -> None:
        """Use these scores (example_id -> score or None) from the next optimizer step on."""
        self.score_table = scores_by_id

    # ---- One effective batch ----

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(
            epoch_iterator, num_batches, device
        )
        self._weigh_effective_batch(batch_samples)
        return batch_samples, num_items_in_batch

    def _weigh_effective_batch(self, batch_samples: list[dict]) -> None:
        values = [self._row_values(batch) for batch in batch_samples]
        normalisers = [self._row_normalisers(batch) for batch in batch_samples]
        per_batch, normaliser = effective_batch_weights(
            values, normalisers, self.weights_config, gather_object, self.accelerator.process_index
        )
        for batch, weights in zip(batch_samples, per_batch, strict=True):
            batch[WEIGHTS_KEY] = weights
        self._normaliser = normaliser
        self._skip_step = not normaliser > 0
        if per_batch:
            self._last_mean_weight = float(np.concatenate(per_batch).mean())
        if self._skip_step:
            self.num_skipped_batches += 1
            logger.warning(
                "Every weight of the effective batch before optimizer step %d is zero: step "
                "skipped (%d so far)", self.state.global_step + 1, self.num_skipped_batches
            )

    def _row_values(self, batch: dict) -> np.ndarray:
        if self.score_table is None:
            return batch[VALUES_KEY]
        return as_float_array([self.score_table.get(i) for i in batch[EXAMPLE_ID]])

    def _row_normalisers(self, batch: dict) -> np.ndarray:
        """d_i of each row: 1 for per-example losses."""
        return np.ones(len(batch[EXAMPLE_ID]))

    # ---- Loss ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(WEIGHTS_KEY, None)
        for key in PRIVATE_KEYS:
            inputs.pop(key, None)
        losses = self._per_example_losses(model, inputs)  # (batch,)
        if weights is None:  # evaluation: no effective batch, unweighted
            loss = losses.sum() / max(self._eval_denominator(inputs, losses), 1.0)
        else:
            weights = torch.as_tensor(weights, dtype=losses.dtype, device=losses.device)
            weighted_sum = (weights * losses).sum()
            # DDP averages gradients over processes: multiply back so the result is the sum.
            scale = self.accelerator.num_processes / self._normaliser if not self._skip_step else 0
            loss = weighted_sum * scale
        return (loss, {"per_example_losses": losses.detach()}) if return_outputs else loss

    def _per_example_losses(self, model, inputs) -> torch.Tensor:
        raise NotImplementedError

    def _eval_denominator(self, inputs, losses: torch.Tensor) -> float:
        return float(losses.numel())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log line
            logs["skipped_effective_batches"] = self.num_skipped_batches
            logs["mean_example_weight"] = self._last_mean_weight
        super().log(logs, start_time)


def _log_dropped(before: int, after: int, reason: str) -> None:
    if after < before:
        logger.warning("Dropped %d of %d rows: %s", before - after, before, reason)


def _refuse(problems: list[str], trainer: str) -> None:
    if problems:
        raise ValueError(f"{trainer} refuses this configuration:\n- " + "\n- ".join(problems))


# ---- SFT ----


class WeightedSFTTrainer(_WeightedLossMixin, SFTTrainer):
    """``trl.SFTTrainer`` with one weight per example.

    ``loss_reduction="example"`` (default): loss_i is the mean token NLL of example i's response.
    ``"token"``: loss_i is the summed NLL and d_i the response token count, which equals TRL's own
    token-level loss when every weight is 1.
    """

    _drop_reason = "no response token left after truncation to max_length"

    def __init__(self, *args, train_dataset, weights=None, loss_reduction="example", **kwargs):
        sft_args = kwargs.get("args")
        _refuse(_sft_problems(sft_args, loss_reduction), type(self).__name__)
        self.loss_reduction = loss_reduction
        train_dataset = self._before_init(train_dataset, weights)
        super().__init__(*args, train_dataset=train_dataset, **kwargs)
        self._after_init()

    def _row_normalisers(self, batch: dict) -> np.ndarray:
        if self.loss_reduction == "example":
            return super()._row_normalisers(batch)
        return _num_response_tokens(batch["labels"])

    def _eval_denominator(self, inputs, losses: torch.Tensor) -> float:
        if self.loss_reduction == "token":
            return float(_num_response_tokens(inputs["labels"]).sum())
        return super()._eval_denominator(inputs, losses)

    def _per_example_losses(self, model, inputs) -> torch.Tensor:
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        self._record_token_metrics(outputs)
        nll_sum = -outputs.log_probs.sum(dim=1)  # (batch,), log_probs are 0 on ignored labels
        if self.loss_reduction == "token":
            return nll_sum
        return nll_sum / outputs.label_mask.sum(dim=1).clamp(min=1)

    def _record_token_metrics(self, outputs) -> None:
        """TRL's entropy and token accuracy over response tokens, in one gather."""
        totals = torch.stack([
            outputs.label_mask.sum(), outputs.entropy.detach().sum(), outputs.is_top1.sum()
        ]).float()  # fmt: skip
        num_tokens, entropy, correct = self.accelerator.gather(totals).view(-1, 3).sum(0).tolist()
        metrics = self._metrics["train" if self.model.training else "eval"]
        metrics["entropy"].append(entropy / num_tokens if num_tokens else 0.0)
        metrics["mean_token_accuracy"].append(correct / num_tokens if num_tokens else 0.0)


def _num_response_tokens(labels: torch.Tensor) -> np.ndarray:
    # Tokens whose next-token label counts, shifted as the fused LM head shifts them.
    return labels[:, 1:].ne(-100).sum(dim=1).cpu().numpy().astype(np.float64)


def _sft_problems(args, loss_reduction: str) -> list[str]:
    problems = []
    if loss_reduction not in ("example", "token"):
        problems.append(f"loss_reduction={loss_reduction!r}: choose 'example' or 'token'")
    if args is not None and args.packing:
        problems.append(
            "packing=True: packed rows mix examples, so each example's weight is lost; "
            "set packing=False"
        )
    if args is not None and args.padding_free:
        problems.append("padding_free=True: flattened batches hide example boundaries; disable it")
    return problems


# ---- DPO ----


class WeightedDPOTrainer(_WeightedLossMixin, DPOTrainer):
    """``trl.DPOTrainer`` (sigmoid loss) with one weight per preference pair."""

    _drop_reason = "the prompt alone fills max_length, so truncation would leave no response"

    def __init__(self, *args, train_dataset, weights=None, **kwargs):
        _refuse(_dpo_problems(kwargs.get("args")), type(self).__name__)
        train_dataset = self._before_init(train_dataset, weights)
        super().__init__(*args, train_dataset=train_dataset, **kwargs)
        self._after_init()

    def _per_example_losses(self, model, inputs) -> torch.Tensor:
        completion_mask = inputs["completion_mask"]  # (2B, T): chosen rows, then rejected rows
        model_kwargs = {
            k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")
        }
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)  # (2B,) summed response log-probs
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs)

        # DPO: margin of the policy/reference log-ratios, chosen minus rejected.
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        losses = -F.logsigmoid(self.beta * (chosen_logratios - rejected_logratios))
        rewards = self.beta * torch.stack([chosen_logratios, rejected_logratios])
        self._record_pair_metrics(torch.stack([chosen_logps, rejected_logps]), rewards)
        return losses

    def compute_ref_log_probs(self, model, inputs):
        # TRL's precompute pass (evaluate) collates with our collator: drop our keys first.
        inputs = {k: v for k, v in inputs.items() if k not in PRIVATE_KEYS}
        return super().compute_ref_log_probs(model, inputs)

    def _reference_logps(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        # TRL's own reference pass: a frozen copy, or the adapter switched off under PEFT.
        reference = self.ref_model if self.ref_model is not None else self.model
        return self.compute_ref_log_probs(reference, inputs)

    def _record_pair_metrics(self, logps: torch.Tensor, rewards: torch.Tensor) -> None:
        """TRL's reward and log-prob metrics; logps and rewards are (2, B): chosen, rejected."""
        gathered = self.accelerator.gather(torch.cat([logps, rewards]).detach().T).T  # (4, B_all)
        logps, (chosen, rejected) = gathered[:2], gathered[2:]
        metrics = self._metrics["train" if self.model.training else "eval"]
        metrics["rewards/chosen"].append(chosen.mean().item())
        metrics["rewards/rejected"].append(rejected.mean().item())
        metrics["rewards/accuracies"].append((chosen > rejected).float().mean().item())
        metrics["rewards/margins"].append((chosen - rejected).mean().item())
        metrics["logps/chosen"].append(logps[0].mean().item())
        metrics["logps/rejected"].append(logps[1].mean().item())


def _dpo_problems(args) -> list[str]:
    if args is None:
        return []
    problems = []
    if list(args.loss_type) != ["sigmoid"]:
        problems.append(f"loss_type={args.loss_type}: only ['sigmoid'] is weighted per pair")
    if args.ld_alpha is not None:
        problems.append(f"ld_alpha={args.ld_alpha}: not supported; leave it unset")
    if args.use_weighting:
        problems.append("use_weighting=True (WPO): not combined with example weights; disable it")
    if args.f_divergence_type != "reverse_kl":
        problems.append(f"f_divergence_type={args.f_divergence_type!r}: use 'reverse_kl'")
    return problems


# ---- SimPO ----


class WeightedSimPOTrainer(_WeightedLossMixin, CPOTrainer):
    """``trl.experimental.cpo.CPOTrainer`` with ``loss_type="simpo"``, one weight per pair."""

    _drop_reason = "the prompt alone fills max_length, so truncation would leave no response"

    def __init__(self, *args, train_dataset, weights=None, **kwargs):
        _refuse(_simpo_problems(kwargs.get("args")), type(self).__name__)
        train_dataset = self._before_init(train_dataset, weights)
        super().__init__(*args, train_dataset=train_dataset, **kwargs)
        # CPOTrainer tokenizes inside __init__; rows whose response was truncated away would
        # give 0/0 in SimPO's length-normalised log-probs.
        num_rows = len(self.train_dataset)
        self.train_dataset = self.train_dataset.filter(
            _has_both_responses, desc="Dropping rows with an empty response"
        )
        _log_dropped(num_rows, len(self.train_dataset), self._drop_reason)
        self._after_init()

    def _per_example_losses(self, model, inputs) -> torch.Tensor:
        chosen_logps, rejected_logps, chosen_logits, rejected_logits, _ = (
            self.concatenated_forward(model, inputs)[:5]
        )
        losses, chosen_rewards, rejected_rewards = self.cpo_loss(chosen_logps, rejected_logps)
        mode = "train" if self.model.training else "eval"
        rewards = self.accelerator.gather(torch.stack([chosen_rewards, rejected_rewards]))
        self.store_metrics(
            {
                "rewards/chosen": rewards[0].mean().item(),
                "rewards/rejected": rewards[1].mean().item(),
                "rewards/accuracies": (rewards[0] > rewards[1]).float().mean().item(),
                "rewards/margins": (rewards[0] - rewards[1]).mean().item(),
            },
            train_eval=mode,
        )
        return losses


def _has_both_responses(row) -> bool:
    return any(t != -100 for t in row["chosen_labels"]) and any(
        t != -100 for t in row["rejected_labels"]
    )


def _simpo_problems(args) -> list[str]:
    if args is None:
        return []
    problems = []
    if args.loss_type != "simpo":
        problems.append(f"loss_type={args.loss_type!r}: set loss_type='simpo'")
    if args.cpo_alpha != 0:
        problems.append(
            f"cpo_alpha={args.cpo_alpha}: its NLL term is a batch-level mean that cannot carry "
            "example weights (and SimPO has none); set cpo_alpha=0"
        )
    return problems


TRAINERS = {"sft": WeightedSFTTrainer, "dpo": WeightedDPOTrainer, "simpo": WeightedSimPOTrainer}
