"""SIGTERM on `tunekit serve`: a running streamed answer drains to its end while new requests
are refused, and the process exits 0; a request still rendering a long prompt does not hold the
shutdown up. The server is a real process on the random tiny model (it never says end-of-turn,
so an answer runs to max_tokens)."""

import json
import signal
import threading
import time

import httpx
import pytest
from serve_helpers import Server, free_port

LONG_ANSWER = 1500  # tokens: seconds of generation, most of them after the signal
DRAIN_S = 300  # the servers' --drain-seconds: far more than the long answer needs, even on a busy machine
LIMITS = ["--max-messages", "100000", "--max-chars", "100000000", "--max-request-bytes", "100000000"]


@pytest.fixture(scope="module")
def servers(tiny_model_dir, tmp_path_factory):
    """Two servers loading at once, one per test (each test stops its own)."""
    logs = tmp_path_factory.mktemp("shutdown")
    started = {name: Server(["serve", str(tiny_model_dir), "--max-tokens-cap", "4000", "--drain-seconds",
                             str(DRAIN_S), *extra], free_port(), logs / f"{name}.log", "/health")
               for name, extra in (("drain", []), ("render", LIMITS))}
    yield started
    for server in started.values():
        server.stop()


def refused(url: str) -> bool:
    """A new request is turned away: no connection, or 503."""
    try:
        return httpx.get(url + "/v1/models", timeout=5).status_code == 503
    except httpx.TransportError:
        return True


def test_sigterm_drains_the_running_answer_refuses_new_ones_and_exits_0(servers):
    server = servers["drain"].wait_ready(timeout=300)
    body = {"model": "tiny-qwen2", "messages": [{"role": "user", "content": "hello"}], "max_tokens": LONG_ANSWER,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=DRAIN_S) as http, \
            http.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: "))  # the answer is running
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not refused(server.url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert refused(server.url)
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    usage = json.loads(rest[-2][len("data: "):])["usage"]
    assert usage["completion_tokens"] == LONG_ANSWER  # drained to its end, not cut at the signal
    assert server.process.wait(timeout=60) == 0, server.log.read_text()


def test_sigterm_during_a_long_prompt_render_is_honoured_at_once(servers):
    """60,001 messages take the template several seconds to render, linear as it is (with the
    message limits raised); the signal must wait neither for the render nor for the drain."""
    server = servers["render"].wait_ready(timeout=300)
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} of a long talk"}
                for i in range(60001)]
    answers = []

    def ask():
        try:
            answers.append(httpx.post(server.url + "/v1/chat/completions", timeout=120,
                                      json={"model": "tiny-qwen2", "messages": messages, "max_tokens": 4}))
        except httpx.TransportError as exc:
            answers.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(2)  # the request is in, its prompt rendering
    assert not answers, "the render finished before the signal: make the conversation longer"
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert server.process.wait(timeout=DRAIN_S) == 0, server.log.read_text()
    took = time.monotonic() - signalled
    asking.join(timeout=30)
    answer = answers[0]
    assert isinstance(answer, httpx.TransportError) or answer.status_code == 503
    assert took < 10  # not the render's time (nor the drain's)
