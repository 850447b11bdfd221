"""Method quality: does each score find the clean, on-target rows, and does weighting by it help?

Same data, same run, every method scored and trained the same way, on the embedded
SmolLM2-135M-Instruct and the real ShareGPT demo data (``ica_hub.data.demo_data``), per seed:

1. Scores for the pool: the published ICA score (sum and per token), the contrastive variant
   (pool demonstrations subtracted), the default ``ica-fit`` and each of its three signals,
   plain log-likelihood per token (no holdout), RHO-LOSS with a reference model trained on the
   holdout, and random. Reported: AUROC of clean over noisy rows and of target over off-domain
   rows (clean rows only).
2. With ``--train``: LoRA SFT on the pool, uniform against weighted by each score (min-max per
   batch) and against keeping the top half by ``ica-fit``; target-domain test loss. DPO and
   SimPO on the preference pairs, uniform against ICA-weighted; held-out preference accuracy.

Each seed draws its own data (holdout, pool, test rows, pairs) and trains with its own seed;
the summary gives the mean and the spread (standard deviation) over seeds, and, for training,
the paired difference against uniform per seed. Stages are cached under ``--output`` per seed,
so an interrupted run resumes.

    python benchmarks/bench_quality.py --seeds 0 1 2 --pool 120            # scores (~45 min)
    python benchmarks/bench_quality.py --seeds 0 1 2 --pool 120 --train    # + training
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ica_hub.scoring.fit import SIGNALS as FIT_SIGNALS, HoldoutFitScorer

logger = logging.getLogger("bench_quality")

MODEL = "embedded/smollm2-135m-instruct"
FIT_VERSION = HoldoutFitScorer.scorer_version
# name: (column, what it is)
SCORES = {
    "ica-fit (default)": "fit_score",
    "ica (published, sum)": "ica_score",
    "ica per token": "ica_score_per_token",
    "ica contrastive": "contrastive_score",
    "ica contrastive per token": "contrastive_score_per_token",
    "in-context loglik per token": "fit_incontext_loglik",
    "holdout similarity (response state)": "fit_holdout_similarity",
    "question-answer agreement": "fit_qa_agreement",
    "end of turn log-prob": "fit_end_of_turn",
    "loglik per token (no holdout)": "loglik_per_token",
    "rho-loss": "rho_score",
    "rho-loss per token": "rho_score_per_token",
    "random": "random_score",
}
SFT_RUNS = {  # name: (score column or None for uniform, keep top half)
    "uniform": (None, False),
    "ica-fit weighted": ("fit_score", False),
    "ica-fit top half": ("fit_score", True),
    "ica (published) weighted": ("ica_score", False),
    "loglik weighted": ("loglik_per_token", False),
    "rho-loss weighted": ("rho_score", False),
    "random weighted": ("random_score", False),
}


def data_config(args, seed: int):
    from ica_hub.data.demo_data import DemoDataConfig

    return replace(DemoDataConfig(), seed=seed, num_pool=args.pool, num_holdout=args.holdout,
                   num_test=args.test, num_pairs=args.pairs, num_pairs_test=args.pairs,
                   max_answer_chars=args.max_answer_chars)


def score_pool(args, seed: int, folder: Path):
    """Every score column of the pool; each stage's columns cached in ``folder/stages``."""
    from ica_hub.data.demo_data import build_demo_data
    from ica_hub.scoring import ICAScorer, RhoLossScorer

    data = build_demo_data(data_config(args, seed))
    pool, holdout = data["pool"], data["holdout"]
    options = dict(k=args.k, max_length=1024, max_demonstration_tokens=args.demo_tokens)
    timings_file = folder / "scoring_seconds.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    def stage(name: str, make_scorer, columns: list[str], map_options):
        """The stage's columns, scored now or read back from its cache."""
        from datasets import load_from_disk

        cached = folder / "stages" / name.replace(" ", "_")
        if args.report_only and not cached.exists():
            return None  # not scored for this seed (--fit-only)
        if not cached.exists():
            started = time.perf_counter()
            scorer = make_scorer()
            scored = pool.map(scorer, batched=True, batch_size=16,
                              desc=f"seed {seed}: {name}", **map_options(scorer))
            scored.select_columns(columns).save_to_disk(str(cached))
            timings[name] = time.perf_counter() - started
            timings_file.write_text(json.dumps(timings, indent=2))
        return load_from_disk(str(cached))

    fit_columns = ["fit_score", *(f"fit_{name}" for name in FIT_SIGNALS), "ica_score",
                   "ica_score_per_token", "ica_logp_base", "ica_logp_context",
                   "ica_num_response_tokens"]
    features = lambda scorer: {"features": scorer.features_for(pool)}  # noqa: E731
    stages = [stage(f"ica-fit {FIT_VERSION} (and the published ica)",
                    lambda: HoldoutFitScorer(holdout, MODEL, **options), fit_columns, features)]
    if not args.fit_only:
        stages.append(stage(
            "contrastive ica",
            lambda: ICAScorer(holdout, MODEL, baseline="pool", baseline_pool=pool,
                              column_prefix="contrastive", **options),
            ["contrastive_score", "contrastive_score_per_token"], features))
        stages.append(stage(
            "rho-loss (incl. reference training)",
            lambda: RhoLossScorer(str(train_reference(args, seed, holdout, folder / "reference")),
                                  MODEL, max_length=1024),
            ["rho_score", "rho_score_per_token"], lambda scorer: {}))
    scored = pool
    if stages[0] is not None and args.domain_weights:
        scored = _other_domain_weights(args, holdout, folder, stages[0], scored, options)
    for columns in filter(None, stages):
        for name in columns.column_names:
            scored = scored.add_column(name, columns[name])
    loglik = [b / n if b is not None and n else None
              for b, n in zip(scored["ica_logp_base"], scored["ica_num_response_tokens"])]
    scored = scored.add_column("loglik_per_token", loglik)
    random = np.random.default_rng(seed).random(len(scored)).tolist()
    return scored.add_column("random_score", random)


