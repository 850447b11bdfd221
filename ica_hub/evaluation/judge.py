"""Pairwise judge: which of two models answers a test prompt better.

Each compared model answers the prompts with greedy decoding (:func:`generate_answers`). A judge
reads the question and the two answers, labelled A and B, and replies "A", "B" or "tie"
(:func:`judge_pairwise`). The judge is either

- a local chat model, a path or Hub id (:class:`LocalJudge`, a transformers text-generation
  pipeline), or
- any OpenAI-compatible chat-completion endpoint (:class:`EndpointJudge`, through
  ``huggingface_hub.InferenceClient``), e.g. ``http://127.0.0.1:8080/v1`` served by vLLM or TGI.

Position bias: judges tend to favour the answer shown first. A seeded shuffle shows the
candidate first on half the prompts (one more when their number is odd) and second on the
others, so a judge that always answers "A" gives the candidate a win rate of 0.5.

Failures never abort the evaluation. A prompt without a verdict is listed in ``missing`` with
the reason: the judge call failed (unreachable, timed out, HTTP error), the reply held no
verdict or several (``unparseable``), or the prompt did not fit the model. After
``max_consecutive_failures`` failed calls in a row the judge is not asked again: the remaining
prompts are marked missing with that reason, instead of each waiting for its own timeout.

Limit: the judge sees the last user turn of a multi-turn prompt with the earlier turns as plain
text above it, not as chat turns.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from ica_hub.data.chat import ChatRenderer
from ica_hub.data.formats import Message

logger = logging.getLogger(__name__)

VERDICT_MAX_NEW_TOKENS = 16  # a verdict is one word; room for "The better one is answer A"

_SYSTEM_PROMPT = (
    "You compare two answers to the same question. Judge which one is more helpful, correct "
    "and clear for the person who asked. Length is not a merit in itself. Reply with exactly "
    "one word: A, B or tie."
)
_USER_TEMPLATE = """Question:
{question}

[Answer A]
{answer_a}
[End of answer A]

[Answer B]
{answer_b}
[End of answer B]

