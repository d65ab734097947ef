"""The inference engine behind `tunekit chat`, `tunekit webui`, `tunekit serve` and eval.

    engine = Engine.load("runs/ner-lora")                     # run dir, model dir or hub id
    for piece in engine.stream(messages, GenerationParams()):  # the primitive: text increments
        print(piece, end="", flush=True)
    reply = engine.chat(messages, params)                      # Reply(text, tokens, finish_reason)
    replies = engine.batch([messages1, messages2], params)     # left-padded, one generate per batch

Prompts are rendered by `ChatTemplate.prompt`, the function training used, and answers
end at the run's end-of-turn tokens (infer/target.py decides which), so the model answers
as it was trained and stops where it learned to. `Answer` (infer/answer.py) turns tokens
into text; the template's family (infer/parsers.py) splits it into reasoning, content and
tool calls (`Reply.content`, `.reasoning`, `.tool_calls`).

Tools: `ChatOptions(tools, tool_choice, options)` goes with the messages. "none" renders no
tools and parses no calls; a named function (or "required") starts the answer with the
family's call markup for it (`prefill`), so the model writes only the arguments.

The model is held once and touched by one thread only. With the default (hf) backend that
thread batches (infer/batching.py): concurrent answers share each forward pass, a new one
joins between two decoding steps and a finished one leaves at once; `limits` (BatchLimits)
bounds the running and the waiting answers (beyond: `Busy`) and each one's time. The vllm
backend batches by itself (its async engine) under the same limits. A caller that stops reading a stream (or
closes it) cancels its generation.

System prompt: a run trained with a fixed system prompt (a dataset's `system:`) is asked
with it whenever a conversation brings no system message of its own; a conversation that
does bring one overrides it. `engine.system_prompt()` says which one applies.

Adapters: a LoRA run directory brings its own adapter; more come with `adapters=[...]`,
each named after its folder. `adapter=None` means the default: the run's own adapter for a
LoRA run, else the model itself; `adapter=BASE` is the base model with all adapters off.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Iterator

import jinja2

from tunekit.config import ModelConfig
from tunekit.data.templates import ChatTemplate
from tunekit.errors import TunekitError
from tunekit.infer.answer import Answer
from tunekit.infer.parsers import REASONING_MARKERS, Family, Parsed, split_think
from tunekit.infer.backends import BACKENDS
from tunekit.infer.batching import BatchLimits, Scheduler, Sequence
from tunekit.infer.params import ChatOptions, GenerationParams, Reply, check_params
from tunekit.infer.target import adapter_name, chat_template, read_adapter_run, resolve_target, stop_token_ids
from tunekit.model.load import load_tokenizer

log = logging.getLogger(__name__)

BASE = "base"  # the adapter choice that runs the base model with every adapter off


class PromptTooLong(TunekitError):
    """The prompt leaves no room for an answer in the model's context."""

    def __init__(self, prompt_tokens: int, context_length: int):
        super().__init__(f"the prompt has {prompt_tokens} tokens but the model's context holds {context_length}: "
                         "shorten the conversation or the system prompt")
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class UnknownAdapter(TunekitError):
    """An adapter name that is not loaded."""


@dataclass
class Variant:
    """One way to answer: an adapter (or none) with the template and stop tokens it was trained with."""

    adapter: str | None
    template: ChatTemplate
    stop_token_ids: list[int]
    system_prompt: str | None = None  # the run's, used when a conversation brings none


