"""Typed evaluation recipes: YAML keys are exactly the dataclass field names.

An evaluation recipe names the models to compare, the held-out data, optionally a scored
dataset whose score columns are judged, optionally a pairwise judge, and where the results go.
It is read by the generic loader of ``ica_hub.config`` (overrides ``section.key=value`` on top
of the YAML; every problem listed in one :class:`~ica_hub.config.RecipeError`).

Two kinds of checks, both before anything is loaded: :func:`validate` (the values and their
combinations; run by :func:`load_eval_recipe`) and :func:`check_paths` (what must exist on
this machine: model folders, the judge's key variable; run by ``run_eval``), so that a shipped
recipe parses on any machine.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ica_hub.columns import ICA_SCORE, ROW_KIND
from ica_hub.config import RecipeError, _at_least, _choice, load_config
from ica_hub.hub.repo_ids import is_repo_id, may_be_hub_repo
from ica_hub.models import EMBEDDED_MODEL
from ica_hub.scoring.recipe import DEMO

__all__ = ["MODEL_KEYS", "EvalRecipe", "RecipeError", "check_paths", "load_eval_recipe"]

MODEL_KEYS = ("name", "path")  # the keys of one entry of `models`


@dataclass
class EvalDataConfig:
    # Each of test / pairs_test: "demo" (the demo data's split of that name), a local path (a
    # save_to_disk folder, or a .json/.jsonl/.parquet file), a Hub dataset repo id, or null to
    # skip its metric. test: SFT rows of the target domain (loss, perplexity, judge prompts);
    # pairs_test: prompt/chosen/rejected rows (preference accuracy).
    test: str | None = DEMO
    pairs_test: str | None = DEMO
    split: str = "train"  # for Hub repos and DatasetDict folders
    max_rows: int | None = None  # the first rows of each only (smoke runs)


@dataclass
class ScoresConfig:
    """A scored dataset whose score columns are judged against its row kinds (AUROCs)."""

    path: str | None = None  # same forms as data.test ("demo" excepted); null: skip
    revision: str | None = None  # Hub revision, e.g. a scored version's tag
    split: str = "train"
    columns: dict[str, str] = field(default_factory=lambda: {"ica": ICA_SCORE})  # name: column
    kind_column: str = ROW_KIND


@dataclass
class JudgeConfig:
    """A pairwise judge of two models' greedy answers to the first test prompts (optional)."""

    model: str | None = None  # a local judge: a folder, a Hub id or the embedded name
    endpoint: str | None = None  # or an OpenAI-compatible base URL, e.g. http://host:8080/v1
    model_name: str | None = None  # the model name the endpoint expects
    api_key_env: str | None = None  # environment variable holding the endpoint's key
    candidate: str | None = None  # a models[].name; default: the second model
    baseline: str | None = None  # default: the first model
    num_prompts: int = 16
    max_new_tokens: int = 256  # answer length of each compared model: the judge's main cost
    timeout_s: float = 10.0  # per endpoint call
    max_consecutive_failures: int = 3  # then the remaining prompts are not asked
    seed: int = 0  # which prompts show the candidate first

    @property
    def enabled(self) -> bool:
        return self.model is not None or self.endpoint is not None


@dataclass
class EvalSettings:
    max_length: int = 1024  # tokens of prompt + response; longer responses count as skipped
    max_tokens_per_batch: int = 4096  # padded tokens per forward pass: memory vs speed
    dtype: str = "float32"  # float32 | bfloat16 | float16


@dataclass
class OutputConfig:
    path: str = "outputs/eval/results.json"  # one JSON file with every result and provenance


@dataclass
class EvalPushConfig:
    repo_id: str | None = None  # commit the results to this dataset repo (null: local only)
    revision: str | None = None  # the scored version's tag they evaluate; null: "untagged"
    name: str | None = None  # file name in the repo; default: the stem of output.path
    endpoint: str | None = None  # default: HF_ENDPOINT or huggingface.co


@dataclass
class EvalRecipe:
    models: list[dict[str, str]] = field(default_factory=list)  # each {name, path}
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    scores: ScoresConfig = field(default_factory=ScoresConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    output: OutputConfig = field(default_factory=OutputConfig)
    push: EvalPushConfig = field(default_factory=EvalPushConfig)

    @property
    def model_names(self) -> list[str]:
        return [entry.get("name") for entry in self.models]

    def judged_pair(self) -> tuple[str, str]:
        """(candidate, baseline) names of the judge, defaults applied."""
        names = self.model_names
        return (self.judge.candidate or names[1], self.judge.baseline or names[0])


def load_eval_recipe(path: str | Path, overrides: list[str] | None = None) -> EvalRecipe:
    """Read an evaluation recipe, apply ``key=value`` overrides, build and validate it."""
    return load_config(EvalRecipe, path, overrides, validate)


def validate(recipe: EvalRecipe) -> list[str]:
    """Every problem with option values and their combinations (empty when the recipe is good)."""
    d, s, e = recipe.data, recipe.scores, recipe.eval
    problems = _check_models(recipe.models)
    if recipe.models and d.test is None and d.pairs_test is None:
        problems.append("data.test and data.pairs_test are both null: the models have nothing "
                        "to be evaluated on; name at least one (e.g. data.test=demo)")
    if not recipe.models and s.path is None:
        problems.append("nothing to evaluate: list models (each {name, path}) or name a scored "
                        "dataset in scores.path")
    problems += _at_least("data.max_rows", d.max_rows, 1)
    if s.path == DEMO:
        problems.append("scores.path = 'demo': the demo data has no scores; score it first "
                        "(ica-hub score recipes/score.yaml) and name the output folder")
    if s.path is not None and not s.columns:
        problems.append("scores.columns is empty: map a display name to each score column, "
                        "e.g. scores.columns={ica: ica_score}")
    problems += _choice("eval.dtype", e.dtype, ("float32", "bfloat16", "float16"))
    problems += _at_least("eval.max_length", e.max_length, 16)
    problems += _at_least("eval.max_tokens_per_batch", e.max_tokens_per_batch, 16)
    problems += _check_judge(recipe)
    if not recipe.output.path.endswith(".json"):
        problems.append(f"output.path = {recipe.output.path!r}: the results are one JSON file; "
                        "give a path ending in .json")
    p = recipe.push
    if p.repo_id is not None and not is_repo_id(p.repo_id):
        problems.append(f"push.repo_id = {p.repo_id!r}: write it as 'namespace/name', "
                        "or null to skip the push")
    if p.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", p.name):
        problems.append(f"push.name = {p.name!r}: use letters, digits, '_', '.' or '-'")
    return problems


def _check_models(models: list[dict]) -> list[str]:
    problems = []
    for i, entry in enumerate(models):
        option = f"models[{i}]"
        for key in entry:
            if key not in MODEL_KEYS:
                close = difflib.get_close_matches(str(key), MODEL_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "an entry has name and path"
                problems.append(f"{option}.{key}: unknown key; {hint}")
        for key in MODEL_KEYS:
            value = entry.get(key)
            if not isinstance(value, str) or not value:
                problems.append(f"{option}.{key} = {value!r}: give a non-empty string, e.g. "
                                f"{{name: sft, path: outputs/train/sft}}")
    names = [entry.get("name") for entry in models]
    for name in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1}):
        problems.append(f"models: the name {name!r} is used {names.count(name)} times; "
                        "give each model its own name (results are keyed by it)")
    return problems


