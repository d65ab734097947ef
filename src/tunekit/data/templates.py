"""Chat templates: render a Conversation into token ids and the loss mask, in one place.

The template is Jinja, as in `tokenizer.chat_template`: the tokenizer's own by default, a
built-in (assets/templates/NAME.jinja) for models whose tokenizer lacks one, or a file.

`ChatTemplate.encode` renders the conversation with the template, then finds each
assistant turn by rendering the conversation up to that turn with the generation prompt:
the text after that prefix is the answer. Labels cover every assistant answer plus the
template's end-of-turn text; everything else is -100.

The end-of-turn text is read off the template, once: the text that closes a conversation
ending on an answer, up to the first special token (e.g. `<|im_end|>`, `<|eot_id|>`) — read
there, not before the next question, because a default system block (Qwen2.5, Llama 3.1+)
puts the same token in front of every first question; else the text before the next
question when its special token is not part of the user header; otherwise the tokenizer's
eos token (alpaca, chatglm, baichuan). A base tokenizer's eos never replaces it. Where the template leaves it out (many inference templates do not close the
last turn, and eos-style templates never write eos), it is inserted, so the model learns to
stop; the engine renders prompts with the same function, so history looks the same at
inference as in training. Its token ids are the engine's stop tokens.

A template that rewrites earlier turns (deepseek_r1 strips `<think>` from history) cannot
be masked from prefixes; such conversations are refused with a message saying why.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from transformers.utils.chat_template_utils import render_jinja_template

from tunekit.data.records import Conversation
from tunekit.errors import ConfigError, TunekitError

IGNORE_INDEX = -100
_SENTINEL = "\u2063answer\u2063"  # an invisible separator no real answer contains

# Special tokens the built-in templates need; added to a tokenizer that lacks them.
BUILTIN_SPECIAL_TOKENS = {
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "llama3": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "chatglm3": ["[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"],
    "baichuan2": ["<reserved_106>", "<reserved_107>"],
    "chatglm2": [],
    "alpaca": [],
    "plain": [],
}


class TemplateError(TunekitError):
    """A conversation the template cannot render or mask correctly."""


def builtin_names() -> list[str]:
    return sorted(BUILTIN_SPECIAL_TOKENS)


def builtin_source(name: str) -> str:
    return resources.files("tunekit.assets").joinpath(f"templates/{name}.jinja").read_text(encoding="utf-8")


def resolve_template_source(choice: str | None, tokenizer) -> tuple[str, str]:
    """(name, jinja source) for model.template: None -> the tokenizer's own, a built-in, or a file."""
    if choice is None:
        source = getattr(tokenizer, "chat_template", None)
        if not source:
            raise ConfigError("the tokenizer has no chat template: set model.template to a built-in "
                              f"({', '.join(builtin_names())}) or to a .jinja file; use 'plain' for a base model")
        if isinstance(source, dict):
            source = source.get("default") or next(iter(source.values()))
        return "tokenizer", source
    if choice in BUILTIN_SPECIAL_TOKENS:
        return choice, builtin_source(choice)
    path = Path(choice)
    if path.suffix == ".jinja" or path.exists():
        if not path.is_file():
            raise ConfigError(f"model.template file {choice} not found: give a .jinja file or a built-in name")
        return path.stem, path.read_text(encoding="utf-8")
    raise ConfigError(f"model.template '{choice}' is neither a built-in ({', '.join(builtin_names())}) "
                      "nor a .jinja file")


