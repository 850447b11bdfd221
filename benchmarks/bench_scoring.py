"""Scoring speed: ICA scoring against a plain forward pass and the naive method, same rows, one run.

    .venv/bin/python benchmarks/bench_scoring.py [--rows 24] [--k 3] [--device cpu] [--dtype float32]

Methods timed on the same rows of the real demo pool, one after the other in one process:

- plain: one no-grad pass over each row (prompt + response), response log-probs only: the
  floor a scorer of likelihood pays.
- ICA fixed / nearest: ``ICAScorer`` with prefix reuse (fixed: one demonstration set for all
  rows; nearest: the k nearest holdout rows of each row).
- naive fixed / nearest: what the authors' code does: each row's demonstrations, prompt and
  response concatenated and run in full, one row at a time, through ``model(...).logits``.
- no-reuse fixed / nearest: ICA's own batching with prefix reuse switched off, to separate what
  reuse buys from what batching buys.

Scores of every ICA method are checked against naive (max absolute difference per response
token). ``--config-only`` builds a model of the same shape from the embedded model's config with
random weights (for accelerators where only timing matters and weights cannot travel).
Results are printed as a Markdown table and appended to benchmarks/RESULTS.md with --write.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ica_hub.data.demo_data import DemoDataConfig, build_demo_data
from ica_hub.models import embedded_model_dir, load_model_and_tokenizer
from ica_hub.scoring import ICAScorer, LikelihoodScorer
from ica_hub.scoring.engine import LogProbEngine


class NaiveEngine(LogProbEngine):
    """One row at a time, whole sequence, full logits: the authors' way."""

    @torch.inference_mode()
    def response_logps(self, items):
        sums = np.zeros(len(items))
        counts = np.array([len(item.response) for item in items])
        for index, item in enumerate(items):
            ids = sum(item.prefix, ()) + item.suffix + item.response
            input_ids = torch.tensor([ids], device=self.device)
            logps = torch.log_softmax(self.model(input_ids=input_ids).logits.float(), -1)[0]
            start = len(ids) - len(item.response)
            targets = torch.tensor(item.response, device=self.device)
            positions = torch.arange(start - 1, len(ids) - 1, device=self.device)
            sums[index] = logps[positions, targets].double().sum().item()
            self.forward_tokens += len(ids)
        return sums, counts


def run(args) -> str:
    torch.manual_seed(0)
    if args.config_only:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        config = AutoConfig.from_pretrained(embedded_model_dir())
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
        tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
        model.to(args.device).eval()
    else:
        model, tokenizer = load_model_and_tokenizer(dtype=getattr(torch, args.dtype),
                                                    device=args.device)
    data = build_demo_data(DemoDataConfig(num_pool=max(args.rows, 32), num_holdout=args.holdout,
                                          max_answer_chars=args.max_answer_chars))
    rows = data["pool"].select(range(args.rows))
    batch = rows.to_dict()
    common = dict(k=args.k, max_length=args.max_length,
                  max_demonstration_tokens=args.max_demonstration_tokens)

    results, per_token = {}, {}

    def measure(name, scorer, engine=None):
        if engine is not None:
            scorer._engine = engine
        if hasattr(scorer, "_holdout_index"):
            scorer._holdout_index.embeddings  # embed the holdout before the clock starts
        started = time.perf_counter()
        columns = scorer(batch)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        results[name] = time.perf_counter() - started
        prefix = "loglik" if name == "plain" else "ica"
        per_token[name] = np.array(columns.get(f"{prefix}_score_per_token",
                                               columns.get(f"{prefix}_score")), dtype=float)
        print(f"{name:18s} {results[name]:8.2f} s", flush=True)

    # Warm-up on two rows so that first-call costs (threads, allocator) hit no method.
    LikelihoodScorer(model, tokenizer, max_length=args.max_length)(rows.select(range(2)).to_dict())

    measure("plain", LikelihoodScorer(model, tokenizer, max_length=args.max_length))
    for selection in ("fixed", "nearest"):
        measure(f"ICA {selection}", ICAScorer(data["holdout"], model, tokenizer,
                                              selection=selection, **common))
        measure(f"no-reuse {selection}", ICAScorer(data["holdout"], model, tokenizer,
                                                   selection=selection, reuse_prefix=False,
                                                   **common))
        measure(f"naive {selection}", ICAScorer(data["holdout"], model, tokenizer,
                                                selection=selection, **common),
                engine=NaiveEngine(model))

    device = args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name()
    lines = [
        f"### Scoring speed ({device}, {args.dtype}, {'random weights, ' if args.config_only else ''}"
        f"{args.rows} rows, k={args.k}, demonstration cap {args.max_demonstration_tokens} tokens)",
        "",
        f"`{' '.join(['python benchmarks/bench_scoring.py'] + args.argv)}` on "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
        "",
        "| method | seconds | rows/s | vs plain | naive / this | max abs diff per token vs naive |",
        "|---|---|---|---|---|---|",
    ]
    for name, seconds in results.items():
        selection = name.split()[-1]
        naive = results.get(f"naive {selection}")
        diff = ""
        if name != "plain":
            diff = f"{np.nanmax(np.abs(per_token[name] - per_token[f'naive {selection}'])):.1e}"
        lines.append(f"| {name} | {seconds:.2f} | {args.rows / seconds:.2f} | "
                     f"{seconds / results['plain']:.2f} | "
                     f"{(naive / seconds) if naive and name != 'plain' else float('nan'):.2f} | "
                     f"{diff} |")
    return "\n".join(lines)


def main(argv=None):
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--holdout", type=int, default=16)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--max-demonstration-tokens", type=int, default=64)
    parser.add_argument("--max-answer-chars", type=int, default=600)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--config-only", action="store_true")
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    table = run(args)
    print(table)
    if args.write:
        path = Path(__file__).with_name("RESULTS.md")
        with open(path, "a") as handle:
            handle.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
