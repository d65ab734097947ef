"""What the API does before and around the engine so one client cannot hold up the others.

- `check_size(data, limits)`: message count and total characters, on the parsed JSON, before
  validation and long before a prompt is rendered (rendering grows with the square of the
  number of turns, so the count is capped; 20,001 messages are refused in milliseconds);
- `reply_or_cancel(generation, request)`: a non-streaming answer that is cancelled as soon as
  its client disconnects (streams cancel when their reader stops);
- `install_busy_handlers(app, metrics)`: a full queue is 429 with Retry-After, a closing
  engine 503, a request past its time limit 504.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tunekit.infer.batching import Busy, RequestTimeout, Stopped

RETRY_AFTER_S = 1


class TooBig(Exception):
    def __init__(self, message: str):
        super().__init__(message)


def check_size(data, max_messages: int, max_chars: int) -> None:
    """Raise TooBig when the conversation has too many messages or characters (before validation)."""
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        return
    if len(messages) > max_messages:
        raise TooBig(f"messages: {len(messages)} messages; this server accepts at most {max_messages} "
                     "(start a new conversation or drop early turns)")
    chars = sum(_chars(m.get("content")) for m in messages if isinstance(m, dict))
    if chars > max_chars:
        raise TooBig(f"messages: {chars} characters of content; this server accepts at most {max_chars}")


def _chars(content) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return 0


async def reply_or_cancel(generation, request, poll_s: float = 0.25):
    """The finished Reply; when the client goes away first, the generation is cancelled."""
    finished = asyncio.ensure_future(_drain(generation))
    try:
        while True:
            done, _ = await asyncio.wait({finished}, timeout=poll_s)
            if done:
                return finished.result()
            if await request.is_disconnected():
                generation.close()
    finally:
        generation.close()


async def _drain(generation):
    async for _ in generation.text_async():
        pass
    return generation.reply


def error_body(message: str, kind: str, code: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def install_busy_handlers(app: FastAPI, metrics) -> None:
    @app.exception_handler(Busy)
    async def busy(request, exc: Busy):
        metrics.refused("busy")
        return JSONResponse(error_body(f"the server is busy: {exc}", "rate_limit_error", "server_busy"),
                            status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(Stopped)
    async def stopped(request, exc: Stopped):
        return JSONResponse(error_body(str(exc), "server_error", "shutting_down"), status_code=503)

    @app.exception_handler(RequestTimeout)
    async def timed_out(request, exc: RequestTimeout):
        return JSONResponse(error_body(str(exc), "server_error", "timeout"), status_code=504)