Which answer is better? Reply with A, B or tie."""

# A whole reply that is a verdict, optionally wrapped: "A", "**B**", "[[tie]]", "Verdict: A."
_VERDICT_REPLY = re.compile(r"^\W*(?:verdict\W*)?(a|b|tie)\W*$", re.IGNORECASE)
# Or a sentence naming one side ("The better one is answer A") or a tie, and nothing else.
_VERDICT_MENTION = re.compile(r"\b(?:[Aa]nswer|[Rr]esponse)\s+\[?([AB])\b|\b([Tt]ie)\b")


class JudgeError(Exception):
    """A judge call failed before any reply came; the message is the reason, for the report."""


class Judge(Protocol):
    """Anything that answers a chat with text; raises ``JudgeError`` when it cannot be asked."""

    description: str

    def __call__(self, messages: list[Message]) -> str: ...


class EndpointJudge:
    """An OpenAI-compatible chat-completion endpoint (``base_url``, e.g. ``.../v1``).

    ``timeout_s`` bounds each call; connection errors, timeouts and HTTP errors become
    ``JudgeError`` with the endpoint and the cause in the message.
    """

    def __init__(self, endpoint: str, *, model_name: str | None = None,
                 api_key: str | None = None, timeout_s: float = 10.0):
        from huggingface_hub import InferenceClient

        self.endpoint = endpoint
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.client = InferenceClient(base_url=endpoint, api_key=api_key, timeout=timeout_s)
        self.description = f"endpoint {endpoint}" + (f" model {model_name}" if model_name else "")

    def __call__(self, messages: list[Message]) -> str:
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

        try:
            output = self.client.chat_completion(
                messages, model=self.model_name, max_tokens=VERDICT_MAX_NEW_TOKENS,
                temperature=0.0)
        except InferenceTimeoutError:
            raise JudgeError(f"endpoint {self.endpoint} timed out after {self.timeout_s:g} s "
                             "(raise judge.timeout_s if the judge is slow)") from None
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            raise JudgeError(f"endpoint {self.endpoint} answered HTTP {status}: "
                             f"{_first_line(str(error))}") from None
        except Exception as error:  # noqa: BLE001 - the HTTP client's transport errors
            raise JudgeError(f"endpoint {self.endpoint} unreachable: {type(error).__name__}: "
                             f"{_first_line(str(error))}") from None
        return output.choices[0].message.content or ""


class LocalJudge:
    """A local chat model (path, Hub id or the embedded name) in a text-generation pipeline."""

    def __init__(self, model: str, *, dtype: torch.dtype = torch.float32):
        from transformers import pipeline

        from ica_hub.models import resolve_model_path
        from ica_hub.scoring.base import device_for_rank

        self.pipeline = pipeline("text-generation", model=resolve_model_path(model),
                                 dtype=dtype, device=device_for_rank(None, None))
        self.description = f"local model {model}"

    def __call__(self, messages: list[Message]) -> str:
        output = self.pipeline(messages, max_new_tokens=VERDICT_MAX_NEW_TOKENS, do_sample=False,
                               return_full_text=False)
        return output[0]["generated_text"]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def parse_verdict(reply: str) -> str | None:
    """``"A"``, ``"B"``, ``"tie"``, or None when the reply holds no verdict or several.

    A reply is a verdict when it is one (``"A"``, ``"**B**"``, ``"Verdict: tie"``), or when
    it names exactly one outcome (``"The better one is answer A"``); a reply that names both
    sides (``"Answer A is better than answer B"``) is ambiguous, so None.
    """
    match = _VERDICT_REPLY.match(reply.strip())
    if match is not None:
        word = match.group(1)
        return "tie" if word.lower() == "tie" else word.upper()
    named = {side or "tie" for side, _ in _VERDICT_MENTION.findall(reply)}
    return named.pop() if len(named) == 1 else None


# ---- answers of the compared models


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[Sequence[Message]], *,
                     max_new_tokens: int = 256, max_length: int = 2048,
                     batch_size: int = 8, desc: str = "Generating answers") -> list[str | None]:
    """Greedy answers to chat ``prompts``; None where a prompt cannot fit.

    A prompt's question is cut from its start until prompt and answer fit ``max_length``
    tokens (as the scorers fit prompts); when even an empty question does not fit, the answer
    is None.
    """
    from datasets.utils.tqdm import tqdm

    from ica_hub.scoring.base import truncate_question

    renderer = ChatRenderer(tokenizer)
    budget = max_length - max_new_tokens
    encoded: list[tuple[int, ...] | None] = []
    for prompt in prompts:
        ids = renderer.encode(renderer.prompt_text(prompt))
        if len(ids) > budget:
            fitted = truncate_question(renderer, prompt, len(ids) - budget)
            ids = renderer.encode(renderer.prompt_text(fitted)) if fitted else None
        encoded.append(ids)

    answers: list[str | None] = [None] * len(prompts)
    todo = [i for i, ids in enumerate(encoded) if ids is not None]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(todo), batch_size), desc=desc, unit=" batches"):
        batch = todo[start:start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        # Left padding, so that every row's answer starts at the same position.
        input_ids = torch.tensor([(pad_id,) * (width - len(encoded[i])) + encoded[i]
                                  for i in batch], device=device)
        attention_mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i])
                                       for i in batch], device=device)
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=pad_id)
        for i, row in zip(batch, output[:, width:]):  # new tokens only
            answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return answers


# ---- the comparison


def judge_messages(prompt: Sequence[Message], answer_a: str, answer_b: str) -> list[Message]:
    """The judge's chat: the question (earlier turns as text above it) and answers A and B."""
    *earlier, last = [m for m in prompt if m["role"] != "system"]
    context = "".join(f"{m['role']}: {m['content']}\n\n" for m in earlier)
    user = _USER_TEMPLATE.format(question=context + last["content"], answer_a=answer_a,
                                 answer_b=answer_b)
    return [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": user}]


def candidate_first_positions(num_prompts: int, seed: int) -> list[bool]:
    """Per prompt, whether the candidate is shown as A: half of them, in a seeded order."""
    first = [i < (num_prompts + 1) // 2 for i in range(num_prompts)]
    random.Random(seed).shuffle(first)
    return first


def judge_pairwise(prompts: Sequence[Sequence[Message]],
                   candidate_answers: Sequence[str | None],
                   baseline_answers: Sequence[str | None], judge: Judge, *,
                   candidate: str = "candidate", baseline: str = "baseline", seed: int = 0,
                   max_consecutive_failures: int = 3) -> dict[str, Any]:
    """Ask ``judge`` about every prompt; count the candidate's wins, losses and ties.

    ``win_rate`` = (wins + ties / 2) / judged prompts (NaN when none was judged). ``status`` is
    "ok" (every prompt judged), "partial" or "failed" (none). ``judgments`` keeps each verdict
    with the position the candidate was shown in; ``missing`` each prompt without a verdict,
    with its reason.
    """
    from datasets.utils.tqdm import tqdm

    if not len(prompts) == len(candidate_answers) == len(baseline_answers):
        raise ValueError(f"{len(prompts)} prompts, {len(candidate_answers)} candidate answers "
                         f"and {len(baseline_answers)} baseline answers: give one of each")
    shown_first = candidate_first_positions(len(prompts), seed)
    judgments, missing = [], []
    failures_in_a_row, last_failure = 0, ""
    for index in tqdm(range(len(prompts)), desc=f"Judging {candidate} vs {baseline}"):
        if failures_in_a_row >= max_consecutive_failures:
            missing.append({"prompt_index": index, "reason": (
                f"not asked: the judge failed {failures_in_a_row} times in a row "
                f"(last: {last_failure})")})
            continue
        if candidate_answers[index] is None or baseline_answers[index] is None:
            missing.append({"prompt_index": index, "reason": (
                "prompt_too_long: the prompt does not fit a compared model's max_length "
                "beside the answer")})
            continue
        first = shown_first[index]
        a, b = candidate_answers[index], baseline_answers[index]
        messages = judge_messages(prompts[index], *((a, b) if first else (b, a)))
        try:
            reply = judge(messages)
        except JudgeError as error:
            failures_in_a_row, last_failure = failures_in_a_row + 1, str(error)
            missing.append({"prompt_index": index, "reason": str(error)})
            continue
        failures_in_a_row = 0
        verdict = parse_verdict(reply)
        if verdict is None:
            missing.append({"prompt_index": index, "reason": (
                f"unparseable: the judge replied {reply.strip()[:120]!r}, not one of A, B or "
                "tie")})
            continue
        judgments.append({"prompt_index": index, "candidate_shown_as": "A" if first else "B",
                          "verdict": verdict, "outcome": _outcome(verdict, first)})
    return _summary(judgments, missing, len(prompts), judge.description, candidate, baseline,
                    seed)


def _outcome(verdict: str, candidate_first: bool) -> str:
    if verdict == "tie":
        return "tie"
    return "win" if (verdict == "A") == candidate_first else "loss"


def failed_judgment(num_prompts: int, reason: str, *, judge_description: str, candidate: str,
                    baseline: str, seed: int = 0) -> dict[str, Any]:
    """The result of a comparison that could not take place: every prompt missing, same keys
    as :func:`judge_pairwise`'s."""
    missing = [{"prompt_index": i, "reason": reason} for i in range(num_prompts)]
    return _summary([], missing, num_prompts, judge_description, candidate, baseline, seed)


def _summary(judgments: list[dict], missing: list[dict], num_prompts: int,
             judge_description: str, candidate: str, baseline: str,
             seed: int) -> dict[str, Any]:
    outcomes = [j["outcome"] for j in judgments]
    wins, losses, ties = (outcomes.count(o) for o in ("win", "loss", "tie"))
    judged = len(judgments)
    status = "ok" if not missing else "failed" if not judged else "partial"
    if missing:
        logger.warning("Judge: %d of %d prompts have no verdict (first reason: %s)",
                       len(missing), num_prompts, missing[0]["reason"])
    return {
        "status": status, "judge": judge_description, "candidate": candidate,
        "baseline": baseline, "seed": seed, "num_prompts": num_prompts, "num_judged": judged,
        "wins": wins, "losses": losses, "ties": ties,
        "win_rate": (wins + ties / 2) / judged if judged else math.nan,
        "judgments": judgments, "missing": missing,
    }


def make_judge(*, model: str | None = None, endpoint: str | None = None,
               model_name: str | None = None, api_key: str | None = None,
               timeout_s: float = 10.0, dtype: torch.dtype = torch.float32) -> Judge:
    """A local judge (``model``, loaded in ``dtype``) or an endpoint judge (``endpoint``):
    exactly one of them."""
    if (model is None) == (endpoint is None):
        raise ValueError("Give the judge as exactly one of model= (a local path or Hub id) and "
                         "endpoint= (an OpenAI-compatible base URL)")
    if model is not None:
        return LocalJudge(model, dtype=dtype)
    return EndpointJudge(endpoint, model_name=model_name, api_key=api_key, timeout_s=timeout_s)
