"""Two scoring processes against one, on the same cores: throughput ratio and peak memory.

Run from the repository root (results in benchmarks/RESULTS.md):

    .venv/bin/python benchmarks/bench_distributed.py --rows 12 --rows-per-shard 2 \
        --batch-size 2 --override scorer.max_length=512 scorer.max_demonstration_tokens=96

The model is SmolLM2-135M's architecture at full size with random weights (scores are not the
point; compute per token is the real model's). The pool and holdout are the ShareGPT demo data;
scoring uses recipes/score.yaml with the row count, the shard plan and any --override changed.

Arms, each a fresh launch of the real entry point:

- ``1 process x T threads``: ``python -m ica_hub.score`` with every core to one process;
- ``2 processes x T/2 threads``: ``accelerate launch`` (gloo) with the cores split;
- ``1 process x T/2 threads``: one process on half the cores (how well one core scales).

The fair comparison is the first two: the same cores, used by one process or by two. The third
gives the ideal two-process speedup (twice one core).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "score.yaml"
CPU_2PROC = ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"


def build_random_model(folder: Path) -> None:
    """SmolLM2-135M's config and tokenizer, random weights, saved as a plain model folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ica_hub.models import embedded_model_dir

    source = embedded_model_dir()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_arm(processes: int, threads: int, model: Path, output: Path, args) -> dict:
    overrides = [
        f"model.name_or_path={model}", f"data.max_rows={args.rows}",
        f"run.output_dir={output}", f"run.rows_per_shard={args.rows_per_shard}",
        f"run.batch_size={args.batch_size}", f"run.torch_threads={threads}", "run.progress=false",
        *args.override,
    ]
    entry = ["-m", "ica_hub.score", str(RECIPE), *overrides]
    if processes == 1:
        command = [sys.executable, *entry]
    else:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        command = [accelerate, "launch", "--config_file", str(CPU_2PROC), "--num_processes",
                   str(processes), "--main_process_port", str(_free_port()), *entry]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    launch_seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"arm {processes}x{threads} failed:\n{done.stderr[-3000:]}")
    run = json.loads((output / "run.json").read_text())
    rows = sum(p["rows_scored"] for p in run["processes"])
    return {
        "arm": f"{processes} process{'es' if processes > 1 else ''} x {threads} thread"
               f"{'s' if threads > 1 else ''}",
        "processes": processes, "threads": threads, "rows": rows,
        "score_seconds": run["wall_seconds"], "rows_per_second": rows / run["wall_seconds"],
        "launch_seconds": launch_seconds,
        # Load-independent cost: CPU seconds (all threads) per row scored, over all processes.
        "cpu_seconds_per_row": sum(p["scoring_cpu_seconds"] for p in run["processes"]) / rows,
        "peak_rss_mib": [round(p["peak_rss_bytes"] / 2**20) for p in run["processes"]],
        "shards_per_process": [len(p["shards_computed"]) for p in run["processes"]],
        # Other users' load skews every figure: the 1-minute load average around the arm.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=24, help="pool rows scored per arm")
    parser.add_argument("--rows-per-shard", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the three arms")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--override", nargs="*", default=[], metavar="key=value",
                        help="recipe overrides for every arm, e.g. scorer.max_length=512")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    half = max(1, args.cores // 2)

    arms = ((1, args.cores), (2, half), (1, half))
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        model = Path(tmp) / "smollm2-135m-random"
        build_random_model(model)
        # Arms interleaved round by round, so a neighbour's load falls on all of them alike.
        for round_index in range(args.repeats):
            rounds.append([run_arm(p, t, model, Path(tmp) / f"out-{round_index}-{p}x{t}", args)
                           for p, t in arms])

    def median_rate(arm: int) -> float:
        return statistics.median(r[arm]["rows_per_second"] for r in rounds)

    summary = {
        "cores": args.cores, "rows": args.rows, "rounds": rounds,
        "ratio_2proc_vs_1proc_same_cores": median_rate(1) / median_rate(0),
        "ratio_2proc_vs_1proc_half_cores": median_rate(1) / median_rate(2),
    }
    print("| round | arm | rows/s (scoring) | score s | CPU s per row | launch s | peak RSS per "
          "process (MiB) | shards per process | load before, after |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for round_index, results in enumerate(rounds):
        for r in results:
            print(f"| {round_index} | {r['arm']} | {r['rows_per_second']:.3f} | "
                  f"{r['score_seconds']:.1f} | {r['cpu_seconds_per_row']:.1f} | "
                  f"{r['launch_seconds']:.1f} | "
                  f"{', '.join(map(str, r['peak_rss_mib']))} | "
                  f"{', '.join(map(str, r['shards_per_process']))} | "
                  f"{', '.join(map(str, r['load_average']))} |")
    print(f"\nMedian over {args.repeats} round(s): 2 processes / 1 process on the same "
          f"{args.cores} cores: {summary['ratio_2proc_vs_1proc_same_cores']:.2f}x; "
          f"on {half} core(s) each (ideal 2.0): {summary['ratio_2proc_vs_1proc_half_cores']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
