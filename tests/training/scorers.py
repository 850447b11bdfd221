"""A real, cheap re-scoring function for the tests: mean log-likelihood of the response.

SFT rows score their completion; preference rows score chosen minus rejected (each a per-token
mean). Rows without a response token score None. The model is whatever the trainer holds now.
"""

from __future__ import annotations

import torch


def response_mean_logp(model, tokenizer, prompt: str, response: str) -> float | None:
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + response)["input_ids"]
    num_response = len(full_ids) - len(prompt_ids)
    if num_response <= 0:
        return None
    ids = torch.tensor([full_ids], device=model.device)
    logits = model(input_ids=ids).logits[0, :-1]  # (T-1, vocab): position t predicts t+1
    logps = logits.log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    return logps[-num_response:].mean().item()


def make_loglik_rescorer(tokenizer):
    """rescore(model, dataset) -> list[float | None], in dataset order."""

    def rescore(model, dataset):
        scores = []
        for row in dataset:
            prompt = row["prompt"]
            if "completion" in row:
                scores.append(response_mean_logp(model, tokenizer, prompt, row["completion"]))
                continue
            chosen = response_mean_logp(model, tokenizer, prompt, row["chosen"])
            rejected = response_mean_logp(model, tokenizer, prompt, row["rejected"])
            scores.append(None if chosen is None or rejected is None else chosen - rejected)
        return scores

    return rescore


def make_rescorer(recipe, tokenizer):
    """The factory a recipe names as rescore.scorer=tests.training.scorers:make_rescorer."""
    return make_loglik_rescorer(tokenizer)