class Engine:
    def __init__(self, backend, tokenizer, name: str, variants: dict[str, Variant], default_adapter: str,
                 limits: BatchLimits | None = None):
        self.backend = backend
        self.tokenizer = tokenizer
        self.name = name
        self.variants = variants
        self.default_adapter = default_adapter
        self.limits = limits or BatchLimits()
        self.finished_hooks: list = []  # each called with every Generation that ended (metrics)
        batches = self.limits.enabled and getattr(backend, "batchable", False)
        self._unwoken: list[Generation] = []  # given tokens this step, readers not yet told (model thread only)
        self.scheduler = Scheduler(backend, self.limits, self._wake_readers) if batches else None
        if hasattr(backend, "submit"):  # a backend that batches by itself (vllm)
            backend.limits, self.scheduler = self.limits, backend
        self._worker = None if batches else ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunekit-generate")

    @classmethod
    def load(cls, target: str, adapters: list[str] | None = None, dtype: str = "auto",
             trust_remote_code: bool = False, backend: str = "hf", base: bool = False,
             limits: BatchLimits | None = None) -> Engine:
        """base=True: a run directory's base model, asked with the run's template and system prompt."""
        backend_type = backend_class(backend)
        spec = resolve_target(str(target), trust_remote_code, base)
        tokenizer = load_tokenizer(ModelConfig(name_or_path=spec.tokenizer_path,
                                               trust_remote_code=spec.trust_remote_code))
        folders = _adapter_folders(spec, adapters or [])
        loaded = backend_type.load(spec.model_path, tokenizer, {n: p for n, (p, _) in folders.items()},
                                   dtype, spec.trust_remote_code)
        eos = loaded.generation_config
        variants = {BASE: _variant(None, tokenizer, spec.run, eos)}
        for name, (path, run) in folders.items():
            variants[name] = _variant(name, tokenizer, run, eos)
        default = next(iter(folders)) if spec.adapter_path else BASE
        return cls(loaded, tokenizer, spec.name, variants, default, limits)

    # -- what is loaded ---------------------------------------------------------------------
    @property
    def model(self):
        return self.backend.model

    @property
    def template(self) -> ChatTemplate:
        return self.variants[self.default_adapter].template

    @property
    def adapter_names(self) -> list[str]:
        return [name for name in self.variants if name != BASE]

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    def variant(self, adapter: str | None) -> Variant:
        name = self.default_adapter if adapter is None else adapter
        if name not in self.variants:
            raise UnknownAdapter(f"adapter '{adapter}' is not loaded; choose one of {', '.join(self.variants)}")
        return self.variants[name]

    def system_prompt(self, adapter: str | None = None) -> str | None:
        """The system prompt used for conversations that bring none (the run's), or None."""
        return self.variant(adapter).system_prompt

    def encode(self, messages: list[dict], adapter: str | None = None, request: ChatOptions | None = None) -> list[int]:
        """The prompt ids for the next answer, rendered exactly as in training."""
        return _prepare(self.variant(adapter), messages, request or ChatOptions(), self.tokenizer).prompt

    # -- generation -------------------------------------------------------------------------
    def stream(self, messages: list[dict], params: GenerationParams, adapter: str | None = None,
               request: ChatOptions | None = None) -> Generation:
        """Start (queue) one answer; iterate the result for text increments. Checks happen now."""
        check_params(params)
        variant = self.variant(adapter)
        turn = _prepare(variant, messages, request or ChatOptions(), self.tokenizer)
        params = self._fit(params, len(turn.prompt))
        generation = Generation(len(turn.prompt), turn)
        on_token, on_done = self._feeds(generation, turn.prompt, params, variant)
        if self.scheduler is not None:
            self.scheduler.submit(Sequence(turn.prompt, params, variant.stop_token_ids, variant.adapter, on_token,
                                           on_done, lambda: generation.cancelled))
        else:
            self._worker.submit(self._generate, generation, turn.prompt, params, variant, on_token, on_done)
        return generation

    def chat(self, messages: list[dict], params: GenerationParams, adapter: str | None = None,
             request: ChatOptions | None = None) -> Reply:
        generation = self.stream(messages, params, adapter, request)
        for _ in generation:
            pass
        return generation.reply

    def batch(self, list_of_messages: list[list[dict]], params: GenerationParams, adapter: str | None = None,
              batch_size: int = 16, request: ChatOptions | None = None) -> list[Reply]:
        """Answers for many conversations: one left-padded generate call per batch of batch_size."""
        check_params(params)
        variant = self.variant(adapter)
        turns = [_prepare(variant, m, request or ChatOptions(), self.tokenizer) for m in list_of_messages]
        replies = []
        for start in range(0, len(turns), batch_size):
            chunk = turns[start: start + batch_size]
            fitted = self._fit(params, max(len(t.prompt) for t in chunk))
            rows = self._on_model_thread(self.backend.generate_batch, [t.prompt for t in chunk], fitted,
                                         variant.stop_token_ids, variant.adapter)
            replies += [self._reply(turn, row, fitted, variant) for turn, row in zip(chunk, rows)]
        return replies

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        else:
            self._worker.shutdown(wait=True, cancel_futures=True)

    def _on_model_thread(self, fn, *args):
        if self.scheduler is not None:
            return self.scheduler.run(fn, *args)
        return self._worker.submit(fn, *args).result()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- on the model's thread --------------------------------------------------------------
    def _feeds(self, generation: Generation, prompt: list[int], params: GenerationParams, variant: Variant):
        """on_token(id) -> wants more, on_done(error or None): tokens into text into the generation."""
        answer = _answer(self.tokenizer, variant, params)

        deferred = isinstance(self.scheduler, Scheduler)  # its after_tokens wakes the readers once per step

        def on_token(token: int) -> bool:
            if generation.cancelled:
                return False
            generation.token_times.append(time.monotonic())
            if generation.put(answer.push(token), wake=not deferred):
                self._unwoken.append(generation)
            return answer.finish_reason is None

        def on_done(exc: BaseException | None) -> None:
            if exc is None:
                generation.put(answer.flush())
                generation.reply = generation.turn.finish(Reply(answer.text, len(prompt), answer.completion_tokens,
                                                                answer.finish_reason or "length"))
            for hook in self.finished_hooks:  # before the reader learns of the end (and closes it)
                hook(generation)
            if exc is None:
                generation.finish(generation.reply)
            else:
                generation.fail(exc)

        return on_token, on_done

    def _wake_readers(self) -> None:
        wake_readers(self._unwoken)
        self._unwoken.clear()

    def _generate(self, generation: Generation, prompt: list[int], params: GenerationParams,
                  variant: Variant, on_token, on_done) -> None:
        try:
            if not generation.cancelled:
                self.backend.generate(prompt, params, variant.stop_token_ids, variant.adapter, on_token)
        except BaseException as exc:  # handed to the reader, who re-raises it
            on_done(exc)
            return
        on_done(None)

    def _reply(self, turn: Turn, row: list[int], params: GenerationParams, variant: Variant) -> Reply:
        answer = _answer(self.tokenizer, variant, params)
        for token in row:
            answer.push(token)
            if answer.finish_reason:
                break
        answer.flush()
        return turn.finish(Reply(answer.text, len(turn.prompt), answer.completion_tokens,
                                 answer.finish_reason or "length"))

    def _fit(self, params: GenerationParams, prompt_tokens: int) -> GenerationParams:
        """max_new_tokens cut to what the context leaves after the prompt."""
        room = self.context_length - prompt_tokens
        if room < 1:
            raise PromptTooLong(prompt_tokens, self.context_length)
        return replace(params, max_new_tokens=min(params.max_new_tokens, room))


