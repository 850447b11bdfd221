"""Chat rendering and tokenization: the one place where chat templates are applied.

Every sequence ica_hub scores is a list of text segments, each tokenized on its own with
``add_special_tokens=False`` and concatenated. The response is always its own segment, so its
token ids are exactly the same in every pass that scores it, and contain no assistant header and
no prompt token. The template, not the tokenizer, decides where BOS goes, so a sequence never
gets a second one.

Models without a chat template get a plain layout (``User: ...`` / ``Assistant: ...``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

from ica_hub.data.formats import Message

PLAIN_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)


class ChatRenderer:
    """Renders chat messages with a tokenizer's template and tokenizes text segments."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.template = tokenizer.chat_template or PLAIN_TEMPLATE
        self.uses_plain_layout = tokenizer.chat_template is None
        self.template_hash = hashlib.sha256(self.template.encode()).hexdigest()[:16]
        self._encode_cached = lru_cache(maxsize=4096)(self._encode)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages),
            chat_template=self.template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )

    def prompt_text(self, prompt: Sequence[Message]) -> str:
        """The prompt as the model sees it just before the response (generation prompt on)."""
        return self.render(prompt, add_generation_prompt=True)

    def end_of_turn_ids(self) -> tuple[int, ...]:
        """The first token the template puts after a finished assistant response (ChatML:
        ``<|im_end|>``), or the tokenizer's EOS when the template puts nothing there; empty when
        the model has neither. Its log-probability after a response says whether the model
        finds the response complete."""
        sentinel = "\u2063ica-hub-response\u2063"
        text = self.render([{"role": "user", "content": "?"},
                            {"role": "assistant", "content": sentinel}])
        after = text[text.rindex(sentinel) + len(sentinel):] if sentinel in text else ""
        ids = self.encode(after) if after else ()
        if ids:
            return ids[:1]
        eos = self.tokenizer.eos_token_id
        return (eos,) if eos is not None else ()

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> tuple[int, ...]:
        """Token ids of one segment, never with special tokens added by the tokenizer."""
        return self._encode_cached(text)

    def truncate(self, text: str, max_tokens: int, keep: str = "end") -> str:
        """``text`` cut to at most ``max_tokens`` tokens, keeping its ``"start"`` or ``"end"``."""
        ids = self.encode(text)
        if len(ids) <= max_tokens:
            return text
        if max_tokens <= 0:
            return ""
        kept = ids[-max_tokens:] if keep == "end" else ids[:max_tokens]
        return self.tokenizer.decode(list(kept), skip_special_tokens=False)