def _other_domain_weights(args, holdout, folder: Path, fit_columns, scored, options):
    """``fit_score`` at each of ``--domain-weights``, from the cached signal columns and the
    holdout's statistics (one holdout pass, cached): what rescoring at that weight would give."""
    stats_file = folder / "stages" / f"ica-fit_{FIT_VERSION}_holdout_statistics.json"
    scorer = HoldoutFitScorer(holdout, MODEL, **options)
    if stats_file.exists():
        scorer._stats = {name: tuple(v) for name, v in json.loads(stats_file.read_text()).items()}
    else:
        stats_file.write_text(json.dumps(scorer.holdout_statistics(), indent=2))
    signals = [{name: row[f"fit_{name}"] for name in FIT_SIGNALS} for row in fit_columns]
    check = [scorer.combine(values) for values in signals]
    if not np.allclose(np.array(check, dtype=float), np.array(fit_columns["fit_score"],
                                                             dtype=float), atol=1e-6):
        raise RuntimeError(f"{stats_file} does not reproduce the cached fit_score: delete it")
    for weight in args.domain_weights:
        scored = scored.add_column(f"fit_score_w{weight:g}",
                                   [scorer.combine(values, weight) for values in signals])
    return scored


def train_reference(args, seed: int, holdout, folder: Path) -> Path:
    """RHO-LOSS's reference: the model fine-tuned (all weights) on the holdout."""
    if (folder / "config.json").exists():
        return folder
    # Uniform weights: the trainers still read a score column, all equal here.
    holdout.add_column("ica_score", [0.0] * len(holdout)).save_to_disk(
        str(folder.parent / "holdout"))
    run_training(method="sft", train=folder.parent / "holdout", output=folder, seed=seed,
                 weighted=None, lora=False, learning_rate=5e-5, epochs=2, args=args)
    return folder


def run_training(*, method: str, train: Path, output: Path, seed: int, weighted: str | None,
                 lora: bool, learning_rate: float, epochs: float, args) -> Path:
    from ica_hub.config import TrainRecipe, config_from_dict, validate
    from ica_hub.training.run import run_training as train_recipe

    settings = {
        "method": method,
        "model": {"name_or_path": MODEL},
        "data": {"train": str(train)},
        "weights": {"source": "score", "score_column": weighted or "ica_score",
                    "rule": "minmax" if weighted else "uniform"},
        "lora": {"enabled": lora},
        "training": {"output_dir": str(output), "num_train_epochs": epochs,
                     "per_device_train_batch_size": args.batch_size,
                     "learning_rate": learning_rate, "lr_scheduler_type": "cosine",
                     "max_length": args.train_max_length, "logging_steps": 1, "seed": seed},
    }
    return train_recipe(config_from_dict(TrainRecipe, settings, None, validate))