class Generation(Iterator[str]):
    """One answer on its way: iterating yields text increments; `.reply` is set at the end.
    Servers read it with `async for text in generation.text_async()` and hold no thread."""

    _END = object()

    def __init__(self, prompt_tokens: int, turn: Turn | None = None):
        self.prompt_tokens = prompt_tokens
        self.turn = turn  # how to read the answer: parser, prefilled call, an opened <think>
        self.created = time.monotonic()
        self.token_times: list[float] = []  # when each token came (time.monotonic)
        self.reply: Reply | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._done = False
        self._wake = _nothing  # tells an async reader that something arrived
        self._reader: tuple | None = None  # (event loop, its asyncio.Event) of an async reader


    def __next__(self) -> str:
        while not self._done:
            item = self._queue.get()
            if isinstance(item, str):
                return item
            self._done = True
            if isinstance(item, BaseException):
                raise item
        raise StopIteration

    async def text_async(self):
        """Text increments as they come; those that arrived together are joined into one."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        self._reader = loop, ready
        self._wake = lambda: _call_soon(loop, ready.set)
        while not self._done:
            ready.clear()
            text, end = self._ready()
            if text:
                yield text
            if end is not None:
                self._done = True
                if isinstance(end, BaseException):
                    raise end
            elif not text:
                await ready.wait()

    def _ready(self) -> tuple[str, object]:
        """What arrived so far without waiting: its text, and the end (or an error) if it came."""
        pieces = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return "".join(pieces), None
            if not isinstance(item, str):
                return "".join(pieces), item
            pieces.append(item)

    def close(self) -> None:
        """Stop reading: the generation ends at its next token."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def put(self, text: str, wake: bool = True) -> bool:
        """Queue text for the reader; wake=False leaves telling it to `wake_readers`. Whether text came."""
        if text:
            self._queue.put(text)
            if wake:
                self._wake()
        return bool(text)

    def finish(self, reply: Reply) -> None:
        self.reply = reply
        self._queue.put(self._END)
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self._queue.put(exc)
        self._wake()


def _nothing() -> None:
    pass


