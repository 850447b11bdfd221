"""``ica-hub demo``: the main job on the embedded model and real ShareGPT data.

Builds the demo data (a coding holdout and a pool of target, off-domain and noisy rows), scores
the pool with the ICA scorer on the embedded SmolLM2-135M-Instruct, prints a summary table, and
writes the scored dataset (with ``provenance.json`` beside it) to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ica_hub.columns import ROW_KIND
from ica_hub.data.demo_data import BUILDER_NAME, DemoDataConfig, build_demo_data

logger = logging.getLogger(__name__)

CLEAN_KINDS = ("target", "off_domain")


def auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """P(a positive row scores above a negative one), ties counted half; NaN rows skipped."""
    from sklearn.metrics import roc_auc_score

    keep = ~np.isnan(scores)
    positive, scores = positive[keep], scores[keep]
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, scores))


def summarise(scored, columns: dict[str, str]) -> str:
    """A text table: per row kind, the mean of each score column; then both AUROCs."""
    kinds = np.array(scored[ROW_KIND])
    values = {name: np.array(scored[column], dtype=float) for name, column in columns.items()}
    width = max(map(len, columns)) + 2
    lines = ["kind".ljust(12) + "rows".rjust(6) + "".join(n.rjust(width) for n in columns)]
    for kind in dict.fromkeys(kinds):
        mask = kinds == kind
        means = "".join(f"{np.nanmean(v[mask]):{width}.3f}" for v in values.values())
        lines.append(f"{kind:12}{mask.sum():6d}{means}")
    clean = np.isin(kinds, CLEAN_KINDS)
    target = kinds == "target"
    noise = "".join(f"{auroc(clean, v):{width}.3f}" for v in values.values())
    domain = "".join(f"{auroc(target[clean], v[clean]):{width}.3f}" for v in values.values())
    lines += ["AUROC clean > noisy".ljust(18) + noise, "AUROC target > off".ljust(18) + domain]
    return "\n".join(lines)


def check_args(args: argparse.Namespace) -> None:
    """Every bad option at once, before anything is built or loaded."""
    problems = []
    if args.pool_size < 8:
        problems.append(f"--pool-size {args.pool_size}: needs at least 8 rows (every row kind)")
    if args.k < 1:
        problems.append(f"--k {args.k}: needs at least 1 demonstration")
    if args.holdout_size < max(args.k, 1):
        problems.append(f"--holdout-size {args.holdout_size}: needs at least k={args.k} rows")
    if args.max_length < 64:
        problems.append(f"--max-length {args.max_length}: too short for a prompt and an answer; "
                        "use 512 or more")
    if args.max_demonstration_tokens < 1:
        problems.append("--max-demonstration-tokens must be at least 1")
    if problems:
        raise ValueError("Invalid demo options:\n  " + "\n  ".join(problems))


def run_demo(args: argparse.Namespace) -> int:
    from ica_hub.scoring import ICAScorer

    check_args(args)
    output = Path(args.output)
    started = time.perf_counter()
    # Only the holdout and the pool are used here: no test rows or preference pairs.
    data_config = replace(DemoDataConfig(), num_pool=args.pool_size, num_holdout=args.holdout_size,
                          max_answer_chars=args.max_answer_chars, num_test=0, num_pairs=0,
                          num_pairs_test=0)
    logger.info("Step 1/3: building real demo data from ShareGPT (%d pool rows, %d holdout)",
                data_config.num_pool, data_config.num_holdout)
    data = build_demo_data(data_config)

    logger.info("Step 2/3: ICA scoring on %s, k=%d, layout=%s", args.model, args.k, args.layout)
    scorer = ICAScorer(data["holdout"], args.model, k=args.k, layout=args.layout,
                       max_length=args.max_length,
                       max_demonstration_tokens=args.max_demonstration_tokens,
                       holdout_source={"name": f"{BUILDER_NAME} holdout, seed {data_config.seed}"})
    # Batches of 8 rows: the bar moves every few seconds; larger batches share more prefixes.
    scored = data["pool"].map(scorer, batched=True, batch_size=8,
                              desc="ICA scoring (base and in-context passes)")
    scored = scored.map(
        lambda row: {"loglik_per_token": row["ica_logp_base"] / row["ica_num_response_tokens"]
                     if row["ica_logp_base"] is not None else None},
        desc="plain log-likelihood per token")

    logger.info("Step 3/3: writing %s", output)
    scored.save_to_disk(output / "scored")
    (output / "scored" / "provenance.json").write_text(json.dumps(scorer.provenance(), indent=2))
    table = summarise(scored, {"ica_score": "ica_score",
                               "ica_per_token": "ica_score_per_token",
                               "loglik_per_token": "loglik_per_token"})
    print("\nMean score by row kind, and how well each score separates the kinds:\n")
    print(table)
    flagged = sum(flag is not None for flag in scored["ica_flag"])
    print(f"\n{len(scored)} rows scored ({flagged} flagged) in "
          f"{time.perf_counter() - started:.0f} s. Scored dataset: {output / 'scored'}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="run the main job on the embedded model",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/demo", help="where results go")
    parser.add_argument("--model", default="embedded/smollm2-135m-instruct")
    parser.add_argument("--pool-size", type=int, default=64,
                        help="pool rows to score (about 5 s a row on 2 CPU cores)")
    parser.add_argument("--holdout-size", type=int, default=16)
    parser.add_argument("--k", type=int, default=3, help="demonstrations per row")
    parser.add_argument("--layout", default="single_turn", choices=("single_turn", "chat_turns"))
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--max-demonstration-tokens", type=int, default=64,
                        help="cap on each demonstration's question and answer (speed knob)")
    parser.add_argument("--max-answer-chars", type=int, default=600)
    parser.set_defaults(func=run_demo)