def training_folder(args, folder: Path) -> Path:
    """Where a seed's training runs and their results live: one folder per training setting."""
    return folder / f"training-{args.training_tag}" if args.training_tag else folder


def score_quality(scored) -> dict:
    """The AUROCs of ``ica_hub.evaluation.evaluate_model.score_quality`` per score: clean over
    noisy among target-domain rows (shared/METHOD.md's noise scenario) and over the whole pool,
    and target over off-domain rows."""
    from ica_hub.evaluation.evaluate_model import score_quality as quality

    columns = {name: column for name, column in SCORES.items() if column in scored.column_names}
    return quality(scored, columns)


def _scores_of(name: str) -> str | None:
    """The score version an SFT run named ``sft <run>`` was weighted by (None: no score)."""
    column = SFT_RUNS.get(name.removeprefix("sft "), (None, False))[0]
    return f"ica-fit/{FIT_VERSION}" if column == "fit_score" else None


def _current(name: str, run: dict) -> bool:
    """False for a cached run trained on an earlier version of the default score."""
    return run.get("scores") == _scores_of(name)


def train_and_evaluate(args, seed: int, folder: Path, scored) -> dict:
    """SFT variants on the pool, DPO/SimPO on the pairs; held-out metrics per run (cached)."""
    from ica_hub.data.demo_data import build_demo_data
    from ica_hub.evaluation.evaluate_model import evaluate_model
    from ica_hub.scoring import ICAScorer

    runs = training_folder(args, folder)
    runs.mkdir(parents=True, exist_ok=True)
    results_file = runs / "training.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    data = build_demo_data(data_config(args, seed))
    test, pairs_test = data["test"], data["pairs_test"]

    def evaluate(name: str, model_path: str, seconds: float | None,
                 scores: str | None = None) -> None:
        metrics = evaluate_model(model_path, test=test, pairs_test=pairs_test, max_length=1024)
        results[name] = {"test_loss": metrics["response_loss"]["loss"],
                         "preference_accuracy": metrics["preference_accuracy"]["accuracy"],
                         "train_seconds": seconds, "scores": scores}
        results_file.write_text(json.dumps(results, indent=2))
        logger.info("seed %d %s: %s", seed, name, results[name])

    if "base" not in results:
        evaluate("base", MODEL, None)
    for name in args.sft_runs:
        column, top_half = SFT_RUNS[name]
        if f"sft {name}" in results and _current(f"sft {name}", results[f"sft {name}"]):
            continue  # a run weighted by an earlier version of the default score: train again
        rows = scored
        if top_half:
            values = np.array([np.nan if v is None else v for v in scored[column]])
            keep = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")
            rows = scored.select(sorted(keep[: len(values) // 2].tolist()))
        train = runs / "train-data" / name.replace(" ", "_")
        rows.save_to_disk(str(train))
        started = time.perf_counter()
        output = run_training(method="sft", train=train, output=runs / "sft" / name.replace(
            " ", "_"), seed=seed, weighted=None if top_half else column, lora=True,
            learning_rate=args.sft_lr, epochs=args.sft_epochs, args=args)
        evaluate(f"sft {name}", str(output), time.perf_counter() - started,
                 _scores_of(f"sft {name}"))

    pairs_path = folder / "pairs-scored"
    if args.preference_methods and not pairs_path.exists():
        scorer = ICAScorer(data["holdout_pairs"], MODEL, k=args.k, max_length=1024,
                           max_demonstration_tokens=args.demo_tokens)
        pairs = data["pairs"]
        pairs.map(scorer, batched=True, batch_size=8, features=scorer.features_for(pairs),
                  desc=f"seed {seed}: ica on pairs").save_to_disk(str(pairs_path))
    for method in [m for m in ("dpo", "simpo") if m in args.preference_methods]:
        for weighted in (None, "ica_score"):
            name = f"{method} {'ica weighted' if weighted else 'uniform'}"
            if name in results:
                continue
            started = time.perf_counter()
            output = run_training(method=method, train=pairs_path,
                                  output=runs / method / ("ica" if weighted else "uniform"),
                                  seed=seed, weighted=weighted, lora=True,
                                  learning_rate=args.pref_lr, epochs=1, args=args)
            evaluate(name, str(output), time.perf_counter() - started)
    return results


# -- the report --------------------------------------------------------------------------


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def gains_by_kind(scored) -> dict[str, dict[str, float]]:
    """Mean per-token log-prob gain by row kind: from holdout and from pool demonstrations.

    ``ica_score_per_token`` = (log p(y|C_holdout,x) - log p(y|x)) / |y|; the contrastive column
    subtracts the pool-demonstration pass instead, so their difference is the gain from pool
    demonstrations, (log p(y|C_pool,x) - log p(y|x)) / |y|.
    """
    if "contrastive_score_per_token" not in scored.column_names:
        return None
    kinds = np.array(scored["row_kind"])
    holdout = np.array([np.nan if v is None else v for v in scored["ica_score_per_token"]])
    contrast = np.array([np.nan if v is None else v
                         for v in scored["contrastive_score_per_token"]])
    out = {}
    for kind in ("target", "off_domain", "swapped", "truncated", "corrupted"):
        mask = kinds == kind
        out[kind] = {"holdout": float(np.nanmean(holdout[mask])),
                     "pool": float(np.nanmean(holdout[mask] - contrast[mask])),
                     "rows": int(mask.sum())}
    return out


def report(per_seed: dict[int, dict], args) -> str:
    seeds = sorted(per_seed)
    lines = [f"### Score quality ({len(seeds)} seeds: {seeds}; pool {args.pool} rows, holdout "
             f"{args.holdout}, k={args.k})", "",
             "AUROC, mean ± standard deviation over seeds (0.5 = chance).", "",
             "Noise scenario: clean over noisy among target-domain rows (the rows of the "
             "holdout's domain: METHOD.md's noise scenario). Whole pool: clean over noisy over "
             "all rows, where clean off-domain rows count as clean, so a score that ranks them "
             "low for being off target loses here. Domain scenario: target over off-domain, "
             "clean rows only.", "",
             "| score | noise scenario | whole pool, clean > noisy | domain scenario | "
             "per seed (noise / whole pool / domain) |", "|---|---|---|---|---|"]

    def aurocs(name: str, key: str) -> list[float | None]:
        return [per_seed[s]["quality"].get(name, {}).get(key, {}).get("auroc") for s in seeds]

    for name in SCORES:
        noise, pool = aurocs(name, "clean_over_noisy_in_target"), aurocs(name, "clean_over_noisy")
        domain = aurocs(name, "target_over_off_domain")
        if all(v is None for v in pool):
            continue
        detail = ", ".join("-" if p is None else "/".join(
            "-" if v is None else f"{v:.2f}" for v in (n, p, d))
            for n, p, d in zip(noise, pool, domain))
        lines.append(f"| {name} | {_mean_std(noise)} | {_mean_std(pool)} | {_mean_std(domain)} "
                     f"| {detail} |")
    lines += ["", "### Why the published score points the wrong way here", "",
              "Mean log-prob gain per response token from k demonstrations, by row kind "
              "(mean over seeds): from the holdout's nearest rows (the published score) and from "
              "the pool's nearest rows (any context of the same size).", "",
              "| row kind | from holdout demonstrations | from pool demonstrations |",
              "|---|---|---|"]
    for kind in ("target", "off_domain", "swapped", "truncated", "corrupted"):
        gains = [per_seed[s]["gains"][kind] for s in seeds if per_seed[s].get("gains")]
        if gains:
            lines.append(f"| {kind} | {np.mean([g['holdout'] for g in gains]):+.4f} | "
                         f"{np.mean([g['pool'] for g in gains]):+.4f} |")
    trained = [s for s in seeds if per_seed[s].get("training")]
    if trained:
        lines += ["", f"### Training ({len(trained)} seeds: {trained}; LoRA, SFT "
                  f"{args.sft_epochs:g} epochs at lr {args.sft_lr:g}, batch {args.batch_size}, "
                  f"max_length {args.train_max_length})", "",
                  "Target-domain test loss (nats per response token) and held-out preference "
                  "accuracy; \"vs uniform\" is the paired difference per seed (negative: lower "
                  "loss than uniform), mean ± standard deviation, then each seed's.", "",
                  "| run | test loss | vs uniform | per seed | preference accuracy | vs uniform "
                  "| train s |", "|---|---|---|---|---|---|---|"]
        names = list(dict.fromkeys(name for s in trained for name in per_seed[s]["training"]))
        for name in names:
            rows = [r for s in trained if (r := per_seed[s]["training"].get(name))]
            method = name.split()[0]
            uniform = {"sft": "sft uniform", "dpo": "dpo uniform", "simpo": "simpo uniform"}.get(
                method, "base")
            diffs_loss, diffs_acc = [], []
            for s in trained:
                run, base = per_seed[s]["training"].get(name), per_seed[s]["training"].get(uniform)
                if run and base:
                    diffs_loss.append(run["test_loss"] - base["test_loss"])
                    diffs_acc.append(run["preference_accuracy"] - base["preference_accuracy"])
            paired = name != uniform and diffs_loss
            seconds = [r["train_seconds"] for r in rows if r.get("train_seconds")]
            lines.append(
                f"| {name} | {_mean_std([r['test_loss'] for r in rows])} | "
                f"{_mean_std(diffs_loss) if paired else '-'} | "
                f"{' / '.join(f'{d:+.3f}' for d in diffs_loss) if paired else '-'} | "
                f"{_mean_std([r['preference_accuracy'] for r in rows])} | "
                f"{_mean_std(diffs_acc) if paired else '-'} | "
                f"{f'{np.mean(seconds):.0f}' if seconds else '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pool", type=int, default=120)
    parser.add_argument("--holdout", type=int, default=24)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--demo-tokens", type=int, default=128,
                        help="cap on each demonstration's question and answer")
    parser.add_argument("--max-answer-chars", type=int, default=600)
    parser.add_argument("--domain-weights", type=float, nargs="*", default=[0.0, 0.5, 1.0],
                        help="also report ica-fit at these domain_weight values (recombined from "
                             "the cached signals; one extra holdout pass per seed)")
    parser.add_argument("--train", action="store_true", help="also train and evaluate")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from what earlier runs cached; train nothing")
    parser.add_argument("--fit-only", action="store_true",
                        help="score with ica-fit alone (its columns include the published ica "
                             "and plain likelihood); skip the contrastive and RHO-LOSS stages")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-max-length", type=int, default=512)
    parser.add_argument("--sft-lr", type=float, default=2e-4)
    parser.add_argument("--sft-epochs", type=float, default=1.0)
    parser.add_argument("--training-tag", default="",
                        help="keep this setting's runs apart, in seedN/training-TAG (the scores "
                             "are shared): compare training settings without retraining")
    parser.add_argument("--pref-lr", type=float, default=5e-5)
    parser.add_argument("--sft-runs", nargs="+", default=list(SFT_RUNS), choices=list(SFT_RUNS),
                        metavar="RUN", help=f"SFT runs to train, of: {', '.join(SFT_RUNS)}")
    parser.add_argument("--preference-methods", nargs="*", default=["dpo", "simpo"],
                        choices=["dpo", "simpo"], help="preference runs to train (none: SFT only)")
    parser.add_argument("--output", default="outputs/bench_quality")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", datefmt="%H:%M:%S")
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)

    for weight in args.domain_weights:  # reported right after the default
        SCORES[f"ica-fit, domain_weight {weight:g}"] = f"fit_score_w{weight:g}"
    order = ["ica-fit (default)", *(f"ica-fit, domain_weight {w:g}" for w in args.domain_weights)]
    for name in [*order, *(n for n in list(SCORES) if n not in order)]:
        SCORES[name] = SCORES.pop(name)
    started = time.perf_counter()
    per_seed = {}
    from ica_hub.data.demo_data import BUILDER_NAME

    for seed in args.seeds:
        # One cache per data builder: rows labelled by another builder are other data.
        folder = Path(args.output) / BUILDER_NAME.replace("/", "-") / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        scored = score_pool(args, seed, folder)
        per_seed[seed] = {"quality": score_quality(scored), "gains": gains_by_kind(scored)}
        if args.report_only:
            runs = training_folder(args, folder) / "training.json"
            results = json.loads(runs.read_text()) if runs.exists() else {}
            per_seed[seed]["training"] = {name: run for name, run in results.items()
                                          if _current(name, run)}
        elif args.train:
            per_seed[seed]["training"] = train_and_evaluate(args, seed, folder, scored)
        (folder / "quality.json").write_text(json.dumps(per_seed[seed], indent=2, default=str))
    text = report(per_seed, args)
    header = (f"`python benchmarks/bench_quality.py {' '.join(_argv())}` on "
              f"{platform.machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{(time.perf_counter() - started) / 60:.0f} min in this invocation (cached "
              "stages not counted).")
    print("\n" + header + "\n\n" + text)
    (Path(args.output) / "report.md").write_text(header + "\n\n" + text + "\n")


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
