"""Test sets for generation: every row -> an `EvalSample` (prompt messages + reference or None).

    samples = load_eval_samples("data/ner_test.jsonl")          # any format `train` reads
    samples[0].messages   # [{"role": "user", "content": "..."}]: what the model answers
    samples[0].reference  # the expected answer, or None when the row has none

Rows are read and converted by tunekit.data.formats, so a test file may be in any format
a training file may be (alpaca, instruct, prompt_response, sharegpt, openai; JSON, JSONL,
CSV, TSV, Parquet, folders, globs; `columns:` mappings). The last assistant message is the
reference and everything before it the prompt. A row without an answer (no output /
answer / response, or a conversation ending in a user turn) is a prompt to predict only,
and so is every row of a plain text file (one prompt per line, or a text column). Bad rows
are refused together, with FILE:LINE each, instead of being skipped: a skipped row would
change what the scores mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunekit.config import DatasetSpec
from tunekit.data.formats import (
    CONVERTERS,
    READERS,
    ROLE_NAMES,
    TEXT_COLUMNS,
    BadRow,
    detect_format,
    load_one,
    source_files,
)
from tunekit.errors import DataError

ANSWER_FIELDS = {"alpaca": "output", "instruct": "answer", "prompt_response": "response"}
MESSAGE_FIELDS = {"sharegpt": "conversations", "openai": "messages"}
_NO_ANSWER = "\u2063tunekit: no reference\u2063"  # stands in for a missing answer while a row is converted
_MAX_PROBLEMS_SHOWN = 10


@dataclass
class EvalSample:
    messages: list[dict]  # the prompt: every message before the answer
    reference: str | None  # the expected answer; None when the row has none
    source: str  # "file:line"
    tools: list | None = None

    @property
    def prompt(self) -> str:
        """The last user message: what a report shows as the question."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


def as_spec(data) -> DatasetSpec:
    """A DatasetSpec from a path (or a spec, returned as is)."""
    return data if isinstance(data, DatasetSpec) else DatasetSpec(path=str(data))


def load_eval_samples(data, max_samples: int | None = None) -> list[EvalSample]:
    """Every row of a test set (a path or DatasetSpec), in file order; the first max_samples when given."""
    spec = as_spec(data)
    limit = max_samples or spec.max_samples
    files = source_files(spec)
    if not files:  # a hub dataset: read like training data, so every row needs its answer
        return _hub_samples(spec, limit)
    samples: list[EvalSample] = []
    problems: list[str] = []
    for path in files:
        samples += _file_samples(path, spec, problems)
        if limit and len(samples) >= limit:
            break
    _refuse(spec.path, problems)
    if not samples:
        raise DataError(f"test set {spec.path} has no rows: add one prompt per row (with its expected answer "
                        "to be scored)")
    return samples[:limit] if limit else samples


def _hub_samples(spec: DatasetSpec, limit: int | None) -> list[EvalSample]:
    loaded = load_one(DatasetSpec(**{**spec.__dict__, "max_samples": limit}), "sft")
    _refuse(spec.path, [str(p) for p in loaded.problems])
    return [EvalSample(c.messages[:-1], c.messages[-1]["content"], c.source, c.tools) for c in loaded.records]


def _refuse(name: str, problems: list[str]) -> None:
    if not problems:
        return
    shown = "\n  ".join(problems[:_MAX_PROBLEMS_SHOWN])
    more = f"\n  ... and {len(problems) - _MAX_PROBLEMS_SHOWN} more" if len(problems) > _MAX_PROBLEMS_SHOWN else ""
    raise DataError(f"{len(problems)} row(s) of test set {name} cannot be used (fix or delete them; a test set "
                    f"is not scored with rows missing):\n  {shown}{more}")


def _file_samples(path: Path, spec: DatasetSpec, problems: list[str]) -> list[EvalSample]:
    samples, fmt = [], None
    for line, row, problem in READERS[path.suffix.lower()](path):
        where = f"{path}:{line}"
        if problem is None and not isinstance(row, dict):
            problem = f"the row is a JSON {type(row).__name__}, not an object"
        if problem is not None:
            problems.append(f"{where}: {problem}")
            continue
        fmt = fmt or _format_of(row, spec, where)
        try:
            samples.append(_sample(row, fmt, spec, where))
        except BadRow as exc:
            problems.append(f"{where}: {exc}")
    return samples


def _format_of(row: dict, spec: DatasetSpec, where: str) -> str:
    if spec.format not in ("auto", None):
        return spec.format
    canonical = {actual: name for name, actual in spec.columns.items()}
    try:
        return detect_format({canonical.get(key, key): value for key, value in row.items()})
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def _sample(row: dict, fmt: str, spec: DatasetSpec, where: str) -> EvalSample:
    if fmt == "text":
        return EvalSample(_system(spec) + [{"role": "user", "content": _text(row, spec)}], None, where)
    if fmt not in CONVERTERS:
        raise DataError(f"format '{fmt}' of test set {spec.path} is unknown: use auto or one of "
                        f"{', '.join([*CONVERTERS, 'text'])}")
    row, answered = _with_answer_slot(row, fmt, spec.columns)
    messages, tools = CONVERTERS[fmt](row, spec.columns)
    if spec.system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": spec.system})
    return EvalSample(messages[:-1], messages[-1]["content"] if answered else None, where, tools)


def _system(spec: DatasetSpec) -> list[dict]:
    return [{"role": "system", "content": spec.system}] if spec.system else []


def _text(row: dict, spec: DatasetSpec) -> str:
    key = spec.columns.get("text") or next((k for k in TEXT_COLUMNS if k in row), TEXT_COLUMNS[0])
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRow(f"'{key}' is missing or empty; write the prompt or delete the row")
    return value


def _with_answer_slot(row: dict, fmt: str, columns: dict) -> tuple[dict, bool]:
    """The row with a stand-in answer when it has none (so it converts), and whether it had one."""
    if fmt in ANSWER_FIELDS:
        key = columns.get(ANSWER_FIELDS[fmt], ANSWER_FIELDS[fmt])
        value = row.get(key)
        if value is None or isinstance(value, str) and not value.strip():
            return {**row, key: _NO_ANSWER}, False
        return row, True
    key = columns.get(MESSAGE_FIELDS[fmt], MESSAGE_FIELDS[fmt])
    items = _message_list(row.get(key))
    if not items or not isinstance(items[-1], dict):
        return row, True  # the converter says what is wrong with it
    last = items[-1].get("from", items[-1].get("role"))
    if ROLE_NAMES.get(last) in ("assistant", "system"):
        return row, True
    return {**row, key: items + [{"role": "assistant", "content": _NO_ANSWER}]}, False


def _message_list(value):
    if isinstance(value, str):  # CSV / Parquet cells hold the list as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, list) else None
