"""Chat templates: render a Conversation into token ids and the loss mask, in one place.

The template is Jinja, as in `tokenizer.chat_template`: the tokenizer's own by default, a
built-in (assets/templates/NAME.jinja, `tunekit templates` lists them) for models whose tokenizer
lacks one, or a file. The built-ins for current families (qwen2.5, qwen3, llama3.1, glm4,
deepseek_r1, deepseek_v3, mistral_small3, gemma) render as the models' own templates do
(tests/unit/test_builtin_templates.py); those that print a date take it from the `date_string`
option, never the clock, so a training text is the same every day.
Messages go to it as `apply_chat_template` gives them: structured `tool_calls`,
`reasoning_content`, tool results, `tools` definitions, and template switches such as
`enable_thinking` (`options`).

Each assistant turn is trained under exactly the prompt the model sees at inference for
that turn: the conversation before it rendered with the generation prompt. `encode_samples`
renders the whole conversation and trains every turn whose prompt is a prefix of that
render; the text after the prompt, up to the end of the turn, is the answer. A turn the
template writes differently once later turns follow (Qwen3 and DeepSeek-R1 strip reasoning
from earlier turns; Qwen3 writes an empty <think> block only in the last turn) gets a sample
of its own, the conversation up to that turn, so it is never trained under a history the
model will not see. That costs tokens (each such sample repeats its history); `data check`
reports the samples. Labels cover every answer plus the template's end-of-turn text;
everything else is -100.

A template without a tool-call branch gets the calls as text in the family's format
(infer/parsers.py; `<tool_call>` JSON by default). A template that drops reasoning from the
answer it trains (DeepSeek-R1 strips `<think>` even from the last turn) gets it written
back as `<think>\n...\n</think>\n\n` at the start of the answer, so the model learns to think.

The end-of-turn text is read off the template, once: the text that closes a conversation
ending on an answer, up to the first special token (e.g. `<|im_end|>`, `<|eot_id|>`) — read
there, not before the next question, because a default system block (Qwen2.5, Llama 3.1+)
puts the same token in front of every first question; else the text before the next
question when its special token is not part of the user header; otherwise the tokenizer's
eos token (alpaca, chatglm, baichuan). A base tokenizer's eos never replaces it. Where the
template leaves it out (many inference templates do not close the last turn, and eos-style
templates never write eos), it is inserted, so the model learns to stop; the engine renders
prompts with the same function, so history looks the same at inference as in training. Its
token ids are the engine's stop tokens.

A template that closes no turn and opens every question and tool result with a special token
(GLM-4's and ChatGLM3's `<|user|>`, `<|observation|>`) ends an answer with the next role tag:
the model emits it, and GLM's generation config stops on it. Nothing is inserted there: after
each answer the one tag that follows it in the render is trained (not the rest of that header),
and where a sample ends on an answer the tag the model must emit is appended — the tool tag
after calls (GLM stops a call with <|observation|>), the user tag otherwise. So ids are
apply_chat_template's but for that appended tag, and a prompt is exactly its generation
prompt; the stop tokens are those tags and eos. Baichuan looks alike but writes no tool turn,
and its models stop on eos: it stays an eos template. A run trained when eos was inserted
recorded eos as its end of turn, and keeps it.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
from transformers.utils.chat_template_utils import render_jinja_template

from tunekit.data.records import Conversation, normalize_message, normalize_tools
from tunekit.data.tokens import TokenStarts, encodings, ids_and_offsets, token_ids
from tunekit.errors import ConfigError, TunekitError
from tunekit.infer.parsers import family_for

IGNORE_INDEX = -100
_SENTINEL = "\u2063answer\u2063"  # an invisible separator no real answer contains
THINK_BLOCK = "<think>\n{}\n</think>\n\n"  # reasoning written back where a template drops it

# Tokens the built-in templates write, as real vocabularies hold them: added (as special tokens) to a
# tokenizer that lacks them. Templates that write bos_token / eos_token use the tokenizer's own.
CHATML = ["<|im_start|>", "<|im_end|>"]
DEEPSEEK_TOOLS = ["<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
                  "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>",
                  "<｜tool▁output▁end｜>"]
DEEPSEEK = ["<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", *DEEPSEEK_TOOLS]
THINK = ["<think>", "</think>"]
BUILTIN_SPECIAL_TOKENS = {
    "chatml": CHATML,
    "qwen2.5": [*CHATML, "<tool_call>", "</tool_call>"],
    "qwen3": [*CHATML, "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", *THINK],
    "llama3": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "llama3.1": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "glm4": ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", *THINK, "<tool_call>",
             "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "<tool_response>",
             "</tool_response>"],
    "deepseek_r1": [*DEEPSEEK, *THINK],
    "deepseek_v3": DEEPSEEK,
    "mistral_small3": ["[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]",
                       "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"],
    "gemma": ["<start_of_turn>", "<end_of_turn>"],
    "chatglm3": ["[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"],
    "baichuan2": ["<reserved_106>", "<reserved_107>"],
    "chatglm2": [],
    "alpaca": [],
    "plain": [],
}


_PROBE_TOOL = {"type": "function", "function": {"name": "probe", "description": "a probe",
                                                "parameters": {"type": "object", "properties": {}}}}
_HISTORY_PROBES = (  # conversations ending on a question: every answer is history (closes_history)
    ([{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
      {"role": "user", "content": "q2"},
      {"role": "assistant", "content": "", "tool_calls": [
          {"type": "function", "id": "call00001", "function": {"name": "probe", "arguments": {}}}]},
      {"role": "tool", "content": "r2", "tool_call_id": "call00001"},
      {"role": "assistant", "content": "a2", "reasoning_content": "t2"},
      {"role": "user", "content": "q3"}], [_PROBE_TOOL]),
    ([{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
      {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
      {"role": "user", "content": "q3"}], None),
)


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


@dataclass
class Sample:
    """One text to train on: its trained char spans, and where tokenization must break."""

    text: str
    spans: list[tuple[int, int]]
    cuts: list[int] = field(default_factory=list)


@dataclass
class _Answer:
    """Where one answer sits in a rendered text: [start, end) plus text the template leaves out."""

    start: int
    end: int  # end of the answer; the end-of-turn text follows (or is inserted)
    eot: str  # the end-of-turn text as this turn writes it
    reasoning: str = ""  # a <think> block to write at start (the template dropped the reasoning)
    skip: int = 0  # leading characters of `reasoning` the prompt already holds (an opened <think>)
    trained: bool = True  # False: only closed by end-of-turn (history under mask_history)


class ChatTemplate:
    """A Jinja chat template bound to a tokenizer, with its end-of-turn text and tool-call family."""

    def __init__(self, tokenizer, source: str, name: str = "custom", eot_text: str | None = None,
                 options: dict | None = None):
        self.tokenizer = tokenizer
        self.source = source
        self.name = name
        self.options = dict(options or {})  # template switches for every render, e.g. enable_thinking
        self._special = _special_tokens(tokenizer)
        # role -> the tag that opens a user / tool turn, for a template whose turns end at the next tag
        self.turn_tags = self._find_turn_tags()
        self.eot_text = eot_text if eot_text is not None else self._find_eot_text()
        if self.eot_text not in self.turn_tags.values():
            self.turn_tags = {}  # a run's recorded end of turn that is no role tag: trained inserted, kept so
        self.family = family_for(source)
        self.call_arguments = self._tool_call_style()
        self.native_tool_calls = self.call_arguments is not None
        self._closes_history: dict[str, bool] = {}  # per set of options, see closes_history

    # -- rendering -------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = False, tools=None,
               options: dict | None = None) -> str:
        """The template's own text, exactly what apply_chat_template(tokenize=False) gives."""
        kwargs = {**self._special_token_kwargs, **self.options, **(options or {})}
        try:
            texts, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=self.source,
                                             add_generation_prompt=add_generation_prompt, **kwargs)
        except jinja2.TemplateError as exc:  # the template's own raise_exception, or a missing field
            raise TemplateError(f"template '{self.name}' refused this conversation: {exc}") from None
        return texts[0]

    @functools.cached_property
    def _special_token_kwargs(self) -> dict[str, str]:
        """bos_token, eos_token, ... as apply_chat_template passes them (read once: transformers
        rebuilds the map on each access)."""
        return {k: v for k, v in self.tokenizer.special_tokens_map.items() if isinstance(v, str)}

    def prepare(self, messages: list[dict]) -> list[dict]:
        """Messages as the template gets them: reasoning split off; tool calls as text in the
        family's format when the template has no tool-call branch of its own."""
        out = [normalize_message(m) for m in messages]
        _give_call_ids(out)
        for m in (m for m in out if m.get("tool_calls")):
            if self.call_arguments == "string":
                m["tool_calls"] = [_string_arguments(c) for c in m["tool_calls"]]
            elif not self.native_tool_calls:
                m["content"] = (m.get("content") or "") + self.family.calls_text(m["tool_calls"], m.get("content"))
        return out

    def build_samples(self, messages: list[dict], tools=None, source: str = "", last_only: bool = False,
                      options: dict | None = None) -> list[Sample]:
        """The texts to train on, each with the char spans of its trained answers (+ end-of-turn).

        One text (the whole conversation) when the template renders every turn there as it
        would at inference; else one more text per turn it rewrites, ending at that turn.
        """
        messages, tools = self.prepare(messages), normalize_tools(tools)
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        trained = set(turns[-1:] if last_only else turns)
        full = self.render(messages, tools=tools, options=options)
        # an untrained earlier turn is placed only to insert an end-of-turn the template leaves out
        needed = trained if last_only and self.closes_history(options) else turns
        placed = {i: self._place(messages, i, full, tools, options) if i in needed else None for i in turns}
        samples = []
        for i in sorted(i for i in trained if placed[i] is None):
            text = self.render(messages[: i + 1], tools=tools, options=options)
            answer = self._place(messages[: i + 1], i, text, tools, options)
            if answer is None:
                raise self._unwritten(messages, i, source)
            samples.append(self._assemble(text, [answer]))
        in_full = [replace(placed[i], trained=i in trained) for i in turns if placed[i] is not None]
        if any(a.trained for a in in_full):
            samples.append(self._assemble(full, in_full))
        return samples

    def closes_history(self, options: dict | None = None) -> bool:
        """True when the template closes every earlier answer itself, as training writes it (no
        end-of-turn to insert), so a prompt needs only its last turn placed: building it is then
        linear in the conversation's length, not quadratic. Probed once per set of options on a
        conversation with a plain answer, a tool call and a reasoning answer (or, where the template
        refuses tools, plain answers only)."""
        key = json.dumps(options or {}, sort_keys=True)
        if key not in self._closes_history:
            verdicts = (self._probe_closes_history(probe, options) for probe in _HISTORY_PROBES)
            self._closes_history[key] = next((v for v in verdicts if v is not None), False)
        return self._closes_history[key]

    def _probe_closes_history(self, probe: tuple[list[dict], list | None], options) -> bool | None:
        """Whether no earlier answer of the probe needs an end-of-turn inserted; None: template refused it."""
        messages, tools = self.prepare(probe[0]), normalize_tools(probe[1])
        try:
            full = self.render(messages, tools=tools, options=options)
            answers = [self._place(messages, i, full, tools, options)
                       for i, m in enumerate(messages) if m["role"] == "assistant"]
        except TemplateError:
            return None
        return all(a is None or full.startswith(a.eot, a.end) for a in answers)

    def build_text(self, messages: list[dict], tools=None, source: str = "",
                   options: dict | None = None) -> Sample:
        """The one text a conversation trains as (see build_samples); TemplateError when it needs several."""
        samples = self.build_samples(messages, tools, source, options=options)
        if len(samples) > 1:
            where = f"{source}: " if source else ""
            raise TemplateError(f"{where}template '{self.name}' renders earlier turns differently once later "
                                f"turns follow: this conversation trains as {len(samples)} samples (encode_samples)")
        return samples[0]

    def _place(self, messages, i, text, tools, options) -> _Answer | None:
        """Answer i in `text` (a render of `messages`): after the prompt the model sees for it.

        None when `text` does not start with that prompt and the turn as the template writes it
        once it is the last, i.e. the template rewrites the turn when later turns follow.
        """
        last = i == len(messages) - 1
        turn = text if last else self.render(messages[: i + 1], tools=tools, options=options)
        found = self._prompt_in(turn, messages[:i], tools, options)
        if found is None or not text.startswith(turn):
            return None
        prompt, opened = found
        written = turn[len(prompt):]
        message = messages[i]
        # a template may write it without its leading space (mistral's tool calls); one whose turns end
        # at the next role tag writes nothing: the answer ends where the template stops writing it
        eot = "" if self.turn_tags else next(
            (e for e in dict.fromkeys([self.eot_text, self.eot_text.strip()]) if e and e in written), self.eot_text)
        cut = written.find(eot) if eot.strip() else -1
        end = len(prompt) + (cut if cut >= 0 else _answer_length(written, message_text(message)))
        if self.turn_tags:
            eot = self._next_tag(message, text, end, last)
        reasoning = (message.get("reasoning_content") or "").strip("\n")
        shown = written[: end - len(prompt)]
        names = [c["function"]["name"] for c in message.get("tool_calls") or []]
        if message_text(message).strip() not in shown or not all(n in shown for n in names):
            return None
        if opened or (reasoning and reasoning.strip() not in shown):
            if not last:
                return None  # written back only where no later turn sees it
            return _Answer(len(prompt), end, eot, THINK_BLOCK.format(reasoning), len(opened))
        return _Answer(len(prompt), end, eot)

    def _prompt_in(self, turn, history, tools, options) -> tuple[str, str] | None:
        """(prompt, opened) for an answer after `history` in `turn`: the generation prompt when the
        turn starts with it; else the history's own assistant header (a template whose generation
        prompt differs from how it writes history, e.g. alpaca.jinja; the engine prompts the same),
        and `opened`, what the generation prompt adds to it when that opens the reasoning block
        the template never writes back (deepseek_r1_distill_qwen: `<think>\n`)."""
        gen = self.render(history, add_generation_prompt=True, tools=tools, options=options)
        if turn.startswith(gen):
            return gen, ""
        probe = self.render(history + [{"role": "assistant", "content": _SENTINEL}], tools=tools, options=options)
        header = probe[: probe.index(_SENTINEL)] if _SENTINEL in probe else None
        if header is None or not turn.startswith(header):
            return None
        opened = gen[len(header):] if gen.startswith(header) else ""
        return header, opened if opened and THINK_BLOCK.format("").startswith(opened) else ""

    def _assemble(self, full: str, answers: list[_Answer]) -> Sample:
        """`full` with reasoning written back and end-of-turn inserted where missing; answer spans."""
        out, spans, cuts, cursor, length = [], [], [], 0, 0
        for answer in answers:
            pieces = [full[cursor: answer.start], answer.reasoning, full[answer.start: answer.end], answer.eot]
            out += pieces
            span_start = length + len(pieces[0]) + answer.skip
            length += sum(map(len, pieces))
            if answer.trained:
                spans.append((span_start, length))
            if answer.skip:  # the prompt ends inside the written-back text: tokenized apart, as at inference
                cuts.append(span_start)
            cursor = answer.end + (len(answer.eot) if full.startswith(answer.eot, answer.end) else 0)
        out.append(full[cursor:])
        return Sample("".join(out), spans, cuts)

    def _tokenize(self, samples: list[Sample]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """(ids, char offsets) of each text: one batched call; texts with cuts piece by piece."""
        out = ids_and_offsets(self.tokenizer, [s.text for s in samples])
        for k, sample in enumerate(samples):
            if sample.cuts:
                bounds = [0, *sample.cuts, len(sample.text)]
                pieces = ids_and_offsets(self.tokenizer, [sample.text[a:b] for a, b in zip(bounds, bounds[1:])])
                out[k] = ([i for ids, _ in pieces for i in ids],
                          [(a + x, a + y) for a, (_, offs) in zip(bounds, pieces) for x, y in offs])
        return out

    def _unwritten(self, messages, i, source) -> TemplateError:
        where = f"{source}: " if source else ""
        return TemplateError(f"{where}template '{self.name}' does not write answer {_ordinal(messages, i)} "
                             "after the prompt it renders for that turn (it drops or changes part of it), so it "
                             "cannot be masked; check the answer text or choose another template")

    def _tool_call_style(self) -> str | None:
        """How the template's own tool-call branch takes arguments: "dict", "string" (a JSON string,
        as the OpenAI wire format has them; deepseek_r1_distill_qwen), or None (no branch)."""
        name = "tunekit_probe_function"
        for style, arguments in (("dict", {"x": 1}), ("string", '{"x": 1}')):
            call = {"type": "function", "id": "call00000", "function": {"name": name, "arguments": arguments}}
            try:
                text = self.render([{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "", "tool_calls": [call]}])
            except Exception:  # jinja errors, or a template that cannot take this argument type
                continue
            return style if name in text else None
        return None

    def prompt(self, messages: list[dict], tools=None, options: dict | None = None) -> tuple[str, list[int]]:
        """Text and ids to generate the next answer from: the training render, cut before the
        first token that training would label, so the prompt ends where training's prompt did."""
        probe = messages + [{"role": "assistant", "content": _SENTINEL}]
        sample = self.build_samples(probe, tools=tools, last_only=True, options=options)[-1]
        ids, offsets = self._tokenize([sample])[0]
        cut = next(t for t, (_, end) in enumerate(offsets) if end > sample.spans[-1][0])
        return sample.text[: offsets[cut][0]], ids[:cut]

    def answer_lead(self, messages: list[dict], tools=None, options: dict | None = None) -> str:
        """What training puts between the prompt and an answer's own text (Qwen3's empty
        `<think>` block), so that an answer started for the model (a forced call) starts there."""
        probe = messages + [{"role": "assistant", "content": _SENTINEL}]
        sample = self.build_samples(probe, tools=tools, last_only=True, options=options)[-1]
        return sample.text[sample.spans[-1][0]: sample.text.index(_SENTINEL)]

    # -- tokens ----------------------------------------------------------------------------
    def encode(self, conv: Conversation, train_on_prompt: bool = False, mask_history: bool = False) -> Encoded:
        """The one sample of a conversation; TemplateError when the template needs one per turn."""
        samples = self.encode_samples(conv, train_on_prompt, mask_history)
        if len(samples) > 1:
            self.build_text(conv.messages, conv.tools, conv.source)  # raises, naming the conversation
        return samples[0]

    def encode_samples(self, conv: Conversation, train_on_prompt: bool = False,
                       mask_history: bool = False) -> list[Encoded]:
        return self.encode_many([conv], train_on_prompt, mask_history)[0]

    def encode_many(self, convs: list[Conversation], train_on_prompt: bool = False,
                    mask_history: bool = False) -> list[list[Encoded]]:
        """Batched: one fast-tokenizer call for all texts, labels from character offsets.
        Each conversation gives its samples (one, or one more per turn the template rewrites)."""
        built = [self.build_samples(c.messages, c.tools, c.source, last_only=mask_history) for c in convs]
        flat = [sample for samples in built for sample in samples]
        encoded = iter(self._encode(flat, train_on_prompt))
        return [[next(encoded) for _ in samples] for samples in built]

    def _encode(self, samples: list[Sample], train_on_prompt: bool) -> list[Encoded]:
        """Ids and labels of each sample, in batched tokenizer calls. The usual case tokenizes without
        offsets and finds the token at each edge of an answer span from the template's special
        tokens (TokenStarts); a sample where that cannot be vouched for gets its labels from the
        Rust encoding's offsets (char_to_token at span edges, else every token's offsets). Samples
        with cuts are tokenized piece by piece."""
        if train_on_prompt:
            return [Encoded(list(ids), list(ids)) for ids, _ in self._tokenize(samples)]
        done = {}
        whole = [s for s in samples if not s.cuts]
        fast = [s for s in whole if self._token_starts.applies_to(s.text)]
        for sample, ids in zip(fast, token_ids(self.tokenizer, [s.text for s in fast]) if fast else []):
            labels = self._labels_at_token_starts(sample, ids)
            if labels is not None:
                done[id(sample)] = Encoded(ids, labels)
        whole = [s for s in whole if id(s) not in done]
        for sample, encoding in zip(whole, encodings(self.tokenizer, [s.text for s in whole]) or []):
            labels = _span_labels(encoding, sample.spans)
            if labels is None:
                labels = _labels_from_spans(encoding.ids, encoding.offsets, sample.spans)
            done[id(sample)] = Encoded(encoding.ids, labels)
        rest = [s for s in samples if id(s) not in done]
        for s, (ids, offsets) in zip(rest, self._tokenize(rest) if rest else []):
            done[id(s)] = Encoded(list(ids), _labels_from_spans(ids, offsets, s.spans))
        return [done[id(s)] for s in samples]

    @functools.cached_property
    def _token_starts(self) -> TokenStarts:
        """Token edges from the added tokens this template writes (and bos / eos it is given)."""
        return TokenStarts(self.tokenizer, "\n".join([self.source, *self._special_token_kwargs.values()]))

    def _labels_at_token_starts(self, sample: Sample, ids: list[int]) -> list[int] | None:
        """Each answer span's tokens trained, the rest IGNORE_INDEX; None where an edge is not a token start
        (only for a text the TokenStarts applies to)."""
        starts = self._token_starts
        labels = [IGNORE_INDEX] * len(ids)
        for start, end in sample.spans:
            first, stop = starts.index(sample.text, ids, start), starts.index(sample.text, ids, end)
            if first is None or stop is None:
                return None
            labels[first:stop] = ids[first:stop]
        return labels

    def encode_prompt(self, messages: list[dict], tools=None, options: dict | None = None) -> list[int]:
        """Ids of a prompt for generation, rendered as in training (history closed by end-of-turn)."""
        return self.prompt(messages, tools, options)[1]

    @property
    def stop_token_ids(self) -> list[int]:
        """The special token(s) closing an assistant turn: generation stops on any of them. For a
        template whose turns end at the next role tag: those tags (user, tool) and eos."""
        out = []
        for text in dict.fromkeys([self.eot_text, *self.turn_tags.values()]):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out += [i for i in ids if self.tokenizer.convert_ids_to_tokens(i) in self._special] or ids[-1:]
        if self.turn_tags and self.tokenizer.eos_token_id is not None:
            out.append(self.tokenizer.eos_token_id)
        return list(dict.fromkeys(out))

    def _next_tag(self, message: dict, text: str, end: int, last: bool) -> str:
        """What ends an answer of a template whose turns end at the next role tag: the user or tool
        tag the render writes next, or, when nothing follows, the one the model must emit there
        (the tool tag after calls, as GLM stops a call with <|observation|>; else the user tag).
        Empty when another kind of turn follows (a system message, a second answer): no stop to learn."""
        if last:
            return self.turn_tags["tool" if message.get("tool_calls") else "user"]
        return next((tag for tag in self.turn_tags.values() if text.startswith(tag, end)), "")

    # -- end of turn -----------------------------------------------------------------------
    def _find_turn_tags(self) -> dict[str, str]:
        """{"user": tag, "tool": tag} for a template that closes no turn and opens every user and tool
        turn with a special token (GLM's <|user|>, <|observation|>): the text after an answer up to that
        token, when the next turn is a question, or a tool result. Empty for any other template; one that
        writes no tool turn (baichuan) stays an eos template, as its models are trained."""
        q1, a1 = "\u2063q1\u2063", "\u2063a1\u2063"
        one_turn = [{"role": "user", "content": q1}, {"role": "assistant", "content": a1}]
        following = {"user": {"role": "user", "content": "\u2063q2\u2063"},
                     "tool": {"role": "tool", "content": "\u2063r1\u2063", "tool_call_id": "call00000"}}
        closed = self.render(one_turn)
        if _first_special(closed[closed.index(a1) + len(a1):], self._special) is not None:
            return {}  # the template closes a turn itself
        tags = {}
        for role, turn in following.items():
            try:
                text = self.render(one_turn + [turn])
            except Exception:  # the template's refusal, or a tool message it cannot take
                return {}
            after = text[text.index(a1) + len(a1):] if a1 in text else ""
            first = _first_special(after, self._special)
            if first is None or after[: first[0]].strip() or turn["content"] not in after[first[1]:]:
                return {}
            tags[role] = after[: first[1]]
        user_alone = self.render([following["user"]])
        if tags["user"].strip() not in user_alone[: user_alone.index(following["user"]["content"])]:
            return {}  # a token written only between turns closes the answer; it opens no question
        return tags

    def _find_eot_text(self) -> str:
        """The text closing an answer: up to the first special token after it, read first from a
        conversation that ends on the answer (what the template writes to close a turn), else from
        one where a question follows, when that token does not open the question; for a template
        whose turns end at the next role tag, that tag of a question (GLM's <|user|>)."""
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
        if self.turn_tags:
            return self.turn_tags["user"]
        eos = self.tokenizer.eos_token
        if not eos:
            raise ConfigError(f"template '{self.name}' has no end-of-turn token and the tokenizer has no "
                              "eos_token: set one in the tokenizer or choose a template that closes turns")
        return eos

    def describe(self) -> dict:
        return {"name": self.name, "eot_text": self.eot_text, "stop_token_ids": self.stop_token_ids,
                "tool_format": self.family.name, "tool_calls": "template" if self.native_tool_calls else "text",
                "options": self.options}


def _answer_length(written: str, content: str) -> int:
    """Where an answer the template does not close ends: before the separator the template writes
    after it (whitespace), keeping whitespace the answer itself ends with."""
    stripped = written.rstrip()
    own = content[len(content.rstrip()):]
    tail = written[len(stripped):]
    keep = next(k for k in range(len(own), -1, -1) if tail.startswith(own[:k]))
    return len(stripped) + keep


def _string_arguments(call: dict) -> dict:
    arguments = call["function"].get("arguments", {})
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return dict(call, function=dict(call["function"], arguments=text))


def _give_call_ids(messages: list[dict]) -> None:
    """Calls without an id get one (9 letters and digits, as Mistral's template demands), and tool
    results without tool_call_id the ids of the calls before them, in order."""
    pending: list[str] = []
    for number, m in enumerate(messages):
        if m.get("tool_calls"):
            m["tool_calls"] = [c if c.get("id") else dict(c, id=f"call{number:02d}{k:03d}")
                               for k, c in enumerate(m["tool_calls"])]
            pending = [c["id"] for c in m["tool_calls"]]
        elif m["role"] == "tool" and not m.get("tool_call_id") and pending:
            m["tool_call_id"] = pending.pop(0)


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


def _span_labels(encoding, spans) -> list[int] | None:
    """Labels by the rule of _labels_from_spans (a token is trained when it overlaps an answer span),
    read from a Rust `Encoding`: per span, the first token holding its first character and the
    last one holding its last character (a multi-byte character can be split over several tokens
    with the same offsets). None when a span edge falls on a character no token holds."""
    ids = encoding.ids
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
        if first is None or last is None:
            return None
        while last + 1 < len(ids) and encoding.token_to_chars(last + 1)[0] < end:
            last += 1
        labels[first: last + 1] = ids[first: last + 1]
    return labels


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


def load_template(tokenizer, choice: str | None, options: dict | None = None) -> ChatTemplate:
    """The template for model.template, adding built-in special tokens the tokenizer lacks."""
    name, source = resolve_template_source(choice, tokenizer)
    if choice in BUILTIN_SPECIAL_TOKENS:
        add_missing_special_tokens(tokenizer, name)
    return ChatTemplate(tokenizer, source, name, options=options)
