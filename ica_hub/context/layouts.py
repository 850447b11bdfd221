"""Demonstration layouts: where the k holdout examples go in the prompt.

- ``single_turn`` (the paper's): one user turn holding an instruction line, the
  demonstrations as ``Question: ... / Answer: ...`` pairs, then the example's question.
- ``chat_turns``: each demonstration is an earlier user/assistant exchange, after the system
  turn and before the example's own turns.

A layout returns text *segments*: ``[lead, demo_1, ..., demo_k, tail]``. Joined, they are the
chat-templated prompt with the generation prompt. Segments are tokenized separately, so a
sequence with demonstrations ``(d1, d2)`` starts with exactly the token ids of one with ``(d1,)``:
this is what lets the scoring engine encode a shared run of demonstrations once and reuse its
key/value cache. When a template does not render demonstrations as a clean prefix, the layout
returns one segment and the engine simply does not reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ica_hub.data.chat import ChatRenderer
from ica_hub.data.formats import Message

Layout = Literal["single_turn", "chat_turns"]
LAYOUTS: tuple[str, ...] = ("single_turn", "chat_turns")

INSTRUCTION = (
    "Here are example questions with answers of the kind wanted. "
    "Answer the last question the same way.\n\n"
)
DEMONSTRATION = "Question: {question}\nAnswer: {answer}\n\n"
QUESTION = "Now answer the following question.\nQuestion: {question}\nAnswer:"


@dataclass(frozen=True)
class Demonstration:
    question: str
    answer: str


def render_segments(
    renderer: ChatRenderer,
    layout: Layout,
    demonstrations: list[Demonstration],
    prompt: tuple[Message, ...],
) -> list[str]:
    """The prompt with demonstrations, as ``[lead, demo_1, ..., demo_k, tail]`` text segments."""
    if layout == "single_turn":
        return _single_turn(renderer, demonstrations, prompt)
    if layout == "chat_turns":
        return _chat_turns(renderer, demonstrations, prompt)
    raise ValueError(f"Unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}.")


def _single_turn(renderer, demonstrations, prompt):
    blocks = [DEMONSTRATION.format(question=d.question, answer=d.answer) for d in demonstrations]
    question = QUESTION.format(question=prompt[-1]["content"])
    content = INSTRUCTION + "".join(blocks) + question
    messages = list(prompt[:-1]) + [{"role": "user", "content": content}]
    full = renderer.prompt_text(messages)
    start = full.rfind(content)
    if start < 0:  # the template rewrote the content: no reusable prefix
        return [full]
    lead = full[:start] + INSTRUCTION
    tail = question + full[start + len(content):]
    return [lead, *blocks, tail]


def _chat_turns(renderer, demonstrations, prompt):
    system = [prompt[0]] if prompt[0]["role"] == "system" else []
    turns = []
    for d in demonstrations:
        turns += [{"role": "user", "content": d.question},
                  {"role": "assistant", "content": d.answer}]
    full = renderer.prompt_text(system + turns + list(prompt[len(system):]))
    # Render the conversation after 0, 1, ..., k demonstrations: each must extend the last.
    cuts = []
    for j in range(len(demonstrations) + 1):
        messages = system + turns[: 2 * j]
        try:
            rendered = renderer.render(messages) if messages else ""
        except Exception:  # some templates refuse an empty or assistant-ending conversation
            return [full]
        if not full.startswith(rendered) or (cuts and len(rendered) < cuts[-1]):
            return [full]
        cuts.append(len(rendered))
    cuts.append(len(full))
    return _split(full, cuts)


def _split(full: str, cuts: list[int]) -> list[str]:
    # cuts = [end of lead, end of demo_1, ..., end of demo_k, len(full)]
    starts = [0] + cuts[:-1]
    return [full[a:b] for a, b in zip(starts, cuts)]
