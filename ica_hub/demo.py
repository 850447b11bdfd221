"""``ica-hub demo [recipes/demo.yaml] [key=value ...]``: the whole product, end to end.

On the embedded SmolLM2-135M-Instruct and real ShareGPT data, in one process:

1. build the demo data (``ica_hub.data.demo_data``) and write each split to ``<output>/data``;
2. start the local Hub server on ``<output>/hub`` (or use ``hub.endpoint``);
3. score the pool and the preference pairs (``ica-hub score``'s runner), push each as a
   version of one dataset repo (configs ``pool`` and ``pairs``);
4. train from the pushed versions, loaded back by tag: ICA-weighted SFT, the uniform SFT
   baseline, and short ICA-weighted DPO and SimPO runs (``ica-hub train``'s runner);
5. evaluate every model and the scores (``ica-hub eval``'s runner), push the results beside
   the scored version, print a summary table and how to browse what was made.

Every step is the library call a user's own recipe would make; the sizes are recipe fields
(``data.num_pool=...``). ``recipes/demo.yaml`` holds the defaults with comments.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ica_hub.config import (
    ModelConfig, RecipeError, _at_least, config_from_dict, load_config,
)
from ica_hub.data.demo_data import DemoDataConfig
from ica_hub.scoring.recipe import ScorerSettings

logger = logging.getLogger(__name__)

DEMO_SPLITS = ("holdout", "pool", "test", "pairs", "pairs_test", "holdout_pairs")
TRAIN_METHODS = ("sft", "dpo", "simpo")


@dataclass
class DemoTraining:
    """The training runs: what every run shares, and per-method learning rates."""

    methods: list[str] = field(default_factory=lambda: list(TRAIN_METHODS))
    lora: bool = True  # a LoRA adapter: the only way a 2-core CPU trains in minutes
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512  # tokens of prompt + response
    sft_learning_rate: float = 2.0e-4
    preference_learning_rate: float = 5.0e-5
    seed: int = 42
    # Any other option of the training recipes (recipes/sft.yaml), e.g. ["lora.r=8"].
    overrides: list[str] = field(default_factory=list)


@dataclass
class DemoHub:
    endpoint: str | None = None  # null: start the local Hub server on <output_dir>/hub
    repo_id: str = "local/ica-demo"


@dataclass
class DemoRecipe:
    output_dir: str = "outputs/demo"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DemoDataConfig = field(default_factory=lambda: DemoDataConfig(
        num_holdout=24, num_pool=64, num_test=24, num_pairs=24, num_pairs_test=24,
        max_answer_chars=800))
    scorer: ScorerSettings = field(default_factory=lambda: ScorerSettings(
        max_length=1024, max_demonstration_tokens=128))
    score_column: str = "fit_score"  # the column the weighted SFT runs turn into weights
    batch_size: int = 32  # rows per scorer call: larger shares more cached demonstrations
    training: DemoTraining = field(default_factory=DemoTraining)
    hub: DemoHub = field(default_factory=DemoHub)
    eval_max_length: int = 1024


def load_demo_recipe(path: str | None, overrides: list[str] | None = None) -> DemoRecipe:
    if path is None:
        return config_from_dict(DemoRecipe, {}, overrides, validate, source="demo options")
    return load_config(DemoRecipe, path, overrides, validate)


def validate(recipe: DemoRecipe) -> list[str]:
    """Every bad option at once, before any data is built or any model loaded."""
    d, t = recipe.data, recipe.training
    problems = _at_least("data.num_pool", d.num_pool, 8)
    s = recipe.scorer
    problems += _scorer_problems(recipe)
    need = s.k + 1 if s.name == "ica-fit" else s.k  # ica-fit scores the holdout leave-one-out
    if d.num_holdout < max(need, 1):
        problems.append(f"data.num_holdout = {d.num_holdout}: {s.name} needs at least {need} "
                        f"holdout rows with scorer.k = {s.k}; raise it or lower scorer.k")
    for option in ("num_test", "num_pairs", "num_pairs_test"):
        problems += _at_least(f"data.{option}", getattr(d, option), 2)
    if s.max_length >= 16:  # under 16: the scoring recipe's own check said so
        problems += _at_least("scorer.max_length", s.max_length, 64)
    problems += _at_least("batch_size", recipe.batch_size, 1)
    unknown = [m for m in t.methods if m not in TRAIN_METHODS]
    if unknown:
        problems.append(f"training.methods: unknown {unknown}; choose from {list(TRAIN_METHODS)}")
    if "sft" not in t.methods:
        problems.append("training.methods must include sft (the weighted-vs-uniform comparison)")
    problems += _at_least("training.max_length", t.max_length, 64)
    problems += _at_least("training.per_device_train_batch_size",
                          t.per_device_train_batch_size, 1)
    return problems + _override_problems(t.overrides)


def _scorer_problems(recipe: DemoRecipe) -> list[str]:
    """What the scoring recipe of step 2 would refuse in ``model`` and ``scorer``, found now."""
    from ica_hub.scoring.recipe import ScoreRecipe, validate as validate_score

    settings = _score_settings(recipe, Path("pool"), Path("holdout"), Path(recipe.output_dir))
    score_recipe = config_from_dict(ScoreRecipe, settings, [], lambda _: [], source="demo")
    return [problem for problem in validate_score(score_recipe)
            if problem.startswith(("model.", "scorer."))]


def _override_problems(overrides: list[str]) -> list[str]:
    """Unknown keys or bad values in ``training.overrides``, found now rather than at the
    first training step (the run's own data and output are filled in then)."""
    from ica_hub.config import RecipeError, TrainRecipe

    if not overrides:
        return []
    try:
        config_from_dict(TrainRecipe, {"method": "sft", "data": {"train": "demo"}},
                         list(overrides), lambda _: [], source="training.overrides")
    except RecipeError as error:
        return [f"training.overrides: {problem}" for problem in error.problems]
    return []


# -- the steps ---------------------------------------------------------------------------


class _Steps:
    """Numbered, timed steps in the log; their durations go into the summary."""

    def __init__(self, total: int):
        self.total, self.number, self.seconds = total, 0, {}
        self._name, self._started = None, 0.0

    def start(self, name: str, detail: str = "") -> None:
        self.finish()
        self.number += 1
        self._name, self._started = name, time.perf_counter()
        logger.info("Step %d/%d: %s%s", self.number, self.total, name,
                    f" ({detail})" if detail else "")

    def finish(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = time.perf_counter() - self._started
            self._name = None


def build_data(recipe: DemoRecipe, folder: Path) -> dict[str, Path]:
    from ica_hub.data.demo_data import build_demo_data, config_dict

    data = build_demo_data(recipe.data)
    paths = {}
    for name in DEMO_SPLITS:
        paths[name] = folder / name
        data[name].save_to_disk(str(paths[name]))
    (folder / "builder.json").write_text(json.dumps(config_dict(recipe.data), indent=2))
    return paths


def _score_settings(recipe: DemoRecipe, split: Path, holdout: Path, output: Path) -> dict:
    """The scoring recipe, as a dict, that scores ``split`` against ``holdout``."""
    settings = {
        "model": asdict(recipe.model),
        "data": {"pool": str(split), "holdout": str(holdout)},
        "scorer": asdict(recipe.scorer),
        "run": {"output_dir": str(output), "batch_size": recipe.batch_size,
                "rows_per_shard": 4 * recipe.batch_size},
    }
    if recipe.scorer.baseline == "pool":
        settings["data"]["baseline_pool"] = str(split)
    return settings


def score_split(recipe: DemoRecipe, split: Path, holdout: Path, output: Path,
                overrides: list[str] = ()):
    """``ica-hub score`` on one split; returns the scored dataset and its provenance."""
    from datasets import load_from_disk

    from ica_hub.scoring.recipe import ScoreRecipe, validate as validate_score
    from ica_hub.scoring.run import run_scoring

    score_recipe = config_from_dict(ScoreRecipe, _score_settings(recipe, split, holdout, output),
                                    list(overrides), validate_score)
    run_scoring(score_recipe)
    provenance = json.loads((output / "provenance.json").read_text())
    return load_from_disk(str(output)), provenance


def train_run(recipe: DemoRecipe, method: str, version, output: Path, *, weighted: bool):
    """``ica-hub train`` from a pushed version, loaded back from the Hub by its tag."""
    from ica_hub.config import TrainRecipe, validate as validate_train
    from ica_hub.training.run import run_training

    t = recipe.training
    learning_rate = t.sft_learning_rate if method == "sft" else t.preference_learning_rate
    settings = {
        "method": method,
        "model": asdict(recipe.model),
        "data": {"train": version.repo_id, "revision": version.tag,
                 "config_name": version.config_name, "split": version.split},
        # Preference pairs are always scored with the published margin change (ica_score).
        "weights": {"source": "score",
                    "score_column": recipe.score_column if method == "sft" else "ica_score",
                    "rule": "minmax" if weighted else "uniform"},
        "lora": {"enabled": t.lora},
        "training": {
            "output_dir": str(output), "num_train_epochs": t.num_train_epochs,
            "per_device_train_batch_size": t.per_device_train_batch_size,
            "gradient_accumulation_steps": t.gradient_accumulation_steps,
            "learning_rate": learning_rate, "lr_scheduler_type": "cosine",
            "max_length": t.max_length, "logging_steps": 1, "seed": t.seed,
        },
    }
    train_recipe = config_from_dict(TrainRecipe, settings, t.overrides, validate_train,
                                    source=f"demo {method} run")
    return run_training(train_recipe)


def evaluate_all(recipe: DemoRecipe, models: dict[str, str], paths: dict[str, Path],
                 scored_pool: Path, version, output: Path) -> dict[str, Any]:
    """``ica-hub eval``: every model on the test rows and pairs, the scores against row kinds."""
    from ica_hub.evaluation.recipe import EvalRecipe, validate as validate_eval
    from ica_hub.evaluation.run import run_eval

    columns = {"ica (published)": "ica_score", "ica per token": "ica_score_per_token",
               "loglik (no holdout)": "ica_logp_base_per_token"}
    if recipe.scorer.name == "ica-fit":
        columns = {"ica-fit": "fit_score", **columns}
    if recipe.score_column not in columns.values():
        columns = {f"default ({recipe.score_column})": recipe.score_column, **columns}
    settings = {
        "models": [{"name": name, "path": path} for name, path in models.items()],
        "data": {"test": str(paths["test"]), "pairs_test": str(paths["pairs_test"])},
        "scores": {"path": str(scored_pool), "columns": columns},
        "eval": {"max_length": recipe.eval_max_length},
        "output": {"path": str(output)},
        "push": {"repo_id": version.repo_id, "revision": version.tag, "name": "demo-eval"},
    }
    eval_recipe = config_from_dict(EvalRecipe, settings, None, validate_eval,
                                   source="demo evaluation")
    return run_eval(eval_recipe)


def run_demo(recipe: DemoRecipe) -> dict[str, Any]:
    """The main job; returns the evaluation results (also written and pushed)."""
    from ica_hub.hub.local import LocalHub, use_hub
    from ica_hub.hub.versions import push_scored

    started = time.perf_counter()
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = recipe.training
    steps = _Steps(total=5 + len(t.methods) + ("sft" in t.methods))

    steps.start("build the demo data", f"{recipe.data.num_pool} pool rows, "
                f"{recipe.data.num_holdout} holdout, {recipe.data.num_pairs} pairs")
    paths = build_data(recipe, out / "data")

    hub = None
    if recipe.hub.endpoint is None:
        hub = LocalHub(out / "hub").start()
        use_hub(hub.endpoint, hub.token)
        endpoint = hub.endpoint
    else:
        use_hub(recipe.hub.endpoint)
        endpoint = recipe.hub.endpoint
    try:
        steps.start("score the pool", f"{recipe.scorer.name} on {recipe.model.name_or_path}, "
                    f"k={recipe.scorer.k}")
        pool_scored, provenance = score_split(recipe, paths["pool"], paths["holdout"],
                                              out / "scored" / "pool")
        pool_scored = _with_base_per_token(pool_scored)
        pool_scored.save_to_disk(str(out / "scored" / "pool-eval"))
        pool_version = push_scored(pool_scored, recipe.hub.repo_id, provenance,
                                   config_name="pool", make_default=True)
        logger.info("Pushed %s@%s (%d rows)", pool_version.repo_id, pool_version.tag,
                    pool_version.num_rows)
        pairs_version = None
        if {"dpo", "simpo"} & set(t.methods):
            steps.start("score the preference pairs", "the change of the chosen-over-rejected "
                        "margin")
            pairs_scored, pairs_provenance = score_split(
                recipe, paths["pairs"], paths["holdout_pairs"], out / "scored" / "pairs")
            pairs_version = push_scored(pairs_scored, recipe.hub.repo_id, pairs_provenance,
                                        config_name="pairs", make_default=False)
            logger.info("Pushed %s@%s (%d pairs)", pairs_version.repo_id, pairs_version.tag,
                        pairs_version.num_rows)

        models = {"base": recipe.model.name_or_path}
        runs = [("sft", True, pool_version), ("sft", False, pool_version)]
        runs += [(m, True, pairs_version) for m in ("dpo", "simpo") if m in t.methods]
        for method, weighted, version in runs:
            name = f"{method}-{'ica' if weighted else 'uniform'}"
            steps.start(f"train {name}", f"{version.num_rows} rows of {version.repo_id}@"
                        f"{version.tag}, {'ICA weights' if weighted else 'uniform weights'}")
            models[name] = str(train_run(recipe, method, version, out / "train" / name,
                                         weighted=weighted))

        steps.start("evaluate", f"{len(models)} models on {recipe.data.num_test} test rows and "
                    f"{recipe.data.num_pairs_test} pairs; score AUROCs")
        results = evaluate_all(recipe, models, paths, out / "scored" / "pool-eval",
                               pool_version, out / "eval" / "results.json")
        steps.finish()
        _print_summary(recipe, results, steps, time.perf_counter() - started, endpoint,
                       pool_version, out)
        return results
    finally:
        if hub is not None:
            hub.stop()


def _with_base_per_token(scored):
    """Add ``ica_logp_base_per_token``: plain log-likelihood per token, the no-holdout baseline."""
    def add(row):
        base, count = row["ica_logp_base"], row["ica_num_response_tokens"]
        return {"ica_logp_base_per_token": base / count if base is not None and count else None}

    return scored.map(add, desc="plain log-likelihood per token")


def _print_summary(recipe, results, steps, seconds, endpoint, version, out) -> None:
    from ica_hub.evaluation.run import summary_lines

    print("\n" + "=" * 72)
    print("ica-hub demo: held-out results (target-domain test loss, preference accuracy) and "
          "how well each score separates clean from noisy and target from off-domain rows\n")
    print("\n".join(summary_lines(results)))
    losses = {name: m["response_loss"]["loss"] for name, m in results["models"].items()
              if m.get("response_loss")}
    if "sft-ica" in losses and "sft-uniform" in losses:
        change = losses["sft-ica"] - losses["sft-uniform"]
        print(f"\nICA-weighted SFT vs uniform SFT: test loss {change:+.4f} nats/token "
              f"({'lower' if change < 0 else 'not lower'}; one seed: see benchmarks/RESULTS.md "
              "for the spread over seeds)")
    print("\nTime per step: " + ", ".join(f"{name} {s:.0f} s" for name, s in
                                         steps.seconds.items()))
    print(f"Total: {seconds / 60:.1f} min. Outputs under {out}/: data, scored, train, eval.")
    print(f"\nScored version {version.repo_id}@{version.tag} (and its results) were pushed to "
          f"{endpoint}, which stopped with this job. To browse them again:")
    root = out / "hub"
    print(f"  ica-hub hub serve --root {root} --port 8765")
    print(f"  HF_ENDPOINT=http://127.0.0.1:8765 python -c \"from datasets import load_dataset; "
          f"print(load_dataset('{version.repo_id}', 'pool', revision='{version.tag}'))\"")
    if Path("spaces/ica_browser/app.py").exists():
        print(f"  ICA_HUB_ENDPOINT=http://127.0.0.1:8765 ICA_HUB_REPO={version.repo_id} "
              f"ICA_HUB_VERSION={version.tag} python spaces/ica_browser/app.py"
              "   # the Space, in a browser")


# -- the command -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    recipe_path, overrides = args.recipe, list(args.overrides)
    if recipe_path is not None and "=" in recipe_path and not Path(recipe_path).exists():
        recipe_path, overrides = None, [recipe_path, *overrides]  # no recipe, only overrides
    recipe = load_demo_recipe(recipe_path, overrides)
    run_demo(recipe)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the whole product end to end on real data",
                                   description=__doc__.replace("``", ""),  # plain text
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", default=None,
                        help="a demo recipe (YAML), e.g. recipes/demo.yaml; default: built-in "
                             "defaults, the same values")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="options on top, e.g. data.num_pool=128 training.methods=[sft]")
    parser.set_defaults(func=run)


__all__ = ["DemoRecipe", "RecipeError", "load_demo_recipe", "run_demo"]
