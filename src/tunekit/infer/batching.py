"""Iteration-level batching for the hf backend: many requests share each forward pass.

    scheduler = Scheduler(backend, BatchLimits(max_running=32, max_queued=256), after_tokens=wake_readers)
    scheduler.submit(Sequence(prompt_ids, params, stop_ids, adapter, on_token, on_done, cancelled))
    scheduler.run(fn, *args)      # anything else that needs the model, between two steps
    scheduler.close()

One thread owns the model. Each turn of its loop it drops cancelled and timed-out
sequences, admits waiting ones (their prompts prefilled together, left-padded), then runs
one decoding step for every running group: the next token of every row in one forward pass
over a shared, left-padded KV cache (transformers' DynamicCache). A newcomer's cache is
padded to the group's width and concatenated; a finished row is cut out at once, and
columns that only padding still uses are dropped. `after_tokens()` runs once after each
prefill and each step, when every row has had its token: the engine wakes the readers then,
once per step rather than once per token.

Rows of one group may use different LoRA adapters (peft's `adapter_names`, one per row); a
model whose adapters cannot be mixed that way keeps one group per adapter, stepped in turn.
Sampling is per row: repetition penalty, temperature, top-k, top-p, and a torch.Generator
seeded from the request's seed, so a seeded answer does not depend on its neighbours.
Greedy rows take the argmax; padded batches round fp32 sums differently from a lone
request, so a token whose top-2 logits are within ~1e-5 may differ from the lone answer.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import torch

from tunekit.errors import TunekitError
from tunekit.infer.params import GenerationParams
from tunekit.model.padding import left_padded, positions

BASE_ROW = "__base__"  # peft's name for "no adapter" in a mixed batch


class Busy(TunekitError):
    """The queue of waiting requests is full: try again shortly."""


class RequestTimeout(TunekitError):
    """A request ran past its time limit."""


class Stopped(TunekitError):
    """The server is shutting down and takes no new requests."""


@dataclass
class BatchLimits:
    max_running: int = 32  # sequences decoded together at most
    max_queued: int = 256  # requests waiting for a slot at most; beyond that: Busy (HTTP 429)
    timeout_s: float = 600.0  # a request (waiting + generating) ends with RequestTimeout after this
    enabled: bool = True  # False: one generation after another (each a plain `generate` call)

    def __post_init__(self):
        if self.max_running < 1 or self.max_queued < 0 or self.timeout_s <= 0:
            raise TunekitError(f"batch limits must be positive: {self}")


@dataclass(eq=False)
class Sequence:
    """One request: its prompt, settings, and the callbacks that carry its tokens out."""

    prompt: list[int]
    params: GenerationParams
    stop_ids: list[int]
    adapter: str | None
    on_token: Callable[[int], bool]  # False: this answer is complete (or its reader is gone)
    on_done: Callable[[BaseException | None], None]
    cancelled: Callable[[], bool]
    deadline: float = float("inf")
    generated: int = 0
    generator: torch.Generator | None = None
    answer: list[int] = field(default_factory=list)  # the ids generated so far

    def expired(self, now: float) -> bool:
        return now >= self.deadline


@dataclass
class Group:
    """Rows decoded together: a shared left-padded cache, its mask, each row's next token and position."""

    rows: list[Sequence]
    cache: object
    mask: torch.Tensor  # [rows, cache width], 1 = a real token
    next_ids: torch.Tensor  # [rows]
    next_pos: torch.Tensor  # [rows]


@dataclass
class _Job:
    fn: Callable
    args: tuple
    future: Future = field(default_factory=Future)