def add_missing_special_tokens(tokenizer, name: str) -> list[str]:
    """Give the tokenizer the special tokens a built-in template writes; returns those added."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in BUILTIN_SPECIAL_TOKENS.get(name, []) if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    return missing


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


class ChatTemplate:
    """A Jinja chat template bound to a tokenizer, with its end-of-turn text."""

    def __init__(self, tokenizer, source: str, name: str = "custom", eot_text: str | None = None):
        self.tokenizer = tokenizer
        self.source = source
        self.name = name
        self._special = _special_tokens(tokenizer)
        self.eot_text = eot_text if eot_text is not None else self._find_eot_text()

    # -- rendering -------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = False, tools=None) -> str:
        """The template's own text, exactly what apply_chat_template(tokenize=False) gives."""
        kwargs = {k: v for k, v in self.tokenizer.special_tokens_map.items() if isinstance(v, str)}
        texts, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=self.source,
                                         add_generation_prompt=add_generation_prompt, **kwargs)
        return texts[0]

    def build_text(self, messages: list[dict], tools=None, source: str = "") -> tuple[str, list[tuple[int, int]]]:
        """Rendered text with the end-of-turn inserted where missing, and each answer's char span.

        A span runs from the first character of the answer to the end of its end-of-turn text.
        """
        full = self.render(messages, tools=tools)
        out, spans, cursor = [], [], 0
        length = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start, end = self._locate_answer(messages, i, full, tools, source)
            piece = full[cursor:end]
            out.append(piece)
            span_start = length + (start - cursor)
            length += len(piece)
            if full.startswith(self.eot_text, end):
                out.append(self.eot_text)
                cursor = end + len(self.eot_text)
            else:
                out.append(self.eot_text)  # the template left it out: the model must still learn to stop
                cursor = end
            length += len(self.eot_text)
            spans.append((span_start, length))
        out.append(full[cursor:])
        return "".join(out), spans

    def _locate_answer(self, messages, i, full, tools, source) -> tuple[int, int]:
        """Char span of answer i in `full`: after the history and the assistant header."""
        history = self.render(messages[:i], tools=tools) if i else ""
        probe = self.render(messages[:i] + [{"role": "assistant", "content": _SENTINEL}], tools=tools)
        header = probe[len(history): probe.index(_SENTINEL)] if probe.startswith(history) else None
        start = len(history) + len(header or "")
        content = message_text(messages[i])

        def written_at(text: str) -> int | None:
            if header is None or not text.startswith(history) or not text.startswith(header, len(history)):
                return None
            return next((len(c) for c in (content, content.strip()) if text.startswith(c, start)), None)

        length = written_at(full)
        if length is not None:
            return start, start + length
        where = f"{source}: " if source else ""
        if written_at(self.render(messages[: i + 1], tools=tools)) is not None:
            raise TemplateError(f"{where}template '{self.name}' rewrites history: answer {_ordinal(messages, i)} "
                                "is rendered differently once later turns follow (e.g. <think> is stripped from "
                                "earlier answers), so the loss mask cannot be taken from the rendered text; "
                                "remove such content from earlier answers, split the conversation into one "
                                "sample per answer, or choose another template")
        raise TemplateError(f"{where}template '{self.name}' does not write answer {_ordinal(messages, i)} verbatim "
                            "after its assistant header (it drops or changes part of it), so it cannot be "
                            "masked; check the answer text or choose another template")

    def prompt(self, messages: list[dict], tools=None) -> tuple[str, list[int]]:
        """Text and ids to generate the next answer from: the training render, cut before the
        first token that training would label, so the prompt ends where training's prompt did."""
        probe = messages + [{"role": "assistant", "content": _SENTINEL}]
        text, spans = self.build_text(probe, tools=tools)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        cut = next(t for t, (_, end) in enumerate(enc["offset_mapping"]) if end > spans[-1][0])
        return text[: enc["offset_mapping"][cut][0]], enc["input_ids"][:cut]

    # -- tokens ----------------------------------------------------------------------------
    def encode(self, conv: Conversation, train_on_prompt: bool = False, mask_history: bool = False) -> Encoded:
        return self.encode_many([conv], train_on_prompt, mask_history)[0]

    def encode_many(self, convs: list[Conversation], train_on_prompt: bool = False,
                    mask_history: bool = False) -> list[Encoded]:
        """Batched: one fast-tokenizer call for all texts, labels from character offsets."""
        built = []
        for conv in convs:
            messages = conv.messages
            if mask_history:
                last = conv.assistant_turns()[-1]
                messages = messages[: last + 1]
            text, spans = self.build_text(messages, tools=conv.tools, source=conv.source)
            built.append((text, spans[-1:] if mask_history else spans))
        enc = self.tokenizer([t for t, _ in built], add_special_tokens=False, return_offsets_mapping=True,
                             return_attention_mask=False, return_token_type_ids=False)
        results = []
        for (text, spans), ids, offsets in zip(built, enc["input_ids"], enc["offset_mapping"]):
            labels = list(ids) if train_on_prompt else _labels_from_spans(ids, offsets, spans)
            results.append(Encoded(list(ids), labels))
        return results

    def encode_prompt(self, messages: list[dict], tools=None) -> list[int]:
        """Ids of a prompt for generation, rendered as in training (history closed by end-of-turn)."""
        return self.prompt(messages, tools)[1]

    @property
    def stop_token_ids(self) -> list[int]:
        """The special token(s) closing an assistant turn: generation stops on any of them."""
        ids = self.tokenizer(self.eot_text, add_special_tokens=False)["input_ids"]
        special_ids = [i for i in ids if self.tokenizer.convert_ids_to_tokens(i) in self._special]
        return special_ids or ids[-1:]

    # -- end of turn -----------------------------------------------------------------------
    def _find_eot_text(self) -> str:
        """The text closing an answer: up to the first special token after it, read first from a
        conversation that ends on the answer (what the template writes to close a turn), else from
        one where a question follows, when that token does not open the question (GLM's role tags)."""
        q1, a1, q2 = "\u2063q1\u2063", "\u2063a1\u2063", "\u2063q2\u2063"
        one_turn = [{"role": "user", "content": q1}, {"role": "assistant", "content": a1}]
        closed = self.render(one_turn)
        closing = closed[closed.index(a1) + len(a1):]
        first = _first_special(closing, self._special)
        if first is not None:
            return closing[: first[1]]
        text = self.render(one_turn + [{"role": "user", "content": q2}])
        after = text[text.index(a1) + len(a1):]
        user_alone = self.render([{"role": "user", "content": q2}])
        user_header = user_alone[: user_alone.index(q2)]
        first = _first_special(after, self._special)
        if first is not None and after[first[0]: first[1]] not in user_header:
            return after[: first[1]]
        eos = self.tokenizer.eos_token
        if not eos:
            raise ConfigError(f"template '{self.name}' has no end-of-turn token and the tokenizer has no "
                              "eos_token: set one in the tokenizer or choose a template that closes turns")
        return eos

    def describe(self) -> dict:
        return {"name": self.name, "eot_text": self.eot_text, "stop_token_ids": self.stop_token_ids}


