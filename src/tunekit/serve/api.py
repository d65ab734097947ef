"""OpenAI-compatible HTTP API over the engine (FastAPI + uvicorn).

    tunekit serve runs/ner-lora --api-key secret
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret")
    client.chat.completions.create(model="ner-lora", messages=[...], stream=True)

Endpoints: GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions (`stream: true`
sends server-sent events ending with `data: [DONE]`; `stream_options.include_usage` adds a
usage chunk), GET /health (ready; running and waiting counts), GET /metrics (Prometheus text,
serve/metrics.py). Model ids: the target's name (its default adapter), and when
adapters are loaded, each adapter's name and `base`. Parameters: max_tokens (or
max_completion_tokens), temperature, top_p, seed, stop, plus top_k and repetition_penalty;
a parameter left out takes the server's default (greedy unless started with --temperature).

Tools: `tools` (function definitions) and `tool_choice` ("auto", "none", "required" or
{"type": "function", "function": {"name": ...}}) go to the template; the answer's calls come
back as `message.tool_calls` (arguments as a JSON string) with `finish_reason:
"tool_calls"`, and `tool` messages (with tool_call_id) carry results back. Reasoning comes
back apart, as `reasoning_content`. Streamed, reasoning and content arrive as deltas as they
are written, and the calls as `tool_calls` deltas once each is complete.
`chat_template_kwargs` sets template switches for one request, e.g. {"enable_thinking": false}.

Every failure is a JSON body {"error": {"message", "type", "param", "code"}} with a 4xx
status (401 key, 404 model or path, 400 JSON / parameters / prompt too long, 413 body too
large, 429 + Retry-After when the queue is full, 504 past the time limit), and the server
keeps serving. Generations are batched by the engine (infer/batching.py); message count and
size are checked before anything is rendered (serve/guard.py); a client that disconnects
cancels its generation, streaming or not. SIGTERM drains: no new connections, running
answers finish (at most `drain_s`), requests still rendering get 503, and the process exits 0.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from tunekit.errors import TunekitError
from tunekit.infer.engine import BASE, PromptTooLong
from tunekit.data.records import tool_call
from tunekit.infer.params import ChatOptions, GenerationParams, InvalidParams, check_params
from tunekit.infer.parsers import NO_CALLS, Splitter
from tunekit.serve.guard import (DrainingServer, TooBig, check_size, install_busy_handlers, reply_or_cancel,
                                 start_or_refuse)
from tunekit.serve.metrics import Metrics


@dataclass
class Limits:
    max_tokens: int = 2048  # the largest max_tokens a request may ask for
    max_request_bytes: int = 1 << 20  # the largest request body
    max_messages: int = 256  # messages in one request at most (rendering grows with their square)
    max_chars: int = 200_000  # characters of message content in one request at most
    drain_s: float = 30.0  # on SIGTERM: how long running requests may finish while new ones are refused


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def response(self) -> JSONResponse:
        body = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status)


# -- request ---------------------------------------------------------------------------------
class ContentPart(BaseModel):
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str | dict = "{}"


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    reasoning_content: str | None = None


class Function(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict | None = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: Function


class NamedChoice(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionCall | dict


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict | None = None


def parse_request(body: bytes, limits: Limits | None = None) -> ChatRequest:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    try:
        limits = limits or Limits()
        check_size(data, limits.max_messages, limits.max_chars)
    except TooBig as exc:
        raise ApiError(400, str(exc), code="request_too_large", param="messages") from None
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}", code="invalid_value", param=where) from None
    refuse_unsupported(request)
    return request


def refuse_unsupported(request: ChatRequest) -> None:
    unsupported = {
        "n": request.n != 1, "presence_penalty": request.presence_penalty != 0,
        "frequency_penalty": request.frequency_penalty != 0, "logprobs": request.logprobs,
    }
    for name, used in unsupported.items():
        if used:
            raise ApiError(400, f"{name} is not supported by this server; leave it out", code="unsupported", param=name)


def to_options(request: ChatRequest) -> ChatOptions:
    """Tools, tool_choice and template switches of a request, checked against each other."""
    tools = [t.model_dump(exclude_none=True) for t in request.tools] if request.tools else None
    choice = request.tool_choice
    if isinstance(choice, NamedChoice):
        name = choice.function.name if isinstance(choice.function, FunctionCall) else choice.function.get("name")
        if not tools or name not in [t["function"]["name"] for t in tools]:
            raise ApiError(400, f"tool_choice names function '{name}', which is not in tools",
                           code="invalid_value", param="tool_choice")
        choice = {"type": "function", "function": {"name": name}}
    if choice == "required" and not tools:
        raise ApiError(400, "tool_choice 'required' needs tools", code="invalid_value", param="tool_choice")
    return ChatOptions(tools, choice, dict(request.chat_template_kwargs or {}))


def to_messages(request: ChatRequest) -> list[dict]:
    messages = []
    for i, message in enumerate(request.messages):
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" for part in content):
                raise ApiError(400, f"messages.{i}.content: only text parts are supported", param="messages")
            content = "".join(part.text or "" for part in content)
        if content and not _is_unicode_text(content):
            raise ApiError(400, f"messages.{i}.content is not valid Unicode text (it holds a lone surrogate such as "
                           "\\ud800); send UTF-8 text", code="invalid_value", param="messages")
        role = "system" if message.role == "developer" else message.role
        out = {"role": role, "content": content or ""}
        if message.tool_calls:
            out["tool_calls"] = [tool_call(c.function.name, c.function.arguments, c.id) for c in message.tool_calls]
        for key in ("tool_call_id", "name", "reasoning_content"):
            if getattr(message, key):
                out[key] = getattr(message, key)
        messages.append(out)
    return messages


def _is_unicode_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_params(request: ChatRequest, defaults: GenerationParams, limits: Limits) -> GenerationParams:
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None and not 1 <= max_tokens <= limits.max_tokens:
        raise ApiError(400, f"max_tokens must be between 1 and {limits.max_tokens}, got {max_tokens}",
                       code="invalid_value", param="max_tokens")
    given = {"temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
             "repetition_penalty": request.repetition_penalty, "seed": request.seed,
             "stop": [request.stop] if isinstance(request.stop, str) else request.stop}
    params = replace(defaults, max_new_tokens=min(max_tokens or defaults.max_new_tokens, limits.max_tokens),
                     **{k: v for k, v in given.items() if v is not None})
    try:
        check_params(params)
    except InvalidParams as exc:
        raise ApiError(400, str(exc), code="invalid_value", param=str(exc).split()[0]) from None
    return params


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {declared} bytes; this server accepts at most {limit}",
                       code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body exceeds {limit} bytes", code="request_too_large")
    return bytes(body)


# -- response --------------------------------------------------------------------------------
def completion(cid: str, model: str, reply) -> dict:
    message = {"role": "assistant", "content": reply.content if reply.content or not reply.tool_calls else None}
    if reply.reasoning is not None:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [wire_call(call) for call in reply.tool_calls]
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}],
        "usage": usage(reply),
    }


def wire_call(call: dict, index: int | None = None) -> dict:
    """A structured call as the OpenAI API sends it: arguments as a JSON string."""
    arguments = call["function"]["arguments"]
    out = {"id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
           "function": {"name": call["function"]["name"],
                        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments,
                                                                                             ensure_ascii=False)}}
    return out if index is None else {"index": index, **out}


def usage(reply) -> dict:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def chunk(cid: str, model: str, delta: dict, finish_reason: str | None = None, with_usage: bool = False) -> str:
    data = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
    if with_usage:
        data["usage"] = None
    return sse(data)


def sse(data) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def events(generation, cid: str, model: str, include_usage: bool):
    """The server-sent events of one streamed answer; closing early cancels the generation.
    Text goes through the parser's Splitter: reasoning and content deltas apart, calls at the end."""
    turn = generation.turn
    splitter = Splitter(turn.family if turn.calls else NO_CALLS, turn.thinking)
    try:
        yield chunk(cid, model, {"role": "assistant", "content": ""}, with_usage=include_usage)
        for delta in deltas(splitter.push(turn.prefill)):
            yield chunk(cid, model, delta, with_usage=include_usage)
        async for piece in generation.text_async():
            for delta in deltas(splitter.push(piece)):
                yield chunk(cid, model, delta, with_usage=include_usage)
        reply = generation.reply
        _, rest = splitter.finish()
        for delta in deltas(rest):
            yield chunk(cid, model, delta, with_usage=include_usage)
        if reply.tool_calls:
            calls = [wire_call(call, k) for k, call in enumerate(reply.tool_calls)]
            yield chunk(cid, model, {"tool_calls": calls}, with_usage=include_usage)
        yield chunk(cid, model, {}, reply.finish_reason, with_usage=include_usage)
        if include_usage:
            yield sse({"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                       "choices": [], "usage": usage(reply)})
    except Exception as exc:  # the status line is already sent: report in the stream
        yield sse({"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}})
    finally:
        generation.close()
    yield "data: [DONE]\n\n"


def deltas(pieces: list[tuple[str, str]]) -> list[dict]:
    return [{"reasoning_content" if kind == "reasoning" else "content": text} for kind, text in pieces]


# -- app -------------------------------------------------------------------------------------
def model_ids(engine, served_name: str) -> dict[str, str | None]:
    """model id -> adapter choice: the served name is the default; adapters and base when there are any."""
    ids = {served_name: None}
    if engine.adapter_names:
        ids.update({name: name for name in [*engine.adapter_names, BASE] if name not in ids})
    return ids


def build_app(engine, defaults: GenerationParams, api_key: str | None = None, model_name: str | None = None,
              limits: Limits = Limits(), draining: threading.Event | None = None) -> FastAPI:
    """draining: set when the server starts shutting down (DrainingServer); requests not yet
    handed to the engine are refused from then on."""
    draining = draining or threading.Event()
    served = model_name or engine.name
    ids = model_ids(engine, served)
    created = int(time.time())
    app = FastAPI(title="tunekit", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics(engine)
    install_error_handlers(app)
    install_busy_handlers(app, metrics)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key",
                           kind="authentication_error")
        if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "wrong API key", code="invalid_api_key", kind="authentication_error")

    def model_card(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "tunekit"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "running": _count(engine, "running"), "queued": _count(engine, "queued")}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models(request: Request):
        authorize(request)
        return {"object": "list", "data": [model_card(i) for i in ids]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, request: Request):
        authorize(request)
        adapter_for(model_id)
        return model_card(model_id)

    def adapter_for(model_id: str) -> str | None:
        if model_id not in ids:
            raise ApiError(404, f"model '{model_id}' does not exist; this server has {', '.join(ids)}",
                           code="model_not_found", param="model")
        return ids[model_id]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = parse_request(await read_body(request, limits.max_request_bytes), limits)
        adapter = adapter_for(body.model)
        messages, params, extra = to_messages(body), to_params(body, defaults, limits), to_options(body)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        generation = await start_or_refuse(draining, engine.stream, messages, params, adapter, extra)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(events(generation, cid, body.model, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return completion(cid, body.model, await reply_or_cancel(generation, request))

    return app


def _count(engine, what: str) -> int:
    scheduler = getattr(engine, "scheduler", None)
    return getattr(scheduler, what) if scheduler is not None else 0


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return exc.response()

    @app.exception_handler(PromptTooLong)
    async def too_long(request, exc: PromptTooLong):
        return ApiError(400, str(exc), code="context_length_exceeded", param="messages").response()

    @app.exception_handler(TunekitError)
    async def user_error(request, exc: TunekitError):
        return ApiError(400, str(exc), code="invalid_request").response()

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None,
                        ).response()

    @app.exception_handler(Exception)
    async def server_error(request, exc: Exception):
        return ApiError(500, f"internal error: {exc}", kind="server_error").response()


def serve(engine, defaults: GenerationParams, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          model_name: str | None = None, limits: Limits = Limits()) -> None:
    import torch
    import uvicorn

    draining = threading.Event()
    app = build_app(engine, defaults, api_key, model_name, limits, draining)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: serving on {host} without an API key: anyone who can reach it can use the model")
    models = ", ".join(model_ids(engine, model_name or engine.name))
    print(f"OpenAI-compatible API on http://{host}:{port}/v1 (models: {models}); Ctrl-C stops", flush=True)
    together = f"{engine.limits.max_running} running" if engine.scheduler else "one at a time (no batching)"
    print(f"limits: {together}, {engine.limits.max_queued} waiting (then 429), "
          f"{engine.limits.timeout_s:g} s per request, max_tokens <= {limits.max_tokens}, "
          f"{limits.max_messages} messages / {limits.max_chars} characters / {limits.max_request_bytes} bytes "
          f"per request, {limits.drain_s:g} s to drain on SIGTERM, {torch.get_num_threads()} torch threads", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=limits.drain_s)
    DrainingServer(config, draining).run()
