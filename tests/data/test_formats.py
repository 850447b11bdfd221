import pytest

from ica_hub.data.formats import (
    ParsedRow, RowFormat, RowProblem, UnknownFormatError, detect_format, parse_row,
)


def test_detects_every_accepted_format():
    assert detect_format(["messages"]) is RowFormat.MESSAGES
    assert detect_format(["prompt", "completion", "extra"]) is RowFormat.PROMPT_COMPLETION
    assert detect_format(["prompt", "chosen", "rejected"]) is RowFormat.PREFERENCE


def test_unknown_format_names_the_columns_and_the_accepted_formats():
    with pytest.raises(UnknownFormatError) as error:
        detect_format(["question", "answer"])
    message = str(error.value)
    assert "['answer', 'question']" in message
    assert "prompt, completion" in message and "messages" in message


def test_messages_keep_system_and_earlier_turns():
    row = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]}
    parsed = parse_row(row, RowFormat.MESSAGES)
    assert isinstance(parsed, ParsedRow)
    assert parsed.responses == ("4",)
    assert [m["role"] for m in parsed.prompt] == ["system", "user", "assistant", "user"]
    assert parsed.system == "Be brief." and parsed.question == "2+2?"


def test_conversational_prompt_completion_and_preference():
    prompt = [{"role": "user", "content": "Q?"}]
    sft = parse_row({"prompt": prompt, "completion": [{"role": "assistant", "content": "A"}]},
                    RowFormat.PROMPT_COMPLETION)
    assert sft.responses == ("A",)
    pref = parse_row({"prompt": "Q?", "chosen": "good", "rejected": "bad"}, RowFormat.PREFERENCE)
    assert pref.responses == ("good", "bad")


@pytest.mark.parametrize("row, fmt, reason", [
    ({"prompt": None, "completion": "A"}, RowFormat.PROMPT_COMPLETION, "missing_field"),
    ({"prompt": "  ", "completion": "A"}, RowFormat.PROMPT_COMPLETION, "missing_field"),
    ({"prompt": "Q", "completion": ""}, RowFormat.PROMPT_COMPLETION, "empty_response"),
    ({"prompt": "Q", "chosen": "A", "rejected": " "}, RowFormat.PREFERENCE, "empty_response"),
    ({"messages": [{"role": "user", "content": ["part"]},
                   {"role": "assistant", "content": "A"}]}, RowFormat.MESSAGES,
     "non_string_content"),
    ({"messages": [{"role": "user", "content": "Q"}]}, RowFormat.MESSAGES, "bad_field"),
    ({"messages": None}, RowFormat.MESSAGES, "missing_field"),
])
def test_bad_rows_become_problems_with_a_named_reason(row, fmt, reason):
    result = parse_row(row, fmt)
    assert isinstance(result, RowProblem)
    assert result.reason.startswith(reason)