def _check_judge(recipe: EvalRecipe) -> list[str]:
    j = recipe.judge
    problems = _at_least("judge.num_prompts", j.num_prompts, 1)
    problems += _at_least("judge.max_new_tokens", j.max_new_tokens, 1)
    problems += _at_least("judge.timeout_s", j.timeout_s, 0, strict=True)
    problems += _at_least("judge.max_consecutive_failures", j.max_consecutive_failures, 1)
    if not j.enabled:
        return problems
    if j.model is not None and j.endpoint is not None:
        problems.append("judge.model and judge.endpoint are both set: a judge is either a local "
                        "model or an endpoint; set the other to null")
    if j.endpoint is not None and not j.endpoint.startswith(("http://", "https://")):
        problems.append(f"judge.endpoint = {j.endpoint!r}: give an http(s) base URL, e.g. "
                        "http://127.0.0.1:8080/v1")
    if recipe.data.test is None:
        problems.append("the judge asks about data.test prompts, and data.test is null: name "
                        "it, or set judge.model and judge.endpoint to null")
    if j.max_new_tokens >= recipe.eval.max_length:
        problems.append(f"judge.max_new_tokens = {j.max_new_tokens} leaves no room for a prompt "
                        f"in eval.max_length = {recipe.eval.max_length}; lower it, or raise "
                        "eval.max_length")
    names = recipe.model_names
    if len(names) < 2:
        problems.append(f"the judge compares two models and models lists {len(names)}: add "
                        "one, or set judge.model and judge.endpoint to null")
    else:
        candidate, baseline = recipe.judged_pair()
        for option, name in (("judge.candidate", candidate), ("judge.baseline", baseline)):
            if name not in names:
                problems.append(f"{option} = {name!r}: not a name in models ({names})")
        if candidate == baseline:
            problems.append(f"judge.candidate and judge.baseline are both {candidate!r}: "
                            "compare two different models")
    return problems


def check_paths(recipe: EvalRecipe) -> None:
    """What must exist on this machine: model folders, local data and the judge's key variable.

    A path that names no folder here is taken for a Hub id only when it has that shape
    (``name`` or ``namespace/name``) and its first part is not a local folder: ``outputs/sft``
    beside an ``outputs`` folder is a missing local model, not a Hub repo.
    """
    problems = []
    for i, entry in enumerate(recipe.models):
        problem = _missing_model(entry["path"])
        if problem:
            problems.append(f"models[{i}] ({entry['name']!r}): path {entry['path']!r} {problem}")
    for option, spec in (("data.test", recipe.data.test),
                         ("data.pairs_test", recipe.data.pairs_test),
                         ("scores.path", recipe.scores.path)):
        if spec not in (None, DEMO) and (problem := _missing_data(spec)):
            problems.append(f"{option} = {spec!r}: {problem}")
    j = recipe.judge
    if j.model is not None and (problem := _missing_model(j.model)):
        problems.append(f"judge.model = {j.model!r}: {problem}")
    if j.enabled and j.api_key_env and not os.environ.get(j.api_key_env):
        problems.append(f"judge.api_key_env = {j.api_key_env!r}: that environment variable is "
                        "not set; export it, or set judge.api_key_env=null for an endpoint "
                        "without a key")
    if problems:
        raise RecipeError(problems, "the recipe's paths")


def _missing_data(spec: str) -> str | None:
    path = Path(spec).expanduser()
    if path.exists():
        return None
    if path.suffix in (".json", ".jsonl", ".parquet"):
        return "no such file"
    if may_be_hub_repo(spec):
        return None
    return "no such folder or file on this machine, and not a Hub repo id ('namespace/name')"


def _missing_model(path: str) -> str | None:
    if path == EMBEDDED_MODEL or Path(path).expanduser().exists() or may_be_hub_repo(path):
        return None
    return ("is no folder on this machine: train the model first (e.g. `ica-hub train "
            "recipes/sft.yaml` writes outputs/train/sft), or fix the path")
