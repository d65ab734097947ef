"""Rows of preference data -> records: pairs (rm, dpo, orpo, simpo), unpaired rows (kto), prompts (grpo).

    result = load_preference_records(specs, "dpo")   # LoadResult of Pair, bad rows as FILE:LINE problems

The prompt of a row is read like an sft conversation without its answer:
  sharegpt   {"conversations": [...], "chosen": ..., "rejected": ...}   (../shared/data/dpo_zh_demo.json)
  openai     {"messages": [...], "chosen": ..., "rejected": ...}
  alpaca     {"instruction", "input", optional "system" / "history", "chosen", "rejected"}
  prompt     {"prompt": "...", ...}
A completion (chosen, rejected, kto's completion) is a string, one message ({"from": "gpt",
"value"} or {"role": "assistant", "content"}) or a list holding one. kto rows carry a
completion and a true/false label; grpo rows a prompt and an optional reference answer
(answer / reference / solution). The prompt must end on a user (or tool) turn; an empty
completion, identical chosen and rejected, or a missing label is a bad row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tunekit.data.formats import BadRow, _check_turns, _history, _list, _message, _row_system, _string
from tunekit.data.formats import load_records
from tunekit.data.records import LoadResult
from tunekit.errors import DataError

ANSWER_KEYS = ("answer", "reference", "solution")
PROMPT_SHAPES = (("sharegpt", "conversations"), ("openai", "messages"), ("alpaca", "instruction"),
                 ("prompt", "prompt"))


@dataclass
class Pair:
    prompt: list[dict]
    chosen: str
    rejected: str
    tools: list | None = None
    source: str = ""


@dataclass
class Unpaired:
    prompt: list[dict]
    completion: str
    label: bool
    tools: list | None = None
    source: str = ""


@dataclass
class PromptRow:
    prompt: list[dict]
    answer: str | None = None
    tools: list | None = None
    source: str = ""


def load_preference_records(specs: list, kind: str) -> LoadResult:
    """kind: pairs | unpaired | prompts."""
    return load_records(specs, kind, converter=ROW_READERS[kind])


# ---------------------------------------------------------------- the prompt of a row


def _prompt_reader(first: dict, spec, where: str) -> Callable[[dict], tuple[list[dict], list | None]]:
    columns = spec.columns or {}
    keys = set(first) | {name for name, actual in columns.items() if actual in first}
    shape = spec.format if spec.format not in ("auto", None) else \
        next((name for name, mark in PROMPT_SHAPES if mark in keys), None)
    if shape not in PROMPT_READERS:
        seen = ", ".join(sorted(map(str, first))) or "none"
        raise DataError(f"{where}: cannot tell the prompt of the row from its keys ({seen}): give conversations "
                        "(sharegpt), messages (openai), instruction + input (alpaca) or prompt, or set format:")
    read = PROMPT_READERS[shape]
    system = _row_system if spec.system is None else (lambda row, cols: [{"role": "system", "content": spec.system}])
    return lambda row: _checked_prompt(read(row, columns), row, columns, system)


def _checked_prompt(parts, row, columns, system) -> tuple[list[dict], list | None]:
    messages, tools = parts
    if messages and messages[-1]["role"] == "assistant":
        raise BadRow(f"the prompt ends on an assistant turn (message {len(messages)}); a preference row gives "
                     "the conversation up to the last user message, and the answers in chosen / rejected")
    _check_turns(messages + [{"role": "assistant", "content": "-"}])
    if messages[0]["role"] != "system":
        messages = system(row, columns) + messages
    return messages, tools


def _messages(field: str):
    def read(row: dict, columns: dict):
        items = _list(row, columns, field)
        if not items:
            raise BadRow(f"'{columns.get(field, field)}' is missing or empty; give the prompt's messages")
        return [_message(item, n) for n, item in enumerate(items, 1)], _list(row, columns, "tools") or None
    return read


def _alpaca(row: dict, columns: dict):
    user = _string(row, columns, "instruction", "instruction")
    more = _string(row, columns, "input")
    user = f"{user}\n{more}" if more else user
    return _history(row, columns) + [{"role": "user", "content": user}], None


def _plain(row: dict, columns: dict):
    return [{"role": "user", "content": _string(row, columns, "prompt", "prompt")}], None


PROMPT_READERS = {"sharegpt": _messages("conversations"), "openai": _messages("messages"), "alpaca": _alpaca,
                  "prompt": _plain}


# ---------------------------------------------------------------- completions, labels, answers


def completion(row: dict, columns: dict, name: str) -> str:
    key = columns.get(name, name)
    value = row.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        message = _message(value, 1)
        if message["role"] != "assistant":
            raise BadRow(f"'{key}' is a '{message['role']}' message; a completion is the assistant's answer")
        value = message["content"]
    if value is None:
        raise BadRow(f"missing '{key}'; give the completion as text or as one assistant message")
    if not isinstance(value, str):
        raise BadRow(f"'{key}' must be text or one message, got {type(value).__name__}")
    if not value.strip():
        raise BadRow(f"'{key}' is empty; write the completion or delete the row")
    return value


def _pairs(first: dict, spec, stage: str, where: str):
    prompt = _prompt_reader(first, spec, where)
    columns = spec.columns or {}

    def convert(row: dict, source: str) -> Pair:
        messages, tools = prompt(row)
        chosen, rejected = completion(row, columns, "chosen"), completion(row, columns, "rejected")
        if chosen.strip() == rejected.strip():
            raise BadRow("chosen and rejected are identical: a pair must prefer one answer over a different one")
        return Pair(messages, chosen, rejected, tools, source)
    return convert


def _unpaired(first: dict, spec, stage: str, where: str):
    prompt = _prompt_reader(first, spec, where)
    columns = spec.columns or {}

    def convert(row: dict, source: str) -> Unpaired:
        messages, tools = prompt(row)
        label = row.get(columns.get("label", "label"))
        if not isinstance(label, bool):
            raise BadRow(f"'label' must be true (a desirable completion) or false, got {label!r}")
        return Unpaired(messages, completion(row, columns, "completion"), label, tools, source)
    return convert


def _prompts(first: dict, spec, stage: str, where: str):
    prompt = _prompt_reader(first, spec, where)
    columns = spec.columns or {}

    def convert(row: dict, source: str) -> PromptRow:
        messages, tools = prompt(row)
        key = next((columns.get(k, k) for k in ANSWER_KEYS if columns.get(k, k) in row), None)
        answer = row.get(key) if key else None
        if answer is not None and not isinstance(answer, (str, int, float)):
            raise BadRow(f"'{key}' (the reference answer) must be text or a number")
        return PromptRow(messages, None if answer is None else str(answer), tools, source)
    return convert


ROW_READERS = {"pairs": _pairs, "unpaired": _unpaired, "prompts": _prompts}
