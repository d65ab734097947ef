"""The canonical records every dataset format is turned into before a tokenizer sees it.

A `Conversation` is a list of messages with roles system, user, assistant and tool, plus
optional tool definitions, in the shape `tokenizer.apply_chat_template` takes:

    {"role": "assistant", "content": "", "reasoning_content": "thought about it",
     "tool_calls": [{"type": "function", "id": "call_1",
                     "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "call_1"}

Tool-call arguments are a dict (templates write them with `tojson`); reasoning lives in
`reasoning_content`, also when a dataset writes it inline as `<think>...</think>` (see
`normalize_message`), and the template decides how it is rendered. A `TextRecord` is one document for
continued pretraining. A `Problem` is one bad row, reported as `FILE:LINE: message`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant", "tool")
_INLINE_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


@dataclass
class Conversation:
    messages: list[dict]
    tools: list | None = None
    source: str = ""  # "file:line", for messages that point at the row

    def assistant_turns(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant"]


@dataclass
class TextRecord:
    text: str
    source: str = ""


@dataclass
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class LoadResult:
    """What reading one or more datasets produced: good records and the bad rows."""

    records: list = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rows_read: int = 0


def tool_call(name: str, arguments, call_id: str | None = None) -> dict:
    """One structured tool call; arguments given as a JSON string are parsed when they can be."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # kept as written: some templates print a string as is
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id:
        call["id"] = call_id
    return call


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of a text that opens with `<think>...</think>`; (None, text) otherwise."""
    found = _INLINE_THINK.match(text or "")
    if found is None:
        return None, text
    return found.group(1).strip("\n"), text[found.end():]


def normalize_message(message: dict) -> dict:
    """A copy with inline `<think>` moved to reasoning_content and tool-call arguments parsed."""
    out = dict(message)
    if out.get("role") == "assistant" and isinstance(out.get("content"), str) and not out.get("reasoning_content"):
        reasoning, content = split_reasoning(out["content"])
        if reasoning is not None:
            out["reasoning_content"], out["content"] = reasoning, content
    if out.get("tool_calls"):
        out["tool_calls"] = [tool_call(c["function"]["name"], c["function"].get("arguments", {}), c.get("id"))
                             for c in out["tool_calls"]]
    return out


def normalize_tools(tools: list | None) -> list[dict] | None:
    """Tool definitions as apply_chat_template takes them: {"type": "function", "function": {...}}."""
    if not tools:
        return None
    return [t if isinstance(t, dict) and "function" in t else {"type": "function", "function": t} for t in tools]
