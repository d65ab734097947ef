"""The API under load and abuse: a full queue answers 429, 20,001 messages are refused before any
rendering, a non-streaming client that disconnects frees its slot, max_completion_tokens holds,
and /metrics counts what was served. The server runs in this process (uvicorn in a thread) on the
random tiny model, which never says end-of-turn, with one running slot and one waiting."""

import re
import threading
import time

import httpx
import openai
import pytest
import uvicorn
from serve_helpers import free_port

from tunekit.infer.batching import BatchLimits
from tunekit.infer.engine import Engine
from tunekit.infer.params import GenerationParams
from tunekit.serve.api import Limits, build_app


@pytest.fixture(scope="module")
def live(tiny_model_dir):
    engine = Engine.load(str(tiny_model_dir), limits=BatchLimits(max_running=1, max_queued=1))
    app = build_app(engine, GenerationParams(max_new_tokens=8), limits=Limits(max_tokens=4000))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.config.port}"
    yield engine, url
    server.should_exit = True
    thread.join()
    engine.close()


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def idle(engine) -> bool:
    return engine.scheduler.running == 0 and engine.scheduler.queued == 0


def test_20001_messages_are_refused_before_any_rendering(live, monkeypatch):
    engine, url = live
    rendered = []
    monkeypatch.setattr("tunekit.infer.engine._prepare", lambda *a, **k: rendered.append(1))
    started = time.monotonic()
    response = httpx.post(url + "/v1/chat/completions", timeout=30,
                          json={"model": engine.name, "messages": ask("hi") * 20001})
    took = time.monotonic() - started
    assert response.status_code == 400
    assert "20001 messages; this server accepts at most 256" in response.json()["error"]["message"]
    assert not rendered
    assert took < 1  # the bound; it took minutes when the prompt was rendered first


def test_a_full_queue_answers_429_with_retry_after(live, monkeypatch):
    engine, url = live
    step = engine.scheduler._step
    monkeypatch.setattr(engine.scheduler, "_step", lambda key: time.sleep(0.01) or step(key))  # 3000 steps > 30 s
    long = {"model": engine.name, "messages": ask("hello"), "max_tokens": 3000, "stream": True}
    stop = threading.Event()

    def read_stream():  # a client reading its answer as it comes, until told to hang up
        with httpx.Client(timeout=60) as http, http.stream("POST", url + "/v1/chat/completions", json=long) as r:
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    readers = [threading.Thread(target=read_stream, daemon=True) for _ in range(2)]
    try:
        readers[0].start()
        assert wait_for(lambda: engine.scheduler.running == 1)  # it holds the only slot
        readers[1].start()
        assert wait_for(lambda: engine.scheduler.queued == 1)  # it holds the only place in the queue
        refused = httpx.post(url + "/v1/chat/completions", json={**long, "stream": False}, timeout=60)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "server_busy"
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=60)
    assert wait_for(lambda: idle(engine))  # both streams were closed: both slots are free
    assert metric(url, 'tunekit_requests_total{outcome="busy"}') == 1


def test_a_non_streaming_client_that_disconnects_frees_its_slot(live):
    engine, url = live
    before = metric(url, "tunekit_completion_tokens_total")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", timeout=1.5,
                   json={"model": engine.name, "messages": ask("hello"), "max_tokens": 3000})
    assert wait_for(lambda: idle(engine))
    assert metric(url, 'tunekit_requests_total{outcome="cancelled"}') >= 1
    assert metric(url, "tunekit_completion_tokens_total") - before < 3000  # stopped long before its end


def test_max_completion_tokens_is_honoured_and_metrics_count_what_was_served(live):
    engine, url = live
    before = {name: metric(url, name) for name in ("tunekit_completion_tokens_total", "tunekit_prompt_tokens_total",
                                                     'tunekit_requests_total{outcome="ok"}',
                                                     "tunekit_time_to_first_token_seconds_count")}
    replies = [client(url).chat.completions.create(model=engine.name, messages=ask(q), max_completion_tokens=n)
               for q, n in (("one", 3), ("two words", 5))]
    assert [r.usage.completion_tokens for r in replies] == [3, 5]
    served = {"tunekit_completion_tokens_total": 8,
              "tunekit_prompt_tokens_total": sum(r.usage.prompt_tokens for r in replies),
              'tunekit_requests_total{outcome="ok"}': 2, "tunekit_time_to_first_token_seconds_count": 2}
    assert {name: metric(url, name) - before[name] for name in served} == served
    assert metric(url, "tunekit_inter_token_latency_seconds_count") >= 2 + 4
    health = httpx.get(url + "/health", timeout=10).json()
    assert health == {"status": "ok", "running": 0, "queued": 0}
