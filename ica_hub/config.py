"""Typed training recipes: YAML keys are exactly the dataclass field names.

A recipe is a YAML file whose sections mirror :class:`TrainRecipe`. Command-line overrides
``key=value`` or ``section.key=value`` are applied on top of the YAML before validation; values
are read as YAML scalars (``null``, ``true``, ``3``, ``[q_proj, v_proj]``).

Validation collects every problem (unknown keys with a did-you-mean, wrong types, values out of
range, combinations the trainers refuse) and raises one :class:`RecipeError` that lists them all,
each naming the option, its value, why it is wrong and what to do instead.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ica_hub.columns import EXAMPLE_WEIGHT, ICA_SCORE
from ica_hub.models import EMBEDDED_MODEL
from ica_hub.weights import WEIGHT_RULES

METHODS = ("sft", "dpo", "simpo")


class RecipeError(ValueError):
    """Every problem found in one recipe, listed at once."""

    def __init__(self, problems: list[str], source: str = "recipe"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {source}:\n{lines}")


@dataclass
class ModelConfig:
    name_or_path: str = EMBEDDED_MODEL  # Hub id, local folder, or the embedded name
    revision: str | None = None
    dtype: str = "float32"  # float32 | bfloat16 | float16


@dataclass
class DataConfig:
    # A local path (a save_to_disk folder, or a .json/.jsonl/.parquet file) or a Hub repo id.
    train: str = ""
    revision: str | None = None  # Hub revision of a scored version; ignored for local paths
    config_name: str | None = None  # Hub repos with several configs (e.g. pool and pairs)
    split: str = "train"
    max_rows: int | None = None  # keep the first rows only (smoke runs)


@dataclass
class WeightsConfig:
    """Where example weights come from, and how scores become weights."""

    source: str = "score"  # "score": a score column turned into weights per effective batch;
    # "weight": an example-weight column used as it is
    score_column: str = ICA_SCORE
    weight_column: str = EXAMPLE_WEIGHT
    rule: str = "minmax"  # minmax | softmax | rank | uniform (see ica_hub.weights)
    temperature: float = 1.0  # softmax only
    negative: str = "keep"  # keep | zero
    missing: str = "zero"  # zero | error

    @property
    def column(self) -> str:
        return self.score_column if self.source == "score" else self.weight_column


@dataclass
class RescoreConfig:
    """Re-scoring with the current model during training (the paper's R)."""

    num_rescores: int = 0  # R: 0 never, 1 once before training, R > 1 evenly spread over training
    every_n_steps: int | None = None  # instead of R: before training, then every N optimizer steps
    # "module:function" returning the re-scoring callable: function(recipe, tokenizer) -> rescore,
    # where rescore(model, dataset) -> list[float | None] in dataset order.
    scorer: str | None = None
    # Free-form settings for that factory (e.g. the holdout, k, or a scoring recipe's path); the
    # factory reads them from recipe.rescore.options and validates them itself.
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.num_rescores > 0 or self.every_n_steps is not None


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


@dataclass
class TrainingConfig:
    output_dir: str = "outputs/run"
    max_steps: int = -1  # optimizer steps; -1 runs num_train_epochs
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1.0e-5
    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0.0  # a count, or a fraction of training when < 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = 1024  # tokens per sequence (prompt + response)
    logging_steps: int = 10
    save_strategy: str = "no"
    seed: int = 42
    bf16: bool = False
    gradient_checkpointing: bool = False
    report_to: str = "none"
    # Any other field of the TRL config of this method (SFTConfig, DPOConfig, CPOConfig).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SFTOptions:
    # "example": mean token NLL per example, weighted per example (the method's loss);
    # "token": every response token counts once, each scaled by its example's weight.
    loss_reduction: str = "example"


@dataclass
class DPOOptions:
    beta: float = 0.5  # the paper's value


@dataclass
class SimPOOptions:
    beta: float = 2.5  # the paper's value
    gamma_beta_ratio: float = 0.55  # target margin gamma = ratio * beta


@dataclass
class TrainRecipe:
    method: str = "sft"  # sft | dpo | simpo
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    rescore: RescoreConfig = field(default_factory=RescoreConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sft: SFTOptions = field(default_factory=SFTOptions)
    dpo: DPOOptions = field(default_factory=DPOOptions)
    simpo: SimPOOptions = field(default_factory=SimPOOptions)


# ---- Reading YAML and overrides ----


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> TrainRecipe:
    """Read a recipe file, apply ``key=value`` overrides, build and validate the recipe."""
    return load_config(TrainRecipe, path, overrides, validate)


def load_config(cls: type, path: str | Path, overrides: list[str] | None,
                check: typing.Callable[[Any], list[str]]) -> Any:
    """Any typed recipe: the YAML at ``path`` plus overrides, built as ``cls``, then ``check``ed.

    Every problem (unknown keys, wrong types, what ``check`` finds) is raised in one RecipeError.
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError([f"not valid YAML: {' '.join(str(error).split())}"], str(path)) from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise RecipeError([f"the file holds a {kind}, not a mapping of options"], str(path))
    if command := _command_of_other_kind(cls, data):
        raise RecipeError([f"this is a recipe of another kind: its sections "
                           f"({', '.join(map(str, data))}) are those of `{command}`; run it "
                           "with that command, or give this command its own kind of recipe"],
                          str(path))
    return config_from_dict(cls, data, overrides, check, source=str(path))


# Each kind of recipe file and the command that runs it.
_RECIPE_KINDS = {
    "ica_hub.config:TrainRecipe": "ica-hub train",
    "ica_hub.scoring.recipe:ScoreRecipe": "ica-hub score",
    "ica_hub.evaluation.recipe:EvalRecipe": "ica-hub eval",
    "ica_hub.demo:DemoRecipe": "ica-hub demo",
}


def _command_of_other_kind(cls: type, data: dict) -> str | None:
    """The command whose recipes have every top-level key of ``data``, when ``cls`` lacks some."""
    keys = set(map(str, data))
    if keys <= {f.name for f in dataclasses.fields(cls)}:
        return None
    for spec, command in _RECIPE_KINDS.items():
        module, _, name = spec.partition(":")
        other = getattr(importlib.import_module(module), name)
        if other is not cls and keys <= {f.name for f in dataclasses.fields(other)}:
            return command
    return None


def config_from_dict(cls: type, data: dict, overrides: list[str] | None,
                     check: typing.Callable[[Any], list[str]], source: str = "recipe") -> Any:
    """A typed recipe from a mapping (a YAML file's content) plus ``key=value`` overrides."""
    data = copy.deepcopy(data)
    problems: list[str] = []
    for override in overrides or []:
        _apply_override(data, override, problems)
    recipe = _build(cls, data, "", problems, root=cls)
    problems += check(recipe)
    if problems:
        raise RecipeError(problems, source)
    return recipe


def _apply_override(data: dict, override: str, problems: list[str]) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key:
        problems.append(
            f"override {override!r}: not of the form key=value; write e.g. training.max_steps=10"
        )
        return
    node = data
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            problems.append(f"override {override!r}: {part!r} is a value, not a section")
            return
    node[leaf] = yaml.safe_load(raw) if raw.strip() else None


def _all_option_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        paths.append(path)
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            paths += _all_option_paths(hint, path + ".")
    return paths


def _did_you_mean(key: str, prefix: str, known: list[str], root: type | None = None) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{prefix}{close[0]}'?"
    # A key put in the wrong section: look for it under another one.
    elsewhere = [p for p in _all_option_paths(root or TrainRecipe) if p.split(".")[-1] == key]
    if elsewhere:
        return f"it lives at {elsewhere[0]!r}"
    return f"known options here: {', '.join(known)}"


def _build(cls: type, data: Any, prefix: str, problems: list[str],
           root: type | None = None) -> Any:
    """Build dataclass ``cls`` from ``data``, appending a problem for each bad key or value."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        section = prefix.rstrip(".") or "recipe"
        problems.append(f"{section} = {data!r}: expected a section of options")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        option = f"{prefix}{key}"
        if key not in names:
            hint = _did_you_mean(str(key), prefix, names, root)
            problems.append(f"{option}: unknown option; {hint}")
            continue
        if dataclasses.is_dataclass(hints[key]):
            values[key] = _build(hints[key], value, option + ".", problems, root=root)
            continue
        ok, converted = _convert(value, hints[key])
        if ok:
            values[key] = converted
        else:
            problems.append(
                f"{option} = {value!r}: expected {_type_name(hints[key])}, "
                f"got {type(value).__name__}; write a value of that type"
            )
    return cls(**values)


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """Check ``value`` against a type hint; return (ok, value converted where harmless)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            ok, converted = _convert(value, option)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is Any:
        return True, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int | float):
            return True, float(value)
        try:  # PyYAML reads 1e-5 (no dot) as a string
            return isinstance(value, str), float(value)
        except ValueError:
            return False, value
    if hint is str:
        return isinstance(value, str), value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, value
        results = [_convert(v, item) for v in value]
        return all(ok for ok, _ in results), [v for _, v in results]
    if origin is dict:
        return isinstance(value, dict), value
    return isinstance(value, hint), value


# ---- Checks across options ----


def _choice(option: str, value: Any, choices: tuple[str, ...]) -> list[str]:
    if value in choices:
        return []
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"choose one of {', '.join(choices)}"
    return [f"{option} = {value!r}: not a known choice; {hint}"]


def _at_least(option: str, value: float | None, low: float, strict: bool = False) -> list[str]:
    if value is None or value > low or (not strict and value == low):
        return []
    relation = ">" if strict else ">="
    return [f"{option} = {value!r}: must be {relation} {low}; set a value {relation} {low}"]


def validate(recipe: TrainRecipe) -> list[str]:
    """Every problem with option values and their combinations (empty when the recipe is good)."""
    t, w, r = recipe.training, recipe.weights, recipe.rescore
    problems = _choice("method", recipe.method, METHODS)
    problems += _choice("model.dtype", recipe.model.dtype, ("float32", "bfloat16", "float16"))
    if not recipe.data.train:
        problems.append(
            "data.train is empty: name the training set, a local path (save_to_disk folder, "
            ".json/.jsonl/.parquet file) or a Hub repo id, e.g. data.train=org/pool-scored"
        )
    problems += _choice("weights.source", w.source, ("score", "weight"))
    problems += _choice("weights.rule", w.rule, WEIGHT_RULES)
    problems += _choice("weights.negative", w.negative, ("keep", "zero"))
    problems += _choice("weights.missing", w.missing, ("zero", "error"))
    problems += _at_least("weights.temperature", w.temperature, 0, strict=True)
    problems += _check_rescore(r, w)
    problems += _at_least("training.per_device_train_batch_size", t.per_device_train_batch_size, 1)
    problems += _at_least("training.gradient_accumulation_steps", t.gradient_accumulation_steps, 1)
    problems += _at_least("training.learning_rate", t.learning_rate, 0, strict=True)
    problems += _at_least("training.max_length", t.max_length, 1)
    problems += _at_least("training.logging_steps", t.logging_steps, 1)
    if t.max_steps == 0 or t.max_steps < -1:
        problems.append(
            f"training.max_steps = {t.max_steps}: use -1 to train for num_train_epochs, "
            "or a positive number of optimizer steps"
        )
    problems += _choice("sft.loss_reduction", recipe.sft.loss_reduction, ("example", "token"))
    problems += _at_least("dpo.beta", recipe.dpo.beta, 0, strict=True)
    problems += _at_least("simpo.beta", recipe.simpo.beta, 0, strict=True)
    problems += _at_least("simpo.gamma_beta_ratio", recipe.simpo.gamma_beta_ratio, 0)
    problems += _at_least("lora.r", recipe.lora.r, 1)
    problems += _check_extra(recipe)
    return problems


def _check_rescore(r: RescoreConfig, w: WeightsConfig) -> list[str]:
    problems = _at_least("rescore.num_rescores", r.num_rescores, 0)
    problems += _at_least("rescore.every_n_steps", r.every_n_steps, 1)
    if r.num_rescores > 0 and r.every_n_steps is not None:
        problems.append(
            f"rescore.every_n_steps = {r.every_n_steps} with rescore.num_rescores = "
            f"{r.num_rescores}: give one schedule; set the other to null / 0"
        )
    if r.enabled and w.source != "score":
        problems.append(
            f"weights.source = {w.source!r} with re-scoring on: re-scoring replaces scores, so "
            "set weights.source=score (or turn re-scoring off with rescore.num_rescores=0)"
        )
    if r.enabled and not r.scorer:
        problems.append(
            "rescore.scorer is empty while re-scoring is on: name the factory as "
            "'module:function', e.g. rescore.scorer=ica_hub.scoring:make_rescorer"
        )
    if r.scorer and ":" not in r.scorer:
        problems.append(
            f"rescore.scorer = {r.scorer!r}: write it as 'module:function'"
        )
    return problems


# What the weighted trainers refuse, and why (checked here so a recipe fails before loading).
_REFUSED_EXTRA = {
    "packing": "packing concatenates examples into one row, so an example's loss and weight "
    "can no longer be told apart; remove training.extra.packing",
    "padding_free": "padding-free batches flatten examples into one row, which the per-example "
    "weighting cannot split; remove training.extra.padding_free",
}


def _check_extra(recipe: TrainRecipe) -> list[str]:
    extra = recipe.training.extra
    if not extra:
        return []
    problems = [
        f"training.extra.{key} = {extra[key]!r}: refused with example weights: {why}"
        for key, why in _REFUSED_EXTRA.items()
        if extra.get(key)
    ]
    if recipe.method not in METHODS:
        return problems
    from ica_hub.training.trainers import trl_config_class

    known = [f.name for f in dataclasses.fields(trl_config_class(recipe.method))]
    typed = [f.name for f in dataclasses.fields(TrainingConfig)]
    for key in extra:
        if key in typed:
            problems.append(
                f"training.extra.{key}: set it as training.{key}, not under extra"
            )
        elif key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = (f"did you mean 'training.{close[0]}'?" if close and close[0] in typed
                    else _did_you_mean(key, "training.extra.", known))
            if "did you mean" not in hint:
                hint = f"it is not a field of {trl_config_class(recipe.method).__name__}"
            problems.append(f"training.extra.{key}: unknown option; {hint}")
    return problems
