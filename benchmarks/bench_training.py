"""Time the weighted trainers against stock TRL on the same data, in the same run.

For each method (SFT, DPO, SimPO) the stock TRL trainer and the weighted one train the same
model from the same start on the same rows; runs alternate (stock, weighted, stock, ...) so
drifts in machine load hit both. Reported: seconds per optimizer step (median over the timed
steps, warm-up steps excluded), the ratio weighted / stock (target <= 1.03; re-scoring is not
part of it), the time the weighting itself adds to a step outside the model (collating the id
and score columns, scores to weights; measured apart, so it does not drown in timing noise), and
the cost of one re-scoring pass as a fraction of one training epoch, with a
one-pass response log-likelihood scorer (the ICA scorer needs two passes with longer contexts).

    python benchmarks/bench_training.py                      # embedded SmolLM2-135M
    python benchmarks/bench_training.py --model tiny         # 2-layer Llama, real tokenizer
    python benchmarks/bench_training.py --methods sft --steps 20 --repeats 3

``--model tiny`` (the test model) suits a CPU: the step is mostly the LM head over the real
49k-token vocabulary, so the trainers' fixed per-step costs weigh more than with a real model,
a stricter test of the ratio.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoTokenizer, TrainerCallback  # noqa: E402

from ica_hub.config import WeightsConfig  # noqa: E402
from ica_hub.models import embedded_model_dir, load_model_and_tokenizer  # noqa: E402
from ica_hub.training.trainers import TRAINERS, trl_config_class  # noqa: E402
from tests.training.helpers import (  # noqa: E402
    PREFERENCE_DATA,
    SFT_DATA,
    STOCK,
    load_rows,
    tiny_model,
)
from tests.training.scorers import make_loglik_rescorer  # noqa: E402

logger = logging.getLogger("bench_training")
DATA = {"sft": SFT_DATA, "dpo": PREFERENCE_DATA, "simpo": PREFERENCE_DATA}
METHOD_ARGS = {
    "sft": {},
    "dpo": {"beta": 0.5},
    "simpo": {"loss_type": "simpo", "cpo_alpha": 0.0, "beta": 2.5, "simpo_gamma": 1.375},
}


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, from its first micro-batch to the optimizer update."""

    def __init__(self):
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        _synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _synchronize()
        self.seconds.append(time.perf_counter() - self._start)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build(method, weighted, model, tokenizer, dataset, options, output_dir):
    args = trl_config_class(method)(
        output_dir=output_dir,
        max_steps=options.warmup + options.steps,
        per_device_train_batch_size=options.per_device,
        gradient_accumulation_steps=options.grad_accum,
        max_length=options.max_length,
        learning_rate=1e-6,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        seed=0,
        **METHOD_ARGS[method],
    )
    kwargs = dict(model=copy.deepcopy(model), args=args, train_dataset=dataset,
                  processing_class=tokenizer)  # fmt: skip
    if method == "dpo":
        kwargs["ref_model"] = copy.deepcopy(model)
    if weighted:
        return TRAINERS[method](weights=WeightsConfig(source="score"), **kwargs)
    return STOCK[method](**kwargs)


def time_one_run(method, weighted, model, tokenizer, dataset, options, output_dir) -> list[float]:
    trainer = build(method, weighted, model, tokenizer, dataset, options, output_dir)
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.seconds[options.warmup :]


def weighting_ms_per_step(method, model, tokenizer, dataset, options, output_dir) -> float:
    """What the weighted trainer adds to one optimizer step outside the model: collating the
    id and score columns, and turning the step's scores into weights (repeated, then averaged)."""
    trainer = build(method, True, model, tokenizer, dataset, options, output_dir)
    loader = trainer.get_train_dataloader()
    iterator = iter(loader)
    batches = [next(iterator) for _ in range(options.grad_accum)]
    rows = [trainer.train_dataset[i] for i in range(options.per_device)]
    repeats = 200
    start = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            trainer.data_collator(rows)  # the wrapper's share is measured with the inner collator
        trainer._weigh_effective_batch(batches)
    with_wrapper = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            trainer.data_collator.inner(rows)
    inner_only = time.perf_counter() - start
    return 1000 * (with_wrapper - inner_only) / repeats


def rescore_seconds(model, tokenizer, dataset) -> float:
    rescore = make_loglik_rescorer(tokenizer)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        rescore(model, dataset)
    _synchronize()
    return time.perf_counter() - start


def bench_method(method, model, tokenizer, options) -> dict:
    rows = load_rows(DATA[method])
    steps = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(options.repeats):
            for weighted in (False, True) if repeat % 2 == 0 else (True, False):
                steps[weighted] += time_one_run(
                    method, weighted, model, tokenizer, rows, options, tmp
                )
    stock, weighted = statistics.median(steps[False]), statistics.median(steps[True])
    examples_per_step = options.per_device * options.grad_accum
    epoch_seconds = weighted * len(rows) / examples_per_step
    rescore = rescore_seconds(model, tokenizer, rows)
    with tempfile.TemporaryDirectory() as tmp:
        overhead_ms = weighting_ms_per_step(method, model, tokenizer, rows, options, tmp)
    return {
        "weighting_ms_per_step": overhead_ms,
        "method": method,
        "stock_s_per_step": stock,
        "weighted_s_per_step": weighted,
        "ratio": weighted / stock,
        "timed_steps": len(steps[True]),
        "rescore_s_per_pass": rescore,
        "rescore_fraction_of_epoch": rescore / epoch_seconds,
    }


def load_model(name: str, device: str):
    if name != "tiny":
        model, tokenizer = load_model_and_tokenizer(name, device=device)
        return model.train(), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    return tiny_model(tokenizer).to(device).train(), tokenizer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="embedded/smollm2-135m-instruct", help="a model name/path, or tiny"
    )
    parser.add_argument("--methods", default="sft,dpo,simpo")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start")
    parser.add_argument("--repeats", type=int, default=2, help="runs per trainer, alternating")
    parser.add_argument("--per-device", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.WARNING)
    options = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(options.model, device)
    print(f"# model={options.model} device={device} threads={torch.get_num_threads()} "
          f"per_device={options.per_device} grad_accum={options.grad_accum} "
          f"max_length={options.max_length} steps={options.steps} warmup={options.warmup} "
          f"repeats={options.repeats}")  # fmt: skip
    print("| method | stock s/step | weighted s/step | ratio | timed steps | "
          "weighting ms/step | re-score s/pass | re-score / epoch |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for method in options.methods.split(","):
        r = bench_method(method, model, tokenizer, options)
        print(f"| {r['method']} | {r['stock_s_per_step']:.3f} | {r['weighted_s_per_step']:.3f} | "
              f"{r['ratio']:.3f} | {r['timed_steps']} | {r['weighting_ms_per_step']:.2f} | "
              f"{r['rescore_s_per_pass']:.2f} | "
              f"{r['rescore_fraction_of_epoch']:.1%} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