class Scheduler:
    def __init__(self, backend, limits: BatchLimits = BatchLimits(), after_tokens: Callable[[], None] = lambda: None):
        self.backend = backend
        self.limits = limits
        self.after_tokens = after_tokens
        self.mixable = backend.adapters_mixable
        self._waiting: deque[Sequence] = deque()
        self._jobs: deque[_Job] = deque()
        self._groups: dict[str | None, Group] = {}
        self._wake = threading.Condition()
        self._closing = False
        self._running = 0  # rows in self._groups, as of the last turn of the loop
        self._thread = threading.Thread(target=self._loop, name="tunekit-batch", daemon=True)
        self._thread.start()

    # -- callers ------------------------------------------------------------------------------
    def submit(self, seq: Sequence) -> None:
        with self._wake:
            if self._closing:
                raise Stopped("the server is shutting down: no new requests")
            if len(self._waiting) >= self.limits.max_queued:
                raise Busy(f"{len(self._waiting)} requests are already waiting (the limit): retry shortly")
            seq.deadline = time.monotonic() + self.limits.timeout_s
            self._waiting.append(seq)
            self._wake.notify()

    def run(self, fn: Callable, *args):
        """fn(*args) on the model's thread between two steps; returns its result."""
        job = _Job(fn, args)
        with self._wake:
            if self._closing:
                raise Stopped("the engine is closed")
            self._jobs.append(job)
            self._wake.notify()
        return job.future.result()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return self._running

    def close(self) -> None:
        """Refuse new work, end what is left with Stopped, and wait for the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    # -- the model's thread -----------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._closing or self._waiting or self._jobs or self._groups):
                    self._wake.wait()
                if self._closing:
                    break
                job = self._jobs.popleft() if self._jobs else None
            if job is not None:
                _run_job(job)
            self._drop_finished()
            self._admit()
            self.after_tokens()
            for key in list(self._groups):
                self._step(key)
                self.after_tokens()
            self._running = sum(len(g.rows) for g in self._groups.values())
        self._shutdown()

    def _shutdown(self) -> None:
        stopped = Stopped("the engine was closed before this answer finished")
        for seq in [*self._waiting, *(r for g in self._groups.values() for r in g.rows)]:
            seq.on_done(stopped)
        for job in self._jobs:
            job.future.set_exception(stopped)
        self._waiting.clear(), self._groups.clear(), self._jobs.clear()

    def _drop_finished(self) -> None:
        """Cancelled or timed-out requests leave now, waiting or running."""
        now = time.monotonic()
        with self._wake:
            for seq in [s for s in self._waiting if s.cancelled() or s.expired(now)]:
                self._waiting.remove(seq)
                _end(seq, now)
        for key, group in list(self._groups.items()):
            keep = [i for i, s in enumerate(group.rows) if not (s.cancelled() or s.expired(now))]
            for i in set(range(len(group.rows))) - set(keep):
                _end(group.rows[i], now)
            self._keep(key, keep)

    def _admit(self) -> None:
        room = self.limits.max_running - sum(len(g.rows) for g in self._groups.values())
        with self._wake:
            newcomers = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        by_key: dict[str | None, list[Sequence]] = {}
        for seq in newcomers:
            by_key.setdefault(self._key(seq), []).append(seq)
        for key, seqs in by_key.items():
            try:
                group = self._prefill(seqs)
            except Exception as exc:  # noqa: BLE001 - handed to each request's reader
                for seq in seqs:
                    seq.on_done(exc)
                continue
            if group is not None:
                self._groups[key] = _merge(self._groups[key], group) if key in self._groups else group

    def _key(self, seq: Sequence) -> str | None:
        return None if self.mixable else (seq.adapter or BASE_ROW)

    @torch.inference_mode()
    def _prefill(self, seqs: list[Sequence]) -> Group | None:
        device = self.backend.device
        ids, mask = left_padded([s.prompt for s in seqs], self.backend.pad_id, device)
        for seq in seqs:
            seq.generator = _generator(seq.params, device)
        cache = self.backend.new_cache()
        logits = self.backend.forward(ids, mask, positions(mask), cache, [s.adapter for s in seqs])
        group = Group(seqs, cache, mask, ids[:, -1], mask.sum(-1))
        return self._advance(group, logits)

    @torch.inference_mode()
    def _step(self, key) -> None:
        group = self._groups[key]
        mask = torch.cat([group.mask, torch.ones_like(group.mask[:, :1])], dim=1)
        try:
            logits = self.backend.forward(group.next_ids[:, None], mask, group.next_pos[:, None], group.cache,
                                          [s.adapter for s in group.rows])
        except Exception as exc:  # noqa: BLE001
            for seq in group.rows:
                seq.on_done(exc)
            del self._groups[key]
            return
        group.mask, group.next_pos = mask, group.next_pos + 1
        advanced = self._advance(group, logits)
        if advanced is None:
            del self._groups[key]
        else:
            self._groups[key] = advanced

    def _advance(self, group: Group, logits: torch.Tensor) -> Group | None:
        """Sample each row's next token, hand it out, and keep the rows that go on."""
        tokens = sample(logits, group.rows)
        keep = []
        for i, (seq, token) in enumerate(zip(group.rows, tokens.tolist())):
            seq.generated += 1
            seq.answer.append(token)
            try:
                more = seq.on_token(token) and seq.generated < seq.params.max_new_tokens and not seq.cancelled()
            except Exception as exc:  # noqa: BLE001
                seq.on_done(exc)
                continue
            if more:
                keep.append(i)
            else:
                seq.on_done(None)
        group.next_ids = tokens
        return _select(group, keep)

    def _keep(self, key, keep: list[int]) -> None:
        group = _select(self._groups[key], keep)
        if group is None:
            del self._groups[key]
        else:
            self._groups[key] = group


def _run_job(job: _Job) -> None:
    try:
        job.future.set_result(job.fn(*job.args))
    except BaseException as exc:  # noqa: BLE001 - the caller re-raises it
        job.future.set_exception(exc)


def _end(seq: Sequence, now: float) -> None:
    if seq.cancelled():
        seq.on_done(None)
    else:
        seq.on_done(RequestTimeout("the request ran past the server's time limit"))


