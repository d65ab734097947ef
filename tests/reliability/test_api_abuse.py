"""API abuse suite: malformed and hostile requests against `tunekit serve`'s FastAPI app, in process.

Each row is one request a broken or hostile client could send. The answer must be the row's
4xx status with an OpenAI-style JSON error body {"error": {"message", "type", ...}} (never a 500,
never a hang), and afterwards the app must still answer a well-formed request. The app is the
one `tunekit serve` runs (build_app), with an API key and small limits, on the tiny LoRA run.
"""

from __future__ import annotations

import json

import pytest

API_KEY = "abuse-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_BYTES = 8192


def chat(**fields) -> dict:
    return {"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}


# (id, method, path, body: dict | str | bytes | None, headers, expected status, substring of the message)
CASES = [
    ("no-key", "POST", "/v1/chat/completions", chat(), {}, 401, "missing API key"),
    ("wrong-key", "POST", "/v1/chat/completions", chat(), {"Authorization": "Bearer nope"}, 401, "wrong API key"),
    ("basic-auth", "POST", "/v1/chat/completions", chat(), {"Authorization": "Basic YTpi"}, 401, "missing API key"),
    ("key-with-newline", "GET", "/v1/models", None, {"Authorization": f"Bearer {API_KEY}x"}, 401, "wrong"),
    ("models-no-key", "GET", "/v1/models", None, {}, 401, "missing API key"),
    ("empty-body", "POST", "/v1/chat/completions", b"", AUTH, 400, "not valid JSON"),
    ("not-json", "POST", "/v1/chat/completions", b"{model: x", AUTH, 400, "not valid JSON"),
    ("binary-body", "POST", "/v1/chat/completions", b"\xff\xfe\x00\x01", AUTH, 400, "not valid JSON"),
    ("json-array", "POST", "/v1/chat/completions", "[1, 2]", AUTH, 400, ""),
    ("json-string", "POST", "/v1/chat/completions", '"hello"', AUTH, 400, ""),
    ("json-null", "POST", "/v1/chat/completions", "null", AUTH, 400, ""),
    ("no-model", "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, AUTH, 400,
     "model"),
    ("unknown-model", "POST", "/v1/chat/completions", chat(model="gpt-9"), AUTH, 404, "does not exist"),
    ("model-is-a-number", "POST", "/v1/chat/completions", chat(model=5), AUTH, 400, "model"),
    ("no-messages", "POST", "/v1/chat/completions", {"model": "MODEL"}, AUTH, 400, "messages"),
    ("messages-empty", "POST", "/v1/chat/completions", chat(messages=[]), AUTH, 400, "messages"),
    ("messages-not-list", "POST", "/v1/chat/completions", chat(messages="hi"), AUTH, 400, "messages"),
    ("message-no-role", "POST", "/v1/chat/completions", chat(messages=[{"content": "hi"}]), AUTH, 400, "role"),
    ("message-bad-role", "POST", "/v1/chat/completions", chat(messages=[{"role": "root", "content": "x"}]), AUTH,
     400, "role"),
    ("content-number", "POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), AUTH, 400,
     "content"),
    ("content-image-part", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), AUTH, 400,
     "only text parts"),
    ("max-tokens-zero", "POST", "/v1/chat/completions", chat(max_tokens=0), AUTH, 400, "max_tokens"),
    ("max-tokens-negative", "POST", "/v1/chat/completions", chat(max_tokens=-5), AUTH, 400, "max_tokens"),
    ("max-tokens-huge", "POST", "/v1/chat/completions", chat(max_tokens=10**12), AUTH, 400, "max_tokens"),
    ("max-tokens-string", "POST", "/v1/chat/completions", chat(max_tokens="many"), AUTH, 400, "max_tokens"),
    ("temperature-negative", "POST", "/v1/chat/completions", chat(temperature=-1), AUTH, 400, "temperature"),
    ("temperature-nan", "POST", "/v1/chat/completions", '{"model": "MODEL", "messages": [{"role": "user", '
     '"content": "hi"}], "temperature": NaN}', AUTH, 400, "temperature"),
    ("temperature-infinity", "POST", "/v1/chat/completions", '{"model": "MODEL", "messages": [{"role": "user", '
     '"content": "hi"}], "temperature": Infinity}', AUTH, 400, "temperature"),
    ("top-p-above-1", "POST", "/v1/chat/completions", chat(top_p=2), AUTH, 400, "top_p"),
    ("top-k-negative", "POST", "/v1/chat/completions", chat(top_k=-1), AUTH, 400, "top_k"),
    ("seed-huge", "POST", "/v1/chat/completions", chat(seed=2**80), AUTH, 400, "seed"),
    ("stop-empty-string", "POST", "/v1/chat/completions", chat(stop=[""]), AUTH, 400, "stop"),
    ("stop-too-many", "POST", "/v1/chat/completions", chat(stop=[f"s{i}" for i in range(100)]), AUTH, 400, "stop"),
    ("stop-number", "POST", "/v1/chat/completions", chat(stop=5), AUTH, 400, "stop"),
    ("n-two", "POST", "/v1/chat/completions", chat(n=2), AUTH, 400, "n is not supported"),
    ("logprobs", "POST", "/v1/chat/completions", chat(logprobs=True), AUTH, 400, "logprobs"),
    ("tools", "POST", "/v1/chat/completions", chat(tools=[{"type": "function"}]), AUTH, 400, "tools"),
    ("stream-not-bool", "POST", "/v1/chat/completions", chat(stream="yes please"), AUTH, 400, "stream"),
    ("body-too-large", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": "x" * (2 * MAX_BYTES)}]), AUTH, 413, "at most"),
    ("declared-length-huge", "POST", "/v1/chat/completions", chat(), {**AUTH, "Content-Length": str(10**12)}, 413,
     "at most"),
    ("prompt-longer-than-context", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": "word " * 1500}]), AUTH, 400, "context"),
    ("deep-but-legal-nesting", "POST", "/v1/chat/completions", chat(extra=json.loads("[" * 200 + "]" * 200)),
     AUTH, 200, ""),
    ("null-bytes-in-content", "POST", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": "a\u0000b"}]), AUTH, 200, ""),
    ("lone-surrogate", "POST", "/v1/chat/completions",
     '{"model": "MODEL", "messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 4}', AUTH, 400,
     "surrogate"),
    ("wrong-method", "GET", "/v1/chat/completions", None, AUTH, 405, ""),
    ("unknown-path", "GET", "/v1/nothing-here", None, AUTH, 404, ""),
    ("path-traversal", "GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", None, AUTH, 404, ""),
    ("unknown-model-card", "GET", "/v1/models/gpt-9", None, AUTH, 404, "does not exist"),
]


@pytest.fixture(scope="module")
def client(lora_engine):
    from fastapi.testclient import TestClient

    from tunekit.infer.params import GenerationParams
    from tunekit.serve.api import Limits, build_app

    app = build_app(lora_engine, GenerationParams(max_new_tokens=4), api_key=API_KEY,
                    limits=Limits(max_tokens=64, max_request_bytes=MAX_BYTES))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.model_id = lora_engine.name
        yield test_client


def send(client, method, path, body, headers):
    if isinstance(body, dict):
        body = json.dumps(body).replace('"MODEL"', json.dumps(client.model_id))
    elif isinstance(body, str):
        body = body.replace('"MODEL"', json.dumps(client.model_id))
    content = body.encode() if isinstance(body, str) else body
    return client.request(method, path, content=content,
                          headers={"Content-Type": "application/json", **headers} if content is not None else headers)


@pytest.mark.parametrize("method,path,body,headers,status,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_abusive_request_gets_its_status_and_a_json_error(client, method, path, body, headers, status, message):
    response = send(client, method, path, body, headers)
    assert response.status_code == status, response.text
    data = response.json()
    if status >= 400:
        error = data["error"]
        assert set(error) >= {"message", "type"} and message in error["message"], error
        assert "Traceback" not in error["message"] and "internal error" not in error["message"]
    else:
        assert data["choices"][0]["message"]["content"] is not None
    healthy = send(client, "POST", "/v1/chat/completions", chat(), AUTH)  # and it keeps serving
    assert healthy.status_code == 200, healthy.text


def test_the_table_covers_each_kind_of_abuse():
    statuses = {c[5] for c in CASES}
    assert len(CASES) >= 40 and {400, 401, 404, 405, 413} <= statuses