def wake_readers(generations: list[Generation]) -> None:
    """Tell the async readers of these generations that text came: one call into each event loop
    for all of them (a call per token costs the model's thread a socket write and a GIL hand-off).
    Readers that iterate (`next`) need no call: they wait on the queue itself."""
    by_loop: dict = {}
    for generation in generations:
        if generation._reader is not None:
            loop, ready = generation._reader
            by_loop.setdefault(loop, set()).add(ready)
    for loop, events in by_loop.items():
        _call_soon(loop, partial(_set_all, events))


def _set_all(events) -> None:
    for event in events:
        event.set()


def _call_soon(loop, fn) -> None:
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:  # the reader's event loop is gone: nobody is waiting
        pass


def _variant(adapter: str | None, tokenizer, run, generation_config) -> Variant:
    template = chat_template(tokenizer, run)
    return Variant(adapter, template, stop_token_ids(template, run, generation_config),
                   run.system_prompt if run is not None else None)


def with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """The conversation as asked: the run's system prompt first unless it brings its own."""
    if system_prompt and not (messages and messages[0].get("role") == "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


@dataclass
class Turn:
    """One answer to generate: its prompt ids, and how to read what the model writes."""

    prompt: list[int]
    family: Family
    prefill: str = ""  # answer text already in the prompt (a forced call's opening)
    thinking: bool = False  # the prompt ends inside an opened <think>
    calls: bool = True  # parse tool calls (False for tool_choice "none")

    def parse(self, text: str) -> Parsed:
        """What the model wrote (after the prefill) as reasoning, content and calls."""
        text = self.prefill + text
        if self.calls:
            return self.family.parse(text, self.thinking)
        reasoning, content = split_think(text, self.thinking)
        return Parsed(content.strip(), reasoning)

    def finish(self, reply: Reply) -> Reply:
        parsed = self.parse(reply.text)
        for warning in parsed.warnings:
            log.warning(warning)
        finish = "tool_calls" if parsed.tool_calls and reply.finish_reason == "stop" else reply.finish_reason
        return replace(reply, finish_reason=finish, content=parsed.content, reasoning=parsed.reasoning,
                       tool_calls=parsed.tool_calls, warnings=parsed.warnings)


def _prepare(variant: Variant, messages: list[dict], request: ChatOptions, tokenizer) -> Turn:
    template, messages = variant.template, with_system(messages, variant.system_prompt)
    choice = request.tool_choice or "auto"
    tools = None if choice == "none" else _chosen_tools(request.tools, choice)
    try:
        text, ids = template.prompt(messages, tools=tools, options=request.options)
    except jinja2.TemplateError as exc:
        raise TunekitError(f"the chat template refused this conversation: {exc}") from None
    prefill = ""
    if tools and choice != "auto":
        name = choice["function"]["name"] if isinstance(choice, dict) else None
        prefill = template.answer_lead(messages, tools, request.options) + template.family.opening(name)
        ids = ids + tokenizer(prefill, add_special_tokens=False)["input_ids"]
    thinking = text.rstrip("\n").endswith("<think>") and not prefill
    return Turn(ids, template.family, prefill, thinking, calls=choice != "none")


def _chosen_tools(tools: list | None, choice) -> list | None:
    if not isinstance(choice, dict) or not tools:
        return tools
    name = choice["function"]["name"]
    chosen = [t for t in tools if t.get("function", t).get("name") == name]
    if not chosen:
        raise TunekitError(f"tool_choice names function '{name}', which is not among the tools")
    return chosen


def _answer(tokenizer, variant: Variant, params: GenerationParams) -> Answer:
    return Answer(tokenizer, variant.stop_token_ids, params.stop, params.max_new_tokens,
                  keep=variant.template.family.markers + REASONING_MARKERS)


def backend_class(name: str):
    if name not in BACKENDS:
        raise TunekitError(f"unknown backend '{name}': choose one of {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as exc:
        raise TunekitError(f"backend '{name}' needs {exc.name or 'an extra package'}: "
                           f"pip install 'tunekit[{name}]'") from None
    return module.Backend


def _adapter_folders(spec, extra: list[str]) -> dict[str, tuple[Path, object]]:
    """name -> (run directory, Run): the target run's own adapter first, then the extra ones."""
    folders: dict[str, tuple[Path, object]] = {}
    paths = ([spec.adapter_path] if spec.adapter_path else []) + [Path(p) for p in extra]
    for path in paths:
        run = spec.run if path == spec.adapter_path else read_adapter_run(path, spec.model_path)
        folders[adapter_name(path, set(folders) | {BASE})] = (path, run)
    return folders