def _generator(params: GenerationParams, device) -> torch.Generator | None:
    if params.temperature == 0:
        return None
    seed = params.seed if params.seed is not None else random.randrange(2**63)
    return torch.Generator(device=device).manual_seed(seed)


# -- sampling ---------------------------------------------------------------------------------
def sample(logits: torch.Tensor, rows: list[Sequence]) -> torch.Tensor:
    """The next token of every row: [rows, vocab] float logits -> [rows] ids. Greedy rows take the
    argmax of the batch; the sampling rows are filtered together (temperature, top-k, top-p as
    tensors of their settings), then each draws with its own seeded generator."""
    logits = logits.float()
    out = logits.argmax(-1)
    special = [i for i, seq in enumerate(rows) if seq.params.repetition_penalty != 1.0 or seq.params.temperature > 0]
    if not special:
        return out
    chosen = logits[torch.tensor(special, device=logits.device)]
    for k, i in enumerate(special):
        chosen[k] = _penalized(chosen[k], rows[i].prompt + rows[i].answer, rows[i].params.repetition_penalty)
    drawn = [k for k, i in enumerate(special) if rows[i].params.temperature > 0]
    for k, i in enumerate(special):
        if rows[i].params.temperature == 0:
            out[i] = chosen[k].argmax()
    if drawn:
        probs = _probabilities(chosen[torch.tensor(drawn, device=logits.device)],
                               [rows[special[k]].params for k in drawn])
        for row_probs, k in zip(probs, drawn):
            out[special[k]] = torch.multinomial(row_probs, 1, generator=rows[special[k]].generator)[0]
    return out


def _penalized(row: torch.Tensor, seen_ids: list[int], penalty: float) -> torch.Tensor:
    """As transformers' RepetitionPenaltyLogitsProcessor: seen tokens' logits pushed towards 'less likely'."""
    if penalty == 1.0:
        return row
    seen = torch.tensor(seen_ids, device=row.device)
    row = row.clone()
    scores = row[seen]
    row[seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
    return row


def _probabilities(logits: torch.Tensor, params: list[GenerationParams]) -> torch.Tensor:
    """[rows, vocab] logits -> probabilities after each row's temperature, top-k and top-p."""
    column = lambda values: torch.tensor(values, dtype=logits.dtype, device=logits.device)[:, None]  # noqa: E731
    logits = logits / column([p.temperature for p in params])
    if any(p.top_k for p in params):
        vocab = logits.shape[-1]
        k = torch.tensor([min(p.top_k or vocab, vocab) for p in params], device=logits.device)
        kth = logits.sort(-1, descending=True).values.gather(1, (k - 1)[:, None])
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if any(p.top_p < 1.0 for p in params):
        ordered, order = logits.sort(-1, descending=True)
        probs = ordered.softmax(-1)
        top_p = column([p.top_p if p.top_p < 1.0 else 2.0 for p in params])  # 2: the row keeps every token
        drop = probs.cumsum(-1) - probs >= top_p  # tokens after the nucleus is full (the first always stays)
        logits = logits.scatter(1, order, ordered.masked_fill(drop, float("-inf")))
    return logits.softmax(-1)


# -- cache surgery --------------------------------------------------------------------------
def _layers(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        raise TunekitError("batched serving needs a model whose cache is transformers' plain DynamicCache "
                           "(no sliding-window or linear-attention layers)")
    return layers


def _select(group: Group, keep: list[int]) -> Group | None:
    """The group with only the rows at `keep`, and without columns that are padding in every row."""
    if not keep:
        return None
    if len(keep) == len(group.rows):  # no row left: no column became all padding
        return group
    index = torch.tensor(keep, device=group.mask.device)
    group = Group([group.rows[i] for i in keep], group.cache, group.mask[index], group.next_ids[index],
                  group.next_pos[index])
    for layer in _layers(group.cache):
        layer.keys, layer.values = layer.keys[index], layer.values[index]
    first = int(group.mask.any(0).int().argmax())
    if first:
        group.mask = group.mask[:, first:]
        for layer in _layers(group.cache):
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
    return group


def _merge(a: Group, b: Group) -> Group:
    """One group from two: the narrower one's cache and mask padded on the left, rows stacked."""
    width = max(a.mask.shape[1], b.mask.shape[1])
    for layer_a, layer_b in zip(_layers(a.cache), _layers(b.cache)):
        layer_a.keys = torch.cat([_pad_left(layer_a.keys, width, 2), _pad_left(layer_b.keys, width, 2)])
        layer_a.values = torch.cat([_pad_left(layer_a.values, width, 2), _pad_left(layer_b.values, width, 2)])
    mask = torch.cat([_pad_left(a.mask, width, 1), _pad_left(b.mask, width, 1)])
    return Group(a.rows + b.rows, a.cache, mask, torch.cat([a.next_ids, b.next_ids]),
                 torch.cat([a.next_pos, b.next_pos]))


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if not missing:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
