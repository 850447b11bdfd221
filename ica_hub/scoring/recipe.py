"""Typed scoring recipes: YAML keys are exactly the dataclass field names.

A scoring recipe names the model, the pool and the holdout, the ICA settings, how the run is
cut into shards, and where the scored dataset goes. It is read by the generic loader of
``ica_hub.config`` (overrides ``section.key=value`` on top of the YAML; every problem listed in
one :class:`~ica_hub.config.RecipeError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ica_hub.config import ModelConfig, RecipeError, _at_least, _choice, load_config
from ica_hub.context.layouts import LAYOUTS
from ica_hub.models import EMBEDDED_EMBEDDER

__all__ = ["ScoreRecipe", "load_score_recipe", "RecipeError", "DEMO"]

# The data name that means "the ShareGPT demo splits built by ica_hub.data.demo_data".
DEMO = "demo"
SCORER_NAMES = ("ica-fit", "ica")


@dataclass
class ScoreDataConfig:
    # Each of pool / holdout: "demo", a local path (a save_to_disk folder, or a
    # .json/.jsonl/.parquet file) or a Hub dataset repo id.
    pool: str = DEMO
    holdout: str = DEMO
    pool_split: str = "train"  # for Hub repos and DatasetDict folders; "demo" uses its "pool"
    holdout_split: str = "train"
    revision: str | None = None  # Hub revision of the pool; ignored for local paths
    max_rows: int | None = None  # score the first rows only (smoke runs)
    # Read the pool as a stream (IterableDataset): memory stays at model + batch whatever the
    # pool's size; costs one counting pass, and every process reads the whole stream.
    streaming: bool = False
    # Rows whose demonstrations are subtracted when scorer.baseline = "pool" (same forms as pool).
    baseline_pool: str | None = None


@dataclass
class ScorerSettings:
    """The scorer's settings; each is documented on ``ICAScorer``."""

    # ica-fit: the default for SFT rows (ica_hub/scoring/fit.py: the similarity of the model's
    # response states to the holdout's, plus shortfalls in in-context likelihood,
    # question-answer agreement and end of turn, in units of the holdout's spread); ica: the
    # published score alone (also the score of pairs).
    name: str = "ica-fit"
    k: int = 3
    selection: str = "nearest"  # nearest | fixed
    layout: str = "single_turn"  # single_turn | chat_turns
    baseline: str = "none"  # none | pool (contrastive: needs data.baseline_pool)
    demonstration_order: str = "index"  # index | similarity
    max_length: int = 2048  # tokens of one pass; longer rows shrink demonstrations, then question
    max_demonstration_tokens: int = 256
    max_tokens_per_batch: int = 4096  # padded tokens per forward pass: memory vs speed
    embedder: str = EMBEDDED_EMBEDDER
    domain_weight: float = 2.0  # ica-fit only: on target vs clean; 0 ranks by cleanliness alone


@dataclass
class RunConfig:
    output_dir: str = "outputs/scored"  # save_to_disk folder, with provenance.json and run.json
    # Finished shards of unfinished runs, so a killed run resumes; default: <output_dir>.work
    work_dir: str | None = None
    # Rows per shard, a multiple of batch_size. A kill loses at most one shard per process;
    # smaller shards lose less but write more files.
    rows_per_shard: int = 256
    # Rows per scorer call. In nearest mode only rows of one call share cached demonstrations,
    # so larger calls run fewer tokens; memory is bounded by max_tokens_per_batch either way.
    batch_size: int = 64
    torch_threads: int | None = None  # per process; default: CPU cores / local processes
    keep_work_dir: bool = False  # keep shard files after the scored dataset is written
    progress: bool = True  # the progress bar on the main process


@dataclass
class PushConfig:
    repo_id: str | None = None  # push the scored dataset as a new version of this dataset repo
    config_name: str = "default"
    split: str = "train"
    private: bool = False
    endpoint: str | None = None  # default: HF_ENDPOINT or huggingface.co
    make_default: bool | None = None  # None: only if the repo has no default config yet


