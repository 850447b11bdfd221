"""The scored tokens are exactly the response's tokens, the same in every pass."""

import copy

from ica_hub.context.layouts import Demonstration, render_segments
from ica_hub.data.chat import ChatRenderer
from ica_hub.data.formats import RowFormat, parse_row
from ica_hub.scoring.base import base_item, fit_row

ROW = {"messages": [
    {"role": "system", "content": "You answer programming questions."},
    {"role": "user", "content": "How do I reverse a string in Python?"},
    {"role": "assistant", "content": "Slice it with a step of -1: `text[::-1]`."},
]}
DEMOS = [Demonstration("How do I sort a list?", "Use sorted()."),
         Demonstration("How do I get a dict's keys?", "Call d.keys().")]


def test_system_and_user_row_scores_exactly_the_answer_tokens(tokenizer):
    renderer = ChatRenderer(tokenizer)
    row = fit_row(parse_row(ROW, RowFormat.MESSAGES), renderer, max_length=512)
    answer_ids = tuple(tokenizer("Slice it with a step of -1: `text[::-1]`.",
                                 add_special_tokens=False)["input_ids"])
    (response,) = row.responses
    assert response == answer_ids

    base = base_item(renderer, row.prompt, response)
    for layout in ("single_turn", "chat_turns"):
        segments = [renderer.encode(t) for t in
                    render_segments(renderer, layout, DEMOS, row.prompt)]
        context_ids = sum(segments, ())
        # The prompt side ends with the assistant header; nothing of it is scored.
        assert tokenizer.decode(context_ids).endswith("<|im_start|>assistant\n")
        assert tokenizer.decode(base.suffix).endswith("<|im_start|>assistant\n")
        assert "Slice it" not in tokenizer.decode(context_ids)
        # The system turn survives in both passes.
        assert "You answer programming questions." in tokenizer.decode(context_ids)
    assert "You answer programming questions." in tokenizer.decode(base.suffix)


def test_the_full_sequence_has_at_most_one_bos(tokenizer):
    renderer = ChatRenderer(tokenizer)
    row = fit_row(parse_row(ROW, RowFormat.MESSAGES), renderer, max_length=512)
    item = base_item(renderer, row.prompt, row.responses[0])
    ids = item.suffix + item.response
    # SmolLM2's BOS is <|im_start|>, which ChatML also uses to open every turn: the first
    # token must be the template's own, not one added by the tokenizer in front of it.
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[1] != ids[0]


def test_plain_layout_for_a_model_without_chat_template(tokenizer):
    plain = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    renderer = ChatRenderer(plain)
    assert renderer.uses_plain_layout
    text = renderer.prompt_text(({"role": "user", "content": "Hi?"},))
    assert text.endswith("User: Hi?\n\nAssistant: ")
    assert text.count(plain.bos_token) == 1
    segments = render_segments(renderer, "chat_turns", DEMOS, ({"role": "user", "content": "Hi?"},))
    assert len(segments) == len(DEMOS) + 2  # the plain template renders clean prefixes too


def test_end_of_turn_is_what_the_template_writes_after_a_response(tokenizer):
    assert ChatRenderer(tokenizer).end_of_turn_ids() == (tokenizer.convert_tokens_to_ids(
        "<|im_end|>"),)
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None  # the plain layout: a blank line ends a turn
    ending = ChatRenderer(plain).end_of_turn_ids()
    assert len(ending) == 1 and plain.decode(list(ending)).startswith("\n")
