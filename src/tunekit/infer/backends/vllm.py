"""Optional backend for GPU serving: vLLM's async engine (`pip install 'tunekit[vllm]'`, `--backend vllm`).

Imported only when chosen. vLLM batches by itself (continuous batching, paged KV cache), so
this backend is the engine's scheduler: `submit(Sequence)` hands one request to vLLM's
AsyncLLMEngine, running on an event loop in its own thread, and feeds each new token to the
request's callbacks (infer/batching.py's Sequence). The engine still renders prompts with the
run's training template and passes the run's stop ids; it turns tokens into text and applies
stop strings (infer/answer.py), so answers end where they do with the hf backend. LoRA
adapters are vLLM LoRA requests, one per adapter name; `None` runs the base model.
A cancelled or timed-out request is aborted in vLLM at its next token.

The test suite runs on CPU and skips this backend; bench/serve.py --backend vllm measures it
on a GPU machine.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams
from vllm.lora.request import LoRARequest

from tunekit.dtypes import vllm_name
from tunekit.infer.batching import BatchLimits, Busy, RequestTimeout, Sequence, Stopped
from tunekit.infer.params import GenerationParams


class VLLMBackend:
    batchable = False  # the engine's own scheduler is not used: vLLM batches (see `submit`)

    def __init__(self, engine, loop: asyncio.AbstractEventLoop, thread: threading.Thread, tokenizer,
                 adapters: dict[str, LoRARequest], context_length: int, generation_config=None):
        self.model = engine
        self.tokenizer = tokenizer
        self.adapters = adapters
        self.context_length = context_length
        self.generation_config = generation_config  # for the model's eos (infer/target.py)
        self.limits = BatchLimits()
        self._loop, self._thread = loop, thread
        self._ids = itertools.count()
        self._in_flight = 0
        self._count = threading.Lock()
        self._closing = False

    @classmethod
    def load(cls, model_path: str, tokenizer, adapters: dict[str, Path], dtype: str = "auto",
             trust_remote_code: bool = False) -> VLLMBackend:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="tunekit-vllm", daemon=True)
        thread.start()
        args = AsyncEngineArgs(model=model_path, tokenizer=tokenizer.name_or_path, dtype=vllm_name(dtype),
                               trust_remote_code=trust_remote_code, enable_lora=bool(adapters),
                               max_loras=max(1, len(adapters)))

        async def start():
            engine = AsyncLLMEngine.from_engine_args(args)
            return engine, (await engine.get_model_config()).max_model_len

        engine, context_length = asyncio.run_coroutine_threadsafe(start(), loop).result()
        requests = {name: LoRARequest(name, i + 1, str(path)) for i, (name, path) in enumerate(adapters.items())}
        return cls(engine, loop, thread, tokenizer, requests, int(context_length),
                   _generation_config(model_path, trust_remote_code))

    # -- the engine's scheduler interface (infer/batching.py's Scheduler) ---------------------
    @property
    def queued(self) -> int:
        return max(0, self._in_flight - self.limits.max_running)

    @property
    def running(self) -> int:
        return min(self._in_flight, self.limits.max_running)

    def submit(self, seq: Sequence) -> None:
        if self._closing:
            raise Stopped("the server is shutting down: no new requests")
        with self._count:
            if self._in_flight >= self.limits.max_running + self.limits.max_queued:
                raise Busy(f"{self._in_flight} requests are already in vLLM (the limit): retry shortly")
            self._in_flight += 1
        seq.deadline = time.monotonic() + self.limits.timeout_s
        asyncio.run_coroutine_threadsafe(self._serve(seq), self._loop)

    def run(self, fn, *args):
        return fn(*args)

    def close(self) -> None:
        self._closing = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _serve(self, seq: Sequence) -> None:
        request_id = f"tunekit-{next(self._ids)}"
        try:
            outcome = await self._stream(request_id, seq)
        except Exception as exc:  # noqa: BLE001 - handed to the request's reader
            outcome = exc
        finally:
            with self._count:
                self._in_flight -= 1
        if outcome is not None:
            await self.model.abort(request_id)
        seq.on_done(outcome if isinstance(outcome, BaseException) else None)

    async def _stream(self, request_id: str, seq: Sequence):
        """None when vLLM finished the request; "stop" or an error when it must be aborted."""
        seen = 0
        async for output in self.model.generate({"prompt_token_ids": seq.prompt}, _sampling(seq.params, seq.stop_ids),
                                                request_id, lora_request=self.adapters.get(seq.adapter)):
            tokens = output.outputs[0].token_ids
            for token in tokens[seen:]:
                if seq.cancelled() or not seq.on_token(token):
                    return "stop"
            seen = len(tokens)
            if time.monotonic() >= seq.deadline:
                return RequestTimeout("the request ran past the server's time limit")
        return None

    # -- whole batches (eval) ----------------------------------------------------------------
    def generate_batch(self, prompts: list[list[int]], params: GenerationParams, stop_ids: list[int],
                       adapter: str | None) -> list[list[int]]:
        async def one(prompt: list[int]) -> list[int]:
            final = None
            async for output in self.model.generate({"prompt_token_ids": prompt}, _sampling(params, stop_ids),
                                                    f"tunekit-{next(self._ids)}",
                                                    lora_request=self.adapters.get(adapter)):
                final = output
            return list(final.outputs[0].token_ids) if final else []

        async def all_of_them():
            return await asyncio.gather(*(one(p) for p in prompts))

        return asyncio.run_coroutine_threadsafe(all_of_them(), self._loop).result()


def _generation_config(model_path: str, trust_remote_code: bool):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except OSError:
        return None


def _sampling(params: GenerationParams, stop_ids: list[int]) -> SamplingParams:
    sample = params.temperature > 0
    return SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                          top_p=params.top_p if sample else 1.0, top_k=params.top_k if sample and params.top_k else -1,
                          repetition_penalty=params.repetition_penalty, seed=params.seed, stop_token_ids=stop_ids,
                          skip_special_tokens=False)


Backend = VLLMBackend
