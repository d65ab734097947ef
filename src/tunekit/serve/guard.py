"""What the API does before and around the engine so one client cannot hold up the others.

- `check_size(data, limits)`: message count and total characters, on the parsed JSON, before
  validation and long before a prompt is rendered (rendering grows with the square of the
  number of turns, so the count is capped; 20,001 messages are refused in milliseconds);
- `reply_or_cancel(generation, request)`: a non-streaming answer that is cancelled as soon as
  its client disconnects (streams cancel when their reader stops);
- `install_busy_handlers(app, metrics)`: a full queue is 429 with Retry-After, a closing
  engine 503, a request past its time limit 504;
- `DrainingServer` and `start_or_refuse`: on SIGTERM (or Ctrl-C) uvicorn stops accepting
  connections and lets running answers finish for `drain_s`; a request still rendering its
  prompt is answered 503 at once and its render abandoned (a render runs in a daemon thread,
  which neither the drain nor the interpreter's exit waits for), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading

import uvicorn
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


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which says when shutdown began (`draining`) and exits normally after it:
    uvicorn raises the signal again once drained, so SIGTERM would end the process with 143
    and without closing the engine."""

    def __init__(self, config: uvicorn.Config, draining: threading.Event):
        super().__init__(config)
        self.draining = draining

    def handle_exit(self, sig, frame) -> None:
        self.draining.set()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


async def start_or_refuse(draining: threading.Event, fn, *args, poll_s: float = 0.1):
    """fn(*args) (the engine's render and submit) in a daemon thread; Stopped when the server
    starts shutting down first. A generation that starts for a request that stopped waiting
    (shutdown, or the request itself cancelled) is cancelled."""
    if draining.is_set():
        raise Stopped("the server is shutting down: no new requests")
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    abandoned = threading.Event()

    def work():
        try:
            outcome = fn(*args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
            outcome = None, exc
        try:
            loop.call_soon_threadsafe(_settle, future, abandoned, *outcome)
        except RuntimeError:  # the event loop is gone: nobody waits
            if outcome[0] is not None:
                outcome[0].close()

    threading.Thread(target=work, name="tunekit-render", daemon=True).start()
    try:
        while not future.done():
            await asyncio.wait({future}, timeout=poll_s)
            if draining.is_set() and not future.done():
                raise Stopped("the server is shutting down: this request had not started")
    except BaseException:
        abandoned.set()
        if future.done() and not future.exception():
            future.result().close()
        raise
    return future.result()


def _settle(future: asyncio.Future, abandoned: threading.Event, result, error) -> None:
    """On the event loop: hand the outcome to the waiting request, or cancel what nobody awaits."""
    if abandoned.is_set():
        if result is not None:
            result.close()
    elif error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


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