@dataclass
class ScoreRecipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: ScoreDataConfig = field(default_factory=ScoreDataConfig)
    scorer: ScorerSettings = field(default_factory=ScorerSettings)
    run: RunConfig = field(default_factory=RunConfig)
    push: PushConfig = field(default_factory=PushConfig)


def load_score_recipe(path: str | Path, overrides: list[str] | None = None) -> ScoreRecipe:
    """Read a scoring recipe, apply ``key=value`` overrides, build and validate it."""
    return load_config(ScoreRecipe, path, overrides, validate)


def validate(recipe: ScoreRecipe) -> list[str]:
    """Every problem with option values and their combinations (empty when the recipe is good)."""
    d, s, r, p = recipe.data, recipe.scorer, recipe.run, recipe.push
    problems = _choice("model.dtype", recipe.model.dtype, ("float32", "bfloat16", "float16"))
    for option, value in (("data.pool", d.pool), ("data.holdout", d.holdout)):
        if not value:
            problems.append(f"{option} is empty: write 'demo', a local path or a Hub repo id")
    problems += _at_least("data.max_rows", d.max_rows, 1)
    problems += _choice("scorer.name", s.name, SCORER_NAMES)
    from ica_hub.scoring.fit import domain_weight_problem  # the scorer's own rule

    if problem := domain_weight_problem(s.domain_weight):
        problems.append(f"scorer.domain_weight = {s.domain_weight!r}: {problem}")
    elif s.name == "ica" and s.domain_weight != ScorerSettings.domain_weight:
        problems.append(f"scorer.domain_weight = {s.domain_weight!r} is a setting of "
                        "scorer.name = 'ica-fit'; the published ica score has no domain term. "
                        "Remove it, or set scorer.name=ica-fit")
    if s.name == "ica-fit" and s.baseline != "none":
        problems.append("scorer.baseline = 'pool' is a setting of scorer.name = 'ica' (the "
                        "contrastive variant); ica-fit uses the holdout pass only")
    problems += _at_least("scorer.k", s.k, 1)
    problems += _choice("scorer.selection", s.selection, ("nearest", "fixed"))
    problems += _choice("scorer.layout", s.layout, LAYOUTS)
    problems += _choice("scorer.baseline", s.baseline, ("none", "pool"))
    problems += _choice("scorer.demonstration_order", s.demonstration_order,
                        ("index", "similarity"))
    problems += _at_least("scorer.max_length", s.max_length, 16)
    problems += _at_least("scorer.max_demonstration_tokens", s.max_demonstration_tokens, 1)
    problems += _at_least("scorer.max_tokens_per_batch", s.max_tokens_per_batch, 16)
    if s.baseline == "pool" and not d.baseline_pool:
        problems.append("scorer.baseline = 'pool' needs data.baseline_pool (rows to draw baseline "
                        "demonstrations from, e.g. data.baseline_pool=demo); or set "
                        "scorer.baseline=none")
    problems += _at_least("run.batch_size", r.batch_size, 1)
    problems += _at_least("run.rows_per_shard", r.rows_per_shard, 1)
    problems += _at_least("run.torch_threads", r.torch_threads, 1)
    if r.batch_size >= 1 and r.rows_per_shard >= 1 and r.rows_per_shard % r.batch_size:
        lower = max(r.batch_size, r.rows_per_shard // r.batch_size * r.batch_size)
        problems.append(
            f"run.rows_per_shard = {r.rows_per_shard}: not a multiple of run.batch_size = "
            f"{r.batch_size} (a batch never spans two shards); use {lower} or "
            f"{lower + r.batch_size}"
        )
    if not r.output_dir:
        problems.append("run.output_dir is empty: name the folder for the scored dataset")
    if p.repo_id is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", p.repo_id):
        problems.append(f"push.repo_id = {p.repo_id!r}: write it as 'namespace/name', "
                        "or null to skip the push")
    return problems
