"""The OpenAI-compatible API, through the official `openai` client, against a real
`tunekit serve` process on 127.0.0.1."""

import asyncio
import json

import httpx
import openai
import pytest
from serve_helpers import API_KEY, BRIEF_ANSWER, QUESTIONS, UNSEEN_QUESTION

from tunekit.infer.params import GenerationParams


def client(server, key=API_KEY, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60, **kwargs)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_models_lists_the_run_its_adapter_and_base(api_server, brief_run):
    assert [m.id for m in client(api_server).models.list().data] == [brief_run.name, "lora", "base"]


def test_chat_completion_matches_the_engine(api_server, engine, brief_run):
    reference = engine.chat(ask(UNSEEN_QUESTION), GenerationParams(max_new_tokens=64))
    result = client(api_server).chat.completions.create(model=brief_run.name, messages=ask(UNSEEN_QUESTION),
                                                        max_tokens=64, temperature=0, seed=1)
    assert result.choices[0].message.content == reference.text == BRIEF_ANSWER
    assert result.choices[0].finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (reference.prompt_tokens,
                                                                             reference.completion_tokens)
    assert result.usage.total_tokens == reference.prompt_tokens + reference.completion_tokens


def test_model_name_chooses_the_adapter(api_server, engine):
    params = GenerationParams(max_new_tokens=16)
    for model, adapter in (("lora", "lora"), ("base", "base")):
        result = client(api_server).chat.completions.create(model=model, messages=ask("你好"), max_tokens=16)
        assert result.choices[0].message.content == engine.chat(ask("你好"), params, adapter=adapter).text


def test_stream_sends_the_answer_in_pieces_then_usage(api_server, brief_run, engine):
    reference = engine.chat(ask("你好"), GenerationParams(max_new_tokens=64))
    stream = client(api_server).chat.completions.create(model=brief_run.name, messages=ask("你好"), stream=True,
                                                        stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == BRIEF_ANSWER and len(pieces) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (reference.prompt_tokens,
                                                                                  reference.completion_tokens)


def test_stream_is_server_sent_events_ending_with_done(api_server, brief_run):
    body = {"model": brief_run.name, "messages": ask("你好"), "stream": True, "stop": ["明白"]}
    with httpx.stream("POST", api_server.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == "好的，"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("request_args, status, message", [
    ({"model": "nope"}, 404, "model 'nope' does not exist"),
    ({"temperature": 2.5}, 400, "temperature must be in"),
    ({"top_p": 0}, 400, "top_p must be in"),
    ({"max_tokens": 100000}, 400, "max_tokens must be between 1 and 256"),
    ({"messages": ask("字" * 4000)}, 400, "context holds 2048"),
    ({"messages": []}, 400, "messages"),
    ({"n": 2}, 400, "n is not supported"),
])
def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(api_server, brief_run, request_args, status,
                                                                    message):
    args = {"model": brief_run.name, "messages": ask("你好"), **request_args}
    with pytest.raises(openai.APIStatusError) as caught:
        client(api_server).chat.completions.create(**args)
    assert caught.value.status_code == status
    assert message in caught.value.body["message"]
    still_serving = client(api_server).chat.completions.create(model=brief_run.name, messages=ask("你好"),
                                                               max_tokens=1)
    assert still_serving.usage.completion_tokens == 1


@pytest.mark.parametrize("key, message", [(None, "missing API key"), ("wrong", "wrong API key")])
def test_missing_or_wrong_key_is_refused(api_server, brief_run, key, message):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(api_server.url + "/v1/chat/completions", headers=headers, timeout=30,
                          json={"model": brief_run.name, "messages": ask("你好")})
    assert response.status_code == 401 and message in response.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        client(api_server, key="wrong").models.list()


@pytest.mark.parametrize("content, status, code", [
    (b'{"model": "x", "messages": [', 400, "invalid_json"),
    (b'{"model": "x", "messages": "hi"}', 400, "invalid_value"),
    (b"[" + b"1," * 40000 + b"1]", 413, "request_too_large"),
])
def test_malformed_or_oversized_bodies_are_refused(api_server, content, status, code):
    response = httpx.post(api_server.url + "/v1/chat/completions", content=content, timeout=30,
                          headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


def test_32_concurrent_streams_all_complete(api_server, engine, brief_run):
    questions = [QUESTIONS[i % len(QUESTIONS)] + "?" * (i // len(QUESTIONS)) for i in range(32)]
    params = GenerationParams(max_new_tokens=12)
    expected = [engine.chat(ask(q), params, adapter=a).text for q, a in zip(questions, ["base", "lora"] * 16)]
    models = [brief_run.name, "lora"] * 16

    async def one(api, question, model):
        stream = await api.chat.completions.create(model=model, messages=ask(question), max_tokens=12, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def all_streams():
        async with openai.AsyncOpenAI(base_url=api_server.url + "/v1", api_key=API_KEY, max_retries=0,
                                      timeout=120) as api:
            return await asyncio.gather(*(one(api, q, m) for q, m in zip(questions, models)))

    assert asyncio.run(all_streams()) == expected
