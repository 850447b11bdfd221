"""Which hidden states of the scoring model tell the holdout's domain apart? (ica-fit's domain term)

For each seed's demo data (the same draw as ``bench_quality.py``: pool 120, holdout 24, answers
up to 900 characters), every holdout row and every clean pool row is run once through the
embedded SmolLM2-135M-Instruct, and each way of pooling its hidden states into one vector is
scored the way ``ica-fit`` scores its domain term: the mean cosine similarity to the k nearest
holdout rows. Reported: the AUROC of target over off-domain rows (clean rows only, the domain
scenario of bench_quality.py) per pooling, mean ± standard deviation over seeds.

Poolings:

- ``text layer L``: question and answer as plain text (``question\\nanswer``), the layer-L states
  averaged over every position;
- ``template final layer, all positions``: the chat template's conversation, final layer,
  averaged over every position;
- ``template final layer, response positions``: the same pass, averaged over the positions that
  predict the answer's tokens (what ``ica-fit/v3`` uses; it takes it from the plain pass of the
  ICA score, so it costs nothing extra there);
- ``... centred on the holdout mean``: the last one with the holdout's mean state subtracted
  from every vector before the cosine (whether what holdout rows share is the signal).

    python benchmarks/probe_states.py --seeds 0 1 2 3 4 5          # ~2 minutes a seed, 1 core
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch
from tqdm.auto import tqdm

MODEL = "embedded/smollm2-135m-instruct"


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def knn_similarity(queries: np.ndarray, holdout: np.ndarray, k: int,
                   exclude_self: bool = False) -> np.ndarray:
    """Mean cosine similarity of each query to its k most similar holdout vectors."""
    similarity = _unit(queries) @ _unit(holdout).T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    return np.sort(similarity, axis=1)[:, -k:].mean(axis=1)


@torch.no_grad()
def states_of(model, tokenizer, question: str, answer: str, max_length: int) -> dict:
    """Pooled hidden states of one row: per layer over the plain text, and the template's final
    layer over all positions and over the positions that predict the answer."""
    text = tokenizer(f"{question}\n{answer}", return_tensors="pt", truncation=True,
                     max_length=max_length)
    hidden = model(**text, output_hidden_states=True).hidden_states
    out = {f"text layer {layer}": h[0].mean(0).numpy() for layer, h in enumerate(hidden)
           if layer > 0}

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                           add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                          {"role": "assistant", "content": answer}],
                                         tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if len(ids) > max_length:  # keep the answer: cut the question from the left
        cut = len(ids) - max_length
        ids, prompt_len = ids[cut:], max(1, len(prompt_ids) - cut)
    else:
        prompt_len = len(prompt_ids)
    final = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
    out["template final layer, all positions"] = final.mean(0).numpy()
    # Position t predicts token t + 1: the answer's tokens are predicted from prompt_len - 1 on.
    out["template final layer, response positions"] = final[prompt_len - 1:-1].mean(0).numpy()
    return out


def probe_seed(seed: int, args, model, tokenizer) -> dict[str, float]:
    from ica_hub.columns import ROW_KIND
    from ica_hub.data.demo_data import DemoDataConfig, build_demo_data
    from ica_hub.evaluation.metrics import load_metric

    metric = load_metric("score_auroc", keep_in_memory=True)

    def auroc(scores, labels) -> float:
        return metric.compute(predictions=scores.tolist(), references=labels)["auroc"]

    config = replace(DemoDataConfig(), seed=seed, num_pool=args.pool, num_holdout=args.holdout,
                     max_answer_chars=args.max_answer_chars)
    data = build_demo_data(config)
    pool = [row for row in data["pool"] if row[ROW_KIND] in ("target", "off_domain")]
    rows = list(data["holdout"]) + pool
    states = [states_of(model, tokenizer, row["prompt"], row["completion"], args.max_length)
              for row in tqdm(rows, desc=f"seed {seed}", leave=False)]
    labels = [int(row[ROW_KIND] == "target") for row in pool]
    num_holdout = len(data["holdout"])
    results = {}
    for name in states[0]:
        matrix = np.stack([s[name] for s in states]).astype(np.float64)
        holdout, queries = matrix[:num_holdout], matrix[num_holdout:]
        results[name] = auroc(knn_similarity(queries, holdout, args.k), labels)
        if name == "template final layer, response positions":
            centre = holdout.mean(axis=0)
            results[name + ", centred on the holdout mean"] = auroc(
                knn_similarity(queries - centre, holdout - centre, args.k), labels)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pool", type=int, default=120)
    parser.add_argument("--holdout", type=int, default=24)
    parser.add_argument("--max-answer-chars", type=int, default=900)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--json", help="also write the per-seed AUROCs here")
    args = parser.parse_args()

    from ica_hub.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(MODEL)
    per_seed = {seed: probe_seed(seed, args, model, tokenizer) for seed in args.seeds}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(per_seed, f, indent=2)
    print(f"Domain AUROC (target over off-domain, clean rows), k = {args.k}, "
          f"seeds {args.seeds}\n\n| pooling | AUROC | per seed |\n|---|---|---|")
    for name in per_seed[args.seeds[0]]:
        values = np.array([per_seed[seed][name] for seed in args.seeds])
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        print(f"| {name} | {values.mean():.3f} ± {spread:.3f} | "
              f"{' '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
