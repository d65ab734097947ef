"""Model output -> reasoning, answer text and structured tool calls, per template family.

    family = family_for(template_source)        # hermes, llama3, mistral, deepseek, glm
    parsed = family.parse(text)                 # Parsed(content, reasoning, tool_calls, warnings)
    family.calls_text(calls)                    # the calls as the model writes them (training text)

A family is chosen from the template's own markup (one table, `FAMILIES`), so training and
parsing agree: the text form a family writes is the form it parses. Reasoning is a leading
`<think>...</think>` in every family (also when the prompt already opened `<think>`).
A call the model wrote badly (broken JSON, no name) stays in the content, with a warning;
parsing never raises. `Splitter` does the same on a stream: reasoning and content increments
as they come, calls once complete.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable

from tunekit.data.records import tool_call

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass
class Parsed:
    content: str
    reasoning: str | None = None
    tool_calls: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Family:
    name: str
    detect: tuple[str, ...]  # markup in a template source that names this family
    call_start: str  # where a call begins in the output
    markers: tuple[str, ...]  # tokens to keep when decoding (they may be special tokens)
    write: Callable[[list[dict]], str]  # calls -> text
    read: Callable[[str], tuple[str, list[dict], list[str]]]  # text -> (content, calls, warnings)
    description: str = ""
    named: str = ""  # how a call of function {name} opens, up to its arguments (tool_choice names one)

    def opening(self, name: str | None) -> str:
        """The text a forced call starts with: of that function, or of any (tool_choice "required")."""
        return self.named.format(name=name) if name else self.named[: self.named.index("{name}")].replace("{{", "{")

    def calls_text(self, calls: list[dict], content: str = "") -> str:
        return self.write(calls) if not content else "\n" + self.write(calls)

    def parse(self, text: str, thinking: bool = False) -> Parsed:
        """thinking: the prompt ended inside an open <think> block."""
        reasoning, rest = split_think(text, thinking)
        content, calls, warnings = self.read(rest)
        return Parsed(content, reasoning, calls, warnings)


def split_think(text: str, thinking: bool = False) -> tuple[str | None, str]:
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        text, thinking = stripped[len(THINK_OPEN):], True
    if not thinking:
        return None, text
    inside, closed, after = text.partition(THINK_CLOSE)
    return inside.strip("\n"), after.lstrip("\n") if closed else ""


def _args(call: dict) -> dict | str:
    return call["function"].get("arguments", {})


def _name_args(call: dict) -> tuple[str, dict | str]:
    return call["function"]["name"], _args(call)


def _dump(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json_call(blob: str, keys=("arguments", "parameters")) -> dict | None:
    try:
        found = json.loads(blob)
    except json.JSONDecodeError:
        return None
    if not isinstance(found, dict) or not isinstance(found.get("name"), str):
        return None
    arguments = next((found[k] for k in keys if k in found), {})
    return tool_call(found["name"], arguments, _call_id()) if isinstance(arguments, (dict, str)) else None


_COUNTER = iter(range(1, 1 << 62))


def _call_id() -> str:
    return f"call_{next(_COUNTER)}"


def _blocks(pattern: re.Pattern, text: str, convert, what: str) -> tuple[str, list[dict], list[str]]:
    """Calls found by `pattern`; a block that does not convert stays in the content with a warning."""
    calls, warnings, kept, cursor = [], [], [], 0
    for found in pattern.finditer(text):
        call = convert(found)
        kept.append(text[cursor: found.start()] if call else text[cursor: found.end()])
        cursor = found.end()
        if call:
            calls.append(call)
        else:
            warnings.append(f"the model wrote a malformed {what} call, kept as text: {found.group(0)[:200]}")
    kept.append(text[cursor:])
    return "".join(kept).strip(), calls, warnings


# -- hermes (Qwen2.5, Qwen3, and the default text form) ---------------------------------------
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def _hermes_write(calls: list[dict]) -> str:
    return "\n".join('<tool_call>\n{"name": "%s", "arguments": %s}\n</tool_call>' % (name, _dump(args))
                     for name, args in map(_name_args, calls))


def _hermes_read(text: str):
    return _blocks(_HERMES, text, lambda m: _json_call(m.group(1)), "<tool_call>")


# -- llama 3.1+: the whole answer is one JSON object {"name", "parameters"} ---------------------
def _llama3_write(calls: list[dict]) -> str:
    return "; ".join(json.dumps({"name": n, "parameters": a}, ensure_ascii=False) for n, a in map(_name_args, calls))


def _llama3_read(text: str):
    body = text.strip().removeprefix("<|python_tag|>").strip()
    if not body.startswith("{"):
        return text.strip(), [], []
    calls = [_json_call(part) for part in body.split("; ")]
    if all(calls):
        return "", calls, []
    return text.strip(), [], [f"the model wrote a malformed JSON call, kept as text: {body[:200]}"]


# -- mistral: [TOOL_CALLS] then a JSON list ----------------------------------------------------
def _mistral_write(calls: list[dict]) -> str:
    return json.dumps([{"name": n, "arguments": a} for n, a in map(_name_args, calls)], ensure_ascii=False)


def _mistral_read(text: str):
    before, marker, body = text.partition("[TOOL_CALLS]")
    if not marker:
        return text.strip(), [], []
    try:
        found = json.loads(body.strip())
        found = found if isinstance(found, list) else [found]
        calls = [_json_call(json.dumps(item)) for item in found]
    except json.JSONDecodeError:
        calls = [None]
    if calls and all(calls):
        return before.strip(), calls, []
    return text.strip(), [], [f"the model wrote a malformed [TOOL_CALLS] call, kept as text: {body[:200]}"]


# -- deepseek R1 / V3 ----------------------------------------------------------------------------
_DS = re.compile(r"<｜tool▁call▁begin｜>(\w+)<｜tool▁sep｜>(.*?)\n```json\n(.*?)\n```<｜tool▁call▁end｜>", re.DOTALL)
_DS_FRAME = re.compile(r"<｜tool▁calls▁(?:begin|end)｜>")


def _deepseek_write(calls: list[dict]) -> str:
    inner = "\n".join(f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{n}\n```json\n{_dump(a)}\n```<｜tool▁call▁end｜>"
                      for n, a in map(_name_args, calls))
    return f"<｜tool▁calls▁begin｜>{inner}<｜tool▁calls▁end｜>"


def _deepseek_read(text: str):
    def convert(m):
        return _json_call(json.dumps({"name": m.group(2).strip(), "arguments": _loads_or_none(m.group(3))}))

    content, calls, warnings = _blocks(_DS, text, convert, "DeepSeek")
    return (_DS_FRAME.sub("", content).strip() if calls else content), calls, warnings


def _loads_or_none(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


# -- GLM-4.5/4.6: <tool_call>NAME<arg_key>k</arg_key><arg_value>v</arg_value></tool_call> --------
_GLM = re.compile(r"<tool_call>\s*([^\s<]+)\s*(.*?)</tool_call>", re.DOTALL)
_GLM_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


def _glm_write(calls: list[dict]) -> str:
    def one(name, args):
        pairs = "".join(f"\n<arg_key>{k}</arg_key>\n<arg_value>{_dump(v)}</arg_value>" for k, v in args.items())
        return f"<tool_call>{name}{pairs}\n</tool_call>"

    return "\n".join(one(n, a if isinstance(a, dict) else {}) for n, a in map(_name_args, calls))


def _glm_read(text: str):
    def convert(m):
        args = {k.strip(): _loads_or_none(v) if _loads_or_none(v) is not None else v
                for k, v in _GLM_ARG.findall(m.group(2))}
        return tool_call(m.group(1), args, _call_id())

    return _blocks(_GLM, text, convert, "GLM")


FAMILIES = (  # first match wins: the more specific markup first
    Family("mistral", ("[TOOL_CALLS]",), "[TOOL_CALLS]", ("[TOOL_CALLS]",), _mistral_write, _mistral_read,
           "[TOOL_CALLS] [{name, arguments}]", '[TOOL_CALLS][{{"name": "{name}", "arguments": '),
    Family("deepseek", ("<｜tool▁calls▁begin｜>",), "<｜tool▁calls▁begin｜>",
           ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
            "<｜tool▁sep｜>"), _deepseek_write, _deepseek_read, "<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME ```json```",
           "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n"),
    Family("glm", ("<arg_key>",), "<tool_call>", ("<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>",
                                                  "<arg_value>", "</arg_value>"), _glm_write, _glm_read,
           "<tool_call>NAME <arg_key>/<arg_value>", "<tool_call>{name}"),
    Family("llama3", ("<|python_tag|>", "ipython"), "{", ("<|python_tag|>",), _llama3_write, _llama3_read,
           'JSON {"name", "parameters"}', '{{"name": "{name}", "parameters": '),
    Family("hermes", ("<tool_call>",), "<tool_call>", ("<tool_call>", "</tool_call>"), _hermes_write, _hermes_read,
           '<tool_call>{"name", "arguments"}</tool_call>', '<tool_call>\n{{"name": "{name}", "arguments": '),
)
DEFAULT_FAMILY = FAMILIES[-1]
# reasoning split off, nothing read as a call (tool_choice "none")
NO_CALLS = Family("none", (), "\u2063no-calls\u2063", (), _hermes_write, lambda text: (text.strip(), [], []), "", "{name}")  # the text form for templates without a tool-call branch
REASONING_MARKERS = (THINK_OPEN, THINK_CLOSE)


def family_for(source: str) -> Family:
    return next((f for f in FAMILIES if any(mark in source for mark in f.detect)), DEFAULT_FAMILY)


def family_named(name: str) -> Family:
    return next((f for f in FAMILIES if f.name == name), DEFAULT_FAMILY)


class Splitter:
    """A stream of answer text -> ("reasoning" | "content", increment) pairs; calls at `finish`.

    Text that may be the start of a marker (</think>, a call) is held back until it is clear.
    Everything from the first call marker on is kept for `finish`, which parses the whole answer.
    """

    def __init__(self, family: Family, thinking: bool = False):
        self.family, self.thinking = family, thinking
        self.text = ""
        self.sent = {"reasoning": "", "content": ""}

    def push(self, piece: str) -> list[tuple[str, str]]:
        self.text += piece
        reasoning, content = self._split()
        return self._emit(reasoning, content)

    def finish(self) -> tuple[Parsed, list[tuple[str, str]]]:
        parsed = self.family.parse(self.text, self.thinking)
        return parsed, self._emit(parsed.reasoning or "", parsed.content)

    def _split(self) -> tuple[str, str]:
        text = self.text.lstrip()
        if not self.thinking and THINK_OPEN.startswith(text) and text:
            return "", ""  # may be the opening of <think>
        reasoning, rest = split_think(text, self.thinking)
        if reasoning is not None and THINK_CLOSE not in text:
            return _held(reasoning, THINK_CLOSE).rstrip("\n"), ""
        start = rest.find(self.family.call_start) if self.family.call_start != "{" else (
            0 if rest.lstrip().startswith(("{", "<|python_tag|>")) else -1)
        content = rest if start < 0 else rest[:start]
        content = _held(content, self.family.call_start) if start < 0 else content
        return reasoning or "", content.strip()

    def _emit(self, reasoning: str, content: str) -> list[tuple[str, str]]:
        """New text of each kind; text that contradicts what was already sent is not sent."""
        out = []
        for kind, text in (("reasoning", reasoning), ("content", content)):
            if len(text) > len(self.sent[kind]) and text.startswith(self.sent[kind]):
                out.append((kind, text[len(self.sent[kind]):]))
                self.sent[kind] = text
        return out


def _held(text: str, marker: str) -> str:
    """text without a tail that could be the start of marker."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return text[:-k]
    return text
