"""Row formats: the dataset layouts TRL users already have, parsed into one shape.

Accepted formats (detected from the column names):

| format                        | columns                         | field types                   |
|-------------------------------|---------------------------------|-------------------------------|
| ``messages``                  | ``messages``                    | list of {role, content}; last turn is the assistant's |
| ``prompt_completion``         | ``prompt``, ``completion``      | strings, or conversations: a list of messages and a one-turn assistant list |
| ``preference``                | ``prompt``, ``chosen``, ``rejected`` | strings, or conversations as above |

Every row becomes a :class:`ParsedRow`: the prompt as chat messages (system and earlier turns
kept) and one response (SFT) or two (chosen, rejected). A row that cannot be parsed does not
raise: it becomes a :class:`RowProblem` whose ``reason`` names the field and the fix, so the
scorer can keep the row in place with a null score and a flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class RowFormat(str, Enum):
    MESSAGES = "messages"
    PROMPT_COMPLETION = "prompt_completion"
    PREFERENCE = "preference"

    @property
    def is_preference(self) -> bool:
        return self is RowFormat.PREFERENCE


_FORMAT_COLUMNS = {
    RowFormat.PREFERENCE: ("prompt", "chosen", "rejected"),
    RowFormat.PROMPT_COMPLETION: ("prompt", "completion"),
    RowFormat.MESSAGES: ("messages",),
}

ACCEPTED_FORMATS_TEXT = "; ".join(
    f"{fmt.value}: columns {', '.join(cols)}" for fmt, cols in _FORMAT_COLUMNS.items()
)


class UnknownFormatError(ValueError):
    pass


def detect_format(column_names: list[str] | tuple[str, ...]) -> RowFormat:
    """The row format of a dataset, from its columns. Preference wins over SFT formats."""
    names = set(column_names)
    for fmt, required in _FORMAT_COLUMNS.items():
        if names.issuperset(required):
            return fmt
    raise UnknownFormatError(
        f"Cannot tell the row format of a dataset with columns {sorted(names)}. "
        f"Accepted formats: {ACCEPTED_FORMATS_TEXT}. Rename your columns to one of these "
        "(for example with dataset.rename_column)."
    )


Message = dict[str, str]


@dataclass(frozen=True)
class ParsedRow:
    """One row in chat form: ``prompt`` ends with a user turn; ``responses`` has 1 or 2 texts."""

    prompt: tuple[Message, ...]
    responses: tuple[str, ...]

    @property
    def question(self) -> str:
        """The last user turn: what retrieval compares and demonstrations show."""
        return self.prompt[-1]["content"]

    @property
    def system(self) -> str | None:
        return self.prompt[0]["content"] if self.prompt[0]["role"] == "system" else None


@dataclass(frozen=True)
class RowProblem:
    reason: str


def parse_row(row: dict[str, Any], fmt: RowFormat) -> ParsedRow | RowProblem:
    try:
        if fmt is RowFormat.MESSAGES:
            messages = _messages(row.get("messages"), "messages")
            if messages[-1]["role"] != "assistant":
                raise _Bad("bad_field: messages must end with the assistant's response")
            prompt, responses = messages[:-1], (messages[-1]["content"],)
        else:
            prompt = _prompt(row.get("prompt"))
            names = ("chosen", "rejected") if fmt.is_preference else ("completion",)
            responses = tuple(_response(row.get(name), name) for name in names)
        _check_prompt(prompt)
        for text, name in zip(responses, _response_names(fmt)):
            if not text.strip():
                raise _Bad(f"empty_response: {name} is empty; drop the row or fill it in")
        return ParsedRow(tuple(prompt), responses)
    except _Bad as problem:
        return RowProblem(str(problem))


class _Bad(Exception):
    pass


def _response_names(fmt: RowFormat) -> tuple[str, ...]:
    if fmt is RowFormat.MESSAGES:
        return ("messages[-1].content",)
    return ("chosen", "rejected") if fmt.is_preference else ("completion",)


def _messages(value: Any, field: str) -> list[Message]:
    if value is None:
        raise _Bad(f"missing_field: {field} is missing (null)")
    if not isinstance(value, list) or not value:
        raise _Bad(f"bad_field: {field} must be a non-empty list of {{role, content}} messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise _Bad(f"bad_field: {field}[{i}] must be a dict with 'role' and 'content'")
        if not isinstance(message["content"], str):
            kind = type(message["content"]).__name__
            raise _Bad(
                f"non_string_content: {field}[{i}].content is {kind}, not a string "
                "(multimodal content parts are not supported: join the text parts)"
            )
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _prompt(value: Any) -> list[Message]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return _messages(value, "prompt")


def _response(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    messages = _messages(value, field)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise _Bad(f"bad_field: {field} must be a string or a list with one assistant message")
    return messages[0]["content"]


def _check_prompt(prompt: list[Message]) -> None:
    if not prompt or prompt[-1]["role"] != "user":
        raise _Bad("bad_field: the prompt must end with a user turn")
    if not prompt[-1]["content"].strip():
        raise _Bad("missing_field: the prompt's user turn is empty")
