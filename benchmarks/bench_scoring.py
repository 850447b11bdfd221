"""Scoring speed: ICA scoring against a plain forward pass and the naive method, same rows, one run.

    .venv/bin/python benchmarks/bench_scoring.py [--rows 24] [--k 3] [--device cpu] [--dtype float32]
        [--selections fixed nearest] [--skip-no-reuse] [--min-shared-items N ...]
        [--rows-from demo-pool|sharegpt]

Methods timed on the same real rows (the demo pool's, or with ``--rows-from sharegpt`` the first
ShareGPT exchanges of any topic, for map calls larger than the demo pool), one after the other in
one process:

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
from ica_hub.scoring.engine import EngineOutput, LogProbEngine


class NaiveEngine(LogProbEngine):
    """One row at a time, whole sequence, full logits: the authors' way.

    Overrides the engine's one entry point (``run``, which ``response_logps`` and
    ``response_and_ending_logps`` call too), so that every scorer runs through it.
    """

    @torch.inference_mode()
    def run(self, items):
        sums = np.zeros(len(items))
        counts = np.array([len(item.response) for item in items])
        endings = np.full(len(items), np.nan)
        states = np.full((len(items), self.model.config.hidden_size), np.nan, np.float32)
        for index, item in enumerate(items):
            head = sum(item.prefix, ()) + item.suffix
            ids = head + item.response + item.ending
            input_ids = torch.tensor([ids], device=self.device)
            output = self.model(input_ids=input_ids, output_hidden_states=item.keep_state)
            logps = torch.log_softmax(output.logits.float(), -1)[0]
            # position p predicts token p + 1
            positions = torch.arange(len(head) - 1, len(ids) - 1, device=self.device)
            token_logps = logps[positions, torch.tensor(ids[len(head):], device=self.device)]
            token_logps = token_logps.double()
            sums[index] = token_logps[: len(item.response)].sum().item()
            if item.ending:
                endings[index] = token_logps[len(item.response):].sum().item()
            if item.keep_state:
                hidden = output.hidden_states[-1][0, positions[: len(item.response)]]
                states[index] = hidden.float().mean(0).cpu().numpy()
            self.forward_tokens += len(ids)
        return EngineOutput(sums, counts, endings, states)


def sharegpt_rows(count: int, max_answer_chars: int):
    """The first ``count`` ShareGPT exchanges that pass the demo builder's filters."""
    from datasets import Dataset

    from ica_hub.data.demo_data import _first_exchange, read_sharegpt

    config = DemoDataConfig(max_answer_chars=max_answer_chars)
    rows = []
    for record in read_sharegpt():
        if (exchange := _first_exchange(record, config)) is not None:
            rows.append({"prompt": exchange[1], "completion": exchange[2]})
            if len(rows) == count:
                return Dataset.from_list(rows)
    raise SystemExit(f"ShareGPT has only {len(rows)} rows passing the filters; lower --rows")


def tokens_through_model(scorer) -> int:
    """Tokens the scorer's engines ran through the model: what prefix reuse saves."""
    engine = getattr(scorer, "_engine", None)
    engines = [engine] if isinstance(engine, LogProbEngine) else []
    engines += list(getattr(scorer, "_engines", {}).values())
    return sum(engine.forward_tokens for engine in engines)


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
    if args.rows_from == "demo-pool":
        data = build_demo_data(DemoDataConfig(num_pool=max(args.rows, 32),
                                              num_holdout=args.holdout,
                                              max_answer_chars=args.max_answer_chars))
        rows = data["pool"].select(range(args.rows))
    else:  # more rows than the demo pool holds: the first ShareGPT exchanges, any topic
        data = build_demo_data(DemoDataConfig(num_pool=32, num_holdout=args.holdout,
                                              max_answer_chars=args.max_answer_chars))
        rows = sharegpt_rows(args.rows, args.max_answer_chars)
    batch = rows.to_dict()
    common = dict(k=args.k, max_length=args.max_length,
                  max_demonstration_tokens=args.max_demonstration_tokens)

    results, per_token, tokens_run = {}, {}, {}

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
        tokens_run[name] = tokens_through_model(scorer)
        prefix = "loglik" if name == "plain" else "ica"
        per_token[name] = np.array(columns.get(f"{prefix}_score_per_token",
                                               columns.get(f"{prefix}_score")), dtype=float)
        print(f"{name:18s} {results[name]:8.2f} s", flush=True)

    # Warm-up on two rows so that first-call costs (threads, allocator) hit no method.
    LikelihoodScorer(model, tokenizer, max_length=args.max_length)(rows.select(range(2)).to_dict())

    measure("plain", LikelihoodScorer(model, tokenizer, max_length=args.max_length))
    for selection in args.selections:
        measure(f"ICA {selection}", ICAScorer(data["holdout"], model, tokenizer,
                                              selection=selection, **common))
        for shared in args.min_shared_items:
            measure(f"ICA {selection} min-shared {shared}",
                    ICAScorer(data["holdout"], model, tokenizer, selection=selection, **common),
                    engine=LogProbEngine(model, min_shared_items=shared))
        if not args.skip_no_reuse:
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
        "| method | seconds | rows/s | tokens run | vs plain | naive / this | "
        "max abs diff per token vs naive |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, seconds in results.items():
        selection = "nearest" if "nearest" in name else "fixed"
        naive = results.get(f"naive {selection}")
        diff = ""
        if name != "plain":
            diff = f"{np.nanmax(np.abs(per_token[name] - per_token[f'naive {selection}'])):.1e}"
        lines.append(f"| {name} | {seconds:.2f} | {args.rows / seconds:.2f} | "
                     f"{tokens_run[name]} | "
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
    parser.add_argument("--max-demonstration-tokens", type=int, default=256)
    parser.add_argument("--max-answer-chars", type=int, default=600)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--config-only", action="store_true")
    parser.add_argument("--rows-from", choices=["demo-pool", "sharegpt"], default="demo-pool",
                        help="demo-pool: the demo pool's rows (at most about 150 at 900 "
                             "characters); sharegpt: the first ShareGPT exchanges of any topic, "
                             "for larger map calls (the holdout is the demo holdout either way)")
    parser.add_argument("--selections", nargs="+", default=["fixed", "nearest"],
                        choices=["fixed", "nearest"], help="demonstration modes to time")
    parser.add_argument("--skip-no-reuse", action="store_true",
                        help="time ICA and naive only, not ICA with prefix reuse switched off")
    parser.add_argument("--min-shared-items", type=int, nargs="*", default=[],
                        help="also time ICA with the engine's min_shared_items set to each of "
                             "these (the default engine's value is timed as plain 'ICA')")
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
