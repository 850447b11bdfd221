"""The pairwise judge: verdict parsing, position swaps, and judgments that go missing.

The endpoint tests talk to a fake OpenAI-compatible server (FastAPI in a thread on a free port
of 127.0.0.1) through the real ``huggingface_hub.InferenceClient``; the local test uses the
tiny random model as a judge, whose replies are never a verdict.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from ica_hub.evaluation.judge import (
    EndpointJudge,
    LocalJudge,
    candidate_first_positions,
    generate_answers,
    judge_pairwise,
    parse_verdict,
)

PROMPTS = [({"role": "user", "content": f"Question number {i}?"},) for i in range(6)]
GOOD = [f"GOOD answer {i}" for i in range(6)]
BAD = [f"bad answer {i}" for i in range(6)]


class FakeChatServer:
    """``POST /v1/chat/completions`` answering as ``mode`` says; records every request."""

    def __init__(self):
        self.mode = "always_A"
        self.delay_s = 0.0
        self.requests: list[dict] = []

    def reply(self, payload: dict) -> str:
        if self.mode == "always_A":
            return "A"
        # "prefers_good": the label of the answer block that holds GOOD
        user = payload["messages"][-1]["content"]
        block_a = re.search(r"\[Answer A\](.*?)\[End of answer A\]", user, re.DOTALL).group(1)
        return "A" if "GOOD" in block_a else "**B**"

    def __enter__(self):
        import uvicorn
        from fastapi import FastAPI

        app = FastAPI()

        @app.post("/v1/chat/completions")
        def chat(payload: dict):
            self.requests.append(payload)
            time.sleep(self.delay_s)
            return {"id": "fake", "object": "chat.completion", "created": 0,
                    "model": payload.get("model") or "fake", "system_fingerprint": "fake",
                    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                 "message": {"role": "assistant", "content": self.reply(payload)}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "fake server down"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def fake_server():
    with FakeChatServer() as server:
        yield server


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), (" b\n", "B"), ("Tie.", "tie"), ("**B**", "B"), ("[[A]]", "A"),
    ("Verdict: A", "A"), ("The answer that is better is answer A", "A"), ("Response B.", "B"),
    ("It is a tie.", "tie"), ("Answer A is better than answer B", None),
    ("A good answer is the first", None), ("banana", None), ("", None), ("A or B", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_candidate_is_shown_first_on_half_the_prompts():
    assert sum(candidate_first_positions(6, seed=0)) == 3
    assert sum(candidate_first_positions(7, seed=1)) == 4
    assert candidate_first_positions(6, 0) == candidate_first_positions(6, 0)
    assert candidate_first_positions(20, 0) != candidate_first_positions(20, 1)


def test_a_judge_that_always_says_a_gives_half_after_the_swaps(fake_server):
    fake_server.mode = "always_A"
    judge = EndpointJudge(fake_server.endpoint, model_name="judge-model", api_key="secret")
    result = judge_pairwise(PROMPTS, GOOD, BAD, judge, candidate="new", baseline="old")
    assert result["status"] == "ok" and result["missing"] == []
    assert (result["wins"], result["losses"], result["ties"]) == (3, 3, 0)
    assert result["win_rate"] == 0.5
    shown_first = [j["prompt_index"] for j in result["judgments"]
                   if j["candidate_shown_as"] == "A"]
    assert [j["prompt_index"] for j in result["judgments"] if j["outcome"] == "win"] \
        == shown_first
    assert fake_server.requests[-1]["model"] == "judge-model"


def test_a_judge_that_reads_the_answers_wins_in_both_positions(fake_server):
    fake_server.mode = "prefers_good"
    judge = EndpointJudge(fake_server.endpoint)
    assert judge_pairwise(PROMPTS, GOOD, BAD, judge)["win_rate"] == 1.0
    assert judge_pairwise(PROMPTS, BAD, GOOD, judge)["win_rate"] == 0.0


def test_an_unreachable_endpoint_fails_fast_and_says_why():
    judge = EndpointJudge("http://127.0.0.1:9/v1", timeout_s=2)
    start = time.monotonic()
    result = judge_pairwise(PROMPTS, GOOD, BAD, judge)
    assert time.monotonic() - start < 10
    assert result["status"] == "failed" and result["num_judged"] == 0
    reasons = [m["reason"] for m in result["missing"]]
    assert [m["prompt_index"] for m in result["missing"]] == list(range(6))
    assert all(r.startswith("endpoint http://127.0.0.1:9/v1 unreachable: ") for r in reasons[:3])
    assert all(r.startswith("not asked: the judge failed 3 times in a row") for r in reasons[3:])


def test_a_slow_endpoint_times_out(fake_server):
    fake_server.mode, fake_server.delay_s = "always_A", 1.5
    try:
        judge = EndpointJudge(fake_server.endpoint, timeout_s=0.3)
        result = judge_pairwise(PROMPTS[:4], GOOD[:4], BAD[:4], judge,
                                max_consecutive_failures=2)
    finally:
        fake_server.delay_s = 0.0
    reasons = [m["reason"] for m in result["missing"]]
    assert all("timed out after 0.3 s" in r for r in reasons[:2]) and len(reasons) == 4
    assert reasons[2].startswith("not asked: the judge failed 2 times in a row")


def test_a_local_judge_that_answers_garbage_leaves_verdicts_missing(tiny_model_dir):
    judge = LocalJudge(str(tiny_model_dir))
    result = judge_pairwise(PROMPTS[:3], GOOD[:3], BAD[:3], judge)
    assert result["status"] == "failed"
    assert all(m["reason"].startswith("unparseable: the judge replied ")
               for m in result["missing"])
    assert len(result["missing"]) == 3  # a reply was given each time: never "not asked"


def test_generate_answers_greedy_and_too_long_prompts(tiny_model, tokenizer):
    prompts = [*PROMPTS[:3], ({"role": "user", "content": "word " * 400},)]
    answers = generate_answers(tiny_model, tokenizer, prompts, max_new_tokens=4,
                               max_length=48, batch_size=2)
    assert all(isinstance(a, str) for a in answers[:3])
    # The long question is cut to fit (the answer still comes); a prompt whose template alone
    # is too long gets None.
    assert isinstance(answers[3], str)
    assert generate_answers(tiny_model, tokenizer, prompts[:1], max_new_tokens=4,
                            max_length=8) == [None]
    again = generate_answers(tiny_model, tokenizer, prompts[:3], max_new_tokens=4,
                             max_length=48, batch_size=3)
    assert again == answers[:3]