def _ordinal(messages: list[dict], i: int) -> int:
    return sum(m["role"] == "assistant" for m in messages[: i + 1])


def message_text(message: dict) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _special_tokens(tokenizer) -> set[str]:
    special = set(tokenizer.all_special_tokens)
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(token, "special", False):
            special.add(str(token))
    return {s for s in special if s}


def _first_special(text: str, special: set[str]) -> tuple[int, int] | None:
    best = None
    for token in special:
        pos = text.find(token)
        if pos >= 0 and (best is None or pos < best[0] or pos == best[0] and pos + len(token) > best[1]):
            best = (pos, pos + len(token))
    return best


def _labels_from_spans(ids, offsets, spans) -> list[int]:
    """A token is trained when it overlaps an answer span (a token may join header and answer).

    Vectorised: the span a token is compared with is the first one ending after the start of
    that token or of any token before it (offsets can step back inside a multi-byte character).
    """
    if not spans or not ids:
        return [IGNORE_INDEX] * len(ids)
    offsets = np.fromiter(itertools.chain.from_iterable(offsets), np.int64, 2 * len(offsets)).reshape(-1, 2)
    span_starts, span_ends = np.asarray(spans, dtype=np.int64).T
    k = np.searchsorted(span_ends, np.maximum.accumulate(offsets[:, 0]), side="right")
    inside = k < len(spans)
    trained = np.zeros(len(ids), dtype=bool)
    trained[inside] = offsets[inside, 1] > span_starts[k[inside]]
    return np.where(trained, np.asarray(ids), IGNORE_INDEX).tolist()


def load_template(tokenizer, choice: str | None) -> ChatTemplate:
    """The template for model.template, adding built-in special tokens the tokenizer lacks."""
    name, source = resolve_template_source(choice, tokenizer)
    if choice in BUILTIN_SPECIAL_TOKENS:
        add_missing_special_tokens(tokenizer, name)
    return ChatTemplate(tokenizer, source, name)
