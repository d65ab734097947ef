"""Readers and converters: every dataset source row -> a `Conversation` (sft) or `TextRecord` (pt).

    result = load_records([DatasetSpec("data/train.json")], stage="sft")
    result.records     # Conversation(messages=[{"role": "user", ...}, ...], tools, source="data/train.json:2")
    result.problems    # [Problem("data/train.json", 14, "missing 'output' ...")]: bad rows, skipped

A spec path is a file, a folder (every supported file inside, recursively, sorted; hidden
ones skipped), a glob, or else a Hugging Face dataset name. Files: .json (a list of rows,
or one object per line), .jsonl, .csv, .tsv, .parquet, .txt. A .txt file holds one
document per non-empty line (pt only), like wiki_demo.txt.

Row formats (detected per file from its first row, or forced with `format:`; `columns:`
maps canonical names to the file's keys): alpaca, instruct, prompt_response, sharegpt,
openai, text. A tool call (sharegpt function_call, openai tool_calls) becomes an assistant
message whose content is the call as JSON; a tool result becomes a "tool" message.

A bad row becomes a `Problem(file, line, message)`: line is the 1-based file line where
the row starts (Parquet and hub datasets: the row number, and the message says so).
`DataError` is raised only when a whole dataset cannot be used (not found, unknown file
type, no rows at all, format not detectable, plain text for sft). A dataset whose rows
are all bad returns no records and every problem: the caller decides what to do.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import re
from pathlib import Path
from typing import Callable, Iterator

from tunekit.data.records import Conversation, LoadResult, Problem, TextRecord
from tunekit.errors import DataError

FORMATS = ("alpaca", "instruct", "prompt_response", "sharegpt", "openai", "text")
TEXT_COLUMNS = ("text", "content", "sentence")
ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
              "function_call": "assistant", "system": "system", "observation": "tool", "tool": "tool"}
NEXT_ROLES = {None: ("system", "user"), "system": ("user",), "user": ("assistant",),
              "assistant": ("user", "tool"), "tool": ("tool", "assistant")}
FILE_LIKE_SUFFIXES = {".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".arrow", ".gz", ".zip",
                      ".xlsx", ".xls", ".yaml", ".yml", ".md", ".tar"}
FORMAT_SHAPES = ("alpaca {instruction, input, output}, instruct {instruct, query, answer}, "
                 "prompt_response {prompt, response}, sharegpt {conversations}, openai {messages}, "
                 "text {text | content | sentence}")

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_BAD_BYTE = re.compile("[\udc80-\udcff]")  # undecodable bytes, kept by errors="surrogateescape"

Row = tuple[int, object, str | None]  # (line, parsed row or None, problem message or None)


class BadRow(Exception):
    """One row cannot be used; the message says what is wrong and how to fix it."""


# ---------------------------------------------------------------- public API


def load_records(specs: list, stage: str) -> LoadResult:
    """Read several datasets in order into one result (records, problems, rows read)."""
    total = LoadResult()
    for spec in specs:
        part = load_one(spec, stage)
        total.records += part.records
        total.problems += part.problems
        total.rows_read += part.rows_read
    return total


def load_one(spec, stage: str) -> LoadResult:
    """Read one dataset: Conversations for stage sft, TextRecords for stage pt."""
    if stage not in ("sft", "pt"):
        raise DataError(f"stage '{stage}' has no dataset reader: use sft or pt")
    if spec.max_samples is not None and spec.max_samples <= 0:
        raise DataError(f"max_samples of dataset {spec.path} is {spec.max_samples}: give a positive count")
    files = _resolve(spec)
    sources = (_file_source(path) for path in files) if files is not None else iter([_hub_source(spec)])
    result = LoadResult()
    for name, rows, unit in sources:
        _read_source(name, rows, unit, spec, stage, result)
        if _full(result, spec):
            break
    if result.rows_read == 0:
        details = "; ".join(str(p) for p in result.problems[:5])
        raise DataError(f"dataset {spec.path} has no rows{': ' + details if details else ''}")
    return result


def detect_format(row: dict) -> str:
    """Name the format of a row (keys already renamed to canonical names)."""
    keys = set(row)
    for fmt, marks in (("sharegpt", {"conversations"}), ("openai", {"messages"}), ("alpaca", {"instruction"}),
                       ("instruct", {"instruct"}), ("prompt_response", {"prompt", "response"}),
                       ("text", set(TEXT_COLUMNS))):
        if keys & marks:
            return fmt
    seen = ", ".join(sorted(map(str, keys))) or "none"
    raise DataError(f"cannot tell the dataset format from the row's keys ({seen}); the formats expect "
                    f"{FORMAT_SHAPES}. Set format: to one of {', '.join(FORMATS)}, or map your keys with "
                    "columns:, e.g. columns: {prompt: q, response: a}")


def source_files(spec) -> list[Path]:
    """The local files a spec reads (for cache fingerprints); [] for a hub dataset."""
    return _resolve(spec) or []


# ---------------------------------------------------------------- where the rows come from


def _resolve(spec) -> list[Path] | None:
    """The files of a local spec, or None when the path names a hub dataset."""
    raw = str(spec.path)
    path = Path(raw).expanduser()
    if path.is_file():
        if path.suffix.lower() not in READERS:
            raise DataError(f"{path}: unknown file type '{path.suffix}'; tunekit reads "
                            f"{', '.join(READERS)}: convert the file or rename it")
        return [path]
    if path.is_dir():
        files = _files_in(path)
        if not files:
            raise DataError(f"folder {path} has no dataset files: put {', '.join(READERS)} files in it")
        return files
    if any(ch in raw for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                       if Path(p).is_file() and Path(p).suffix.lower() in READERS)
        if not files:
            raise DataError(f"dataset {raw} not found: no {', '.join(READERS)} file matches this pattern")
        return files
    if _looks_local(raw):
        raise DataError(f"dataset {raw} not found: no such file or folder (relative paths start at "
                        f"{Path.cwd()}); check the path")
    return None


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in READERS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _looks_local(raw: str) -> bool:
    """A path that is clearly meant as a file: hub names are `name` or `owner/name`."""
    return (Path(raw).is_absolute() or raw.startswith((".", "~")) or "\\" in raw or raw.count("/") > 1
            or Path(raw).suffix.lower() in FILE_LIKE_SUFFIXES)


def _file_source(path: Path) -> tuple[str, Iterator[Row], str]:
    unit = "row" if path.suffix.lower() == ".parquet" else "line"
    return str(path), READERS[path.suffix.lower()](path), unit


def _hub_source(spec) -> tuple[str, Iterator[Row], str]:
    try:
        import datasets

        table = datasets.load_dataset(spec.path, name=spec.subset, split=spec.split)
    except Exception as exc:  # network, missing dataset or split: all mean "cannot load it"
        raise DataError(f"dataset {spec.path} is not a local file or folder, and loading it from the Hugging "
                        f"Face hub (subset {spec.subset}, split {spec.split}) failed: {exc}. Check the path "
                        "or the dataset name") from exc
    return spec.path, ((number, row, None) for number, row in enumerate(table, 1)), "row"


# ---------------------------------------------------------------- file readers: yield (line, row, problem)


def _read_text(path: Path) -> tuple[str, bool]:
    """The file as text, and whether it held bytes that are not UTF-8 (kept as lone surrogates)."""
    data = path.read_bytes()
    try:
        text, bad = data.decode("utf-8"), False
    except UnicodeDecodeError:
        text, bad = data.decode("utf-8", "surrogateescape"), True
    return text.removeprefix("\ufeff"), bad


def _bad_utf8(text: str, start: int = 0, end: int | None = None) -> tuple[int, str] | None:
    """Offset and message of the first undecodable byte in text[start:end], if any."""
    found = _BAD_BYTE.search(text, start, len(text) if end is None else end)
    if found is None:
        return None
    byte = ord(found.group()) - 0xDC00
    return found.start(), (f"invalid UTF-8 (byte 0x{byte:02x}); re-save the file as UTF-8, "
                           "e.g. iconv -f GBK -t UTF-8 FILE > NEW_FILE")


def _json_rows(path: Path) -> Iterator[Row]:
    """A JSON list of rows (line = where each object starts), or one object per line."""
    text, bad = _read_text(path)
    start = _WHITESPACE.match(text).end()
    if start == len(text):
        return
    if text[start] != "[":
        yield from _lines_as_json(text, bad)
        return
    try:
        yield from _json_list(text, bad, start)
    except json.JSONDecodeError as exc:
        yield exc.lineno, None, (f"JSON syntax error at line {exc.lineno} column {exc.colno}: {exc.msg}; fix "
                                 "the file there (the rows after it were not read)")


def _json_list(text: str, bad: bool, start: int) -> Iterator[Row]:
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text, start + 1).end()
    line, counted = 1, 0
    while not text.startswith("]", pos):
        line, counted = line + text.count("\n", counted, pos), pos
        row, end = decoder.raw_decode(text, pos)
        found = _bad_utf8(text, pos, end) if bad else None
        if found:
            yield line + text.count("\n", pos, found[0]), None, found[1]
        else:
            yield line, row, None
        pos = _WHITESPACE.match(text, end).end()
        if text.startswith(",", pos):
            pos = _WHITESPACE.match(text, pos + 1).end()
            if text.startswith("]", pos):
                raise json.JSONDecodeError("a comma before the closing ] (remove it)", text, pos)
        elif not text.startswith("]", pos):
            raise json.JSONDecodeError("Expecting ',' or ']' after a row", text, pos)
    rest = _WHITESPACE.match(text, pos + 1).end()
    if rest < len(text):
        raise json.JSONDecodeError("Extra data after the closing ]", text, rest)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    text, bad = _read_text(path)
    yield from _lines_as_json(text, bad)


def _lines_as_json(text: str, bad: bool) -> Iterator[Row]:
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        found = _bad_utf8(line) if bad else None
        if found:
            yield number, None, found[1]
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, (f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                                 "complete JSON object: fix the quotes or brackets, or delete the line")
            continue
        yield number, row, None


def _txt_rows(path: Path) -> Iterator[Row]:
    """Each non-empty line is one document."""
    text, bad = _read_text(path)
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        found = _bad_utf8(line) if bad else None
        yield (number, None, found[1]) if found else (number, {"text": line}, None)


def _csv_rows(path: Path, delimiter: str = ",") -> Iterator[Row]:
    """A header line, then one row per record (line = the file line where the row starts)."""
    text, bad = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        start = reader.line_num + 1
        for fields in reader:
            line, start = start, reader.line_num + 1
            if fields:
                yield _csv_row(header, fields, line, bad)
    except csv.Error as exc:
        yield reader.line_num, None, f"CSV syntax error: {exc}; fix the quoting there (the rest was not read)"


def _csv_row(header: list[str], fields: list[str], line: int, bad: bool) -> Row:
    if len(fields) != len(header):
        return line, None, (f"row has {len(fields)} fields but the header has {len(header)}; quote fields "
                            "that contain the delimiter, or fix the row")
    joined = "\x00".join(fields)
    found = _bad_utf8(joined) if bad else None
    if found:
        return line + joined.count("\n", 0, found[0]), None, found[1]
    return line, dict(zip(header, fields)), None


def _tsv_rows(path: Path) -> Iterator[Row]:
    return _csv_rows(path, "\t")


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read it as Parquet ({exc}); check it is a complete Parquet file") from exc
    return ((number, row, None) for number, row in enumerate(table.to_pylist(), 1))


READERS: dict[str, Callable[[Path], Iterator[Row]]] = {
    ".json": _json_rows, ".jsonl": _jsonl_rows, ".csv": _csv_rows, ".tsv": _tsv_rows,
    ".parquet": _parquet_rows, ".txt": _txt_rows,
}


# ---------------------------------------------------------------- rows -> records


def _read_source(name: str, rows: Iterator[Row], unit: str, spec, stage: str, result: LoadResult) -> None:
    convert = None
    seen = result.rows_read
    for line, row, problem in rows:
        result.rows_read += 1
        if problem is None and not isinstance(row, dict):
            problem = (f"the row is a JSON {type(row).__name__}, not an object; write each row as "
                       '{"key": value, ...}')
        if problem is None:
            convert = convert or _row_converter(row, spec, stage, f"{name}:{line}")
            try:
                result.records.append(convert(row, f"{name}:{line}"))
            except BadRow as exc:
                problem = str(exc)
        if problem is not None:
            result.problems.append(Problem(name, line, f"row {line}: {problem}" if unit == "row" else problem))
        if _full(result, spec):
            return
    if result.rows_read == seen:
        result.problems.append(Problem(name, 1, "the file has no rows; add rows or remove it from the dataset"))


def _full(result: LoadResult, spec) -> bool:
    return spec.max_samples is not None and len(result.records) >= spec.max_samples


def _row_converter(first: dict, spec, stage: str, where: str) -> Callable[[dict, str], object]:
    """Pick how every row of one file is converted, from its first row (or the forced format)."""
    columns = spec.columns or {}
    if stage == "pt":
        column = _text_column(first, columns, where)
        return lambda row, source: _text_record(row, column, source)
    try:
        fmt = detect_format(_renamed(first, columns)) if spec.format in ("auto", None) else spec.format
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    if fmt == "text":
        raise DataError(f"{where}: dataset {spec.path} is plain text (format 'text'), but stage sft trains on "
                        "conversations: use train.stage: pt for continued pretraining, or give a conversation "
                        f"format ({', '.join(CONVERTERS)})")
    if fmt not in CONVERTERS:
        raise DataError(f"format '{fmt}' of dataset {spec.path} is unknown: use auto or one of {', '.join(FORMATS)}")
    return lambda row, source: _conversation(CONVERTERS[fmt](row, columns), spec.system, source)


def _renamed(row: dict, columns: dict) -> dict:
    """The row with the file's keys renamed to canonical names (for detection)."""
    canonical = {actual: name for name, actual in columns.items()}
    return {canonical.get(key, key): value for key, value in row.items()}


def _text_column(first: dict, columns: dict, where: str) -> str:
    if "text" in columns:
        return columns["text"]
    for name in TEXT_COLUMNS:
        if name in first:
            return name
    seen = ", ".join(sorted(map(str, first))) or "none"
    raise DataError(f"{where}: stage pt reads a text column ({', '.join(TEXT_COLUMNS)}), and this row has none "
                    f"(keys: {seen}); name yours with columns: {{text: YOUR_COLUMN}}")


def _text_record(row: dict, column: str, source: str) -> TextRecord:
    value = row.get(column)
    if value is None:
        raise BadRow(f"missing '{column}'; give every row its text, or delete the row")
    if not isinstance(value, str):
        raise BadRow(f"'{column}' must be a string, got {_short(value)}; put the text in quotes")
    if not value.strip():
        raise BadRow(f"'{column}' is empty; delete the row or fill in its text")
    return TextRecord(text=value, source=source)


def _conversation(parts: tuple[list[dict], list | None], system: str | None, source: str) -> Conversation:
    messages, tools = parts
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return Conversation(messages=messages, tools=tools, source=source)


# ---------------------------------------------------------------- row formats -> (messages, tools)


def _single_turn(prompt: str, extra: str | None, answer: str) -> Callable[[dict, dict], tuple]:
    """alpaca, instruct, prompt_response: one prompt (+ optional extra input) and one answer."""
    needs = f"{prompt} and {answer}"

    def convert(row: dict, columns: dict) -> tuple[list[dict], None]:
        user = _string(row, columns, prompt, needs)
        more = _string(row, columns, extra) if extra else ""
        if more:
            user = f"{user}\n{more}"
        reply = _string(row, columns, answer, needs)
        for text, name, what in ((user, prompt, "prompt"), (reply, answer, "answer")):
            if not text.strip():
                raise BadRow(f"'{columns.get(name, name)}' is empty; write the {what} or delete the row")
        turn = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        return _row_system(row, columns) + _history(row, columns) + turn, None

    return convert


def _multi_turn(field: str) -> Callable[[dict, dict], tuple]:
    """sharegpt (from/value) and openai (role/content): a list of messages; either key style is read."""

    def convert(row: dict, columns: dict) -> tuple[list[dict], list | None]:
        items = _list(row, columns, field)
        if not items:
            raise BadRow(f"'{columns.get(field, field)}' is missing or empty; give the list of messages, "
                          'e.g. [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]')
        messages = [_message(item, number) for number, item in enumerate(items, 1)]
        _check_turns(messages)
        if messages[0]["role"] != "system":
            messages = _row_system(row, columns) + messages
        return messages, _tools(row, columns)

    return convert


CONVERTERS = {
    "alpaca": _single_turn("instruction", "input", "output"),
    "instruct": _single_turn("instruct", "query", "answer"),
    "prompt_response": _single_turn("prompt", None, "response"),
    "sharegpt": _multi_turn("conversations"),
    "openai": _multi_turn("messages"),
}


def _message(item, number: int) -> dict:
    if not isinstance(item, dict):
        raise BadRow(f"message {number} is {_short(item)}, not an object like "
                      '{"from": "human", "value": "..."} or {"role": "user", "content": "..."}')
    name = item.get("from", item.get("role"))
    role = ROLE_NAMES.get(name) if isinstance(name, str) else None
    if role is None:
        raise BadRow(f"message {number} has unknown role {name!r}; use one of {', '.join(ROLE_NAMES)}")
    content = item.get("value", item.get("content"))
    if content is None and item.get("tool_calls"):
        content = _calls_as_json(item["tool_calls"], number)
    if not isinstance(content, str):
        raise BadRow(f"message {number} content must be a string, got {_short(content)}; put it in quotes")
    return {"role": role, "content": content}


def _calls_as_json(calls, number: int) -> str:
    """openai tool_calls -> the sharegpt function_call text: {"name": ..., "arguments": {...}}."""
    try:
        found = [{"name": c["function"]["name"], "arguments": _maybe_json(c["function"].get("arguments", {}))}
                 for c in calls]
    except (TypeError, KeyError):
        raise BadRow(f"message {number} tool_calls must look like "
                      '[{"type": "function", "function": {"name": ..., "arguments": ...}}]') from None
    return json.dumps(found[0] if len(found) == 1 else found, ensure_ascii=False)


def _check_turns(messages: list[dict]) -> None:
    """Alternate user/assistant after an optional system; tool results follow an assistant; end on one."""
    previous = None
    for number, message in enumerate(messages, 1):
        role = message["role"]
        if role not in NEXT_ROLES[previous]:
            place = f"follows '{previous}'" if previous else "opens the conversation"
            raise BadRow(f"roles out of order: message {number} is '{role}' but {place}; expected "
                          f"{' or '.join(NEXT_ROLES[previous])}. Conversations alternate user/assistant after "
                          "an optional system message, and tool results follow an assistant turn")
        if role in ("user", "assistant") and not message["content"].strip():
            what = "answer" if role == "assistant" else "prompt"
            raise BadRow(f"message {number} ({role}) is empty; write the {what} or delete the row")
        previous = role
    if previous != "assistant":
        raise BadRow(f"the conversation ends with '{previous}', not an answer; sft needs a final "
                      "assistant answer: add it or drop the trailing messages")


def _maybe_json(value):
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value


def _string(row: dict, columns: dict, name: str, needs: str | None = None) -> str:
    """A string field; '' when an optional one is absent. `needs` marks it required."""
    key = columns.get(name, name)
    value = row.get(key)
    if value is None:
        if needs:
            raise BadRow(f"missing '{key}' (this format needs {needs}); add it to the row, or map your "
                          f"column with columns: {{{name}: YOUR_COLUMN}}")
        return ""
    if not isinstance(value, str):
        raise BadRow(f"'{key}' must be a string, got {_short(value)}; put the value in quotes")
    return value


def _list(row: dict, columns: dict, name: str) -> list | None:
    """A list field; a string holding a JSON list (CSV, Parquet) is parsed."""
    key = columns.get(name, name)
    value = row.get(key)
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRow(f"'{key}' is a string but not valid JSON ({exc.msg}); give a JSON list") from None
    if value is not None and not isinstance(value, list):
        raise BadRow(f"'{key}' must be a list, got {_short(value)}")
    return value


def _row_system(row: dict, columns: dict) -> list[dict]:
    system = _string(row, columns, "system")
    return [{"role": "system", "content": system}] if system.strip() else []


def _history(row: dict, columns: dict) -> list[dict]:
    messages = []
    for number, pair in enumerate(_list(row, columns, "history") or [], 1):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise BadRow(f"history item {number} is {_short(pair)}; history must be a list of "
                          '[question, answer] string pairs, e.g. [["hi", "hello"]]')
        if not (pair[0].strip() and pair[1].strip()):
            raise BadRow(f"history item {number} has an empty question or answer; fill it in or remove the pair")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return messages


def _tools(row: dict, columns: dict) -> list | None:
    key = columns.get("tools", "tools")
    value = row.get(key)
    if isinstance(value, dict):
        return [value]
    try:
        tools = _list(row, columns, "tools")
    except BadRow:
        raise BadRow(f"'{key}' must be a JSON list of function definitions (a list, or a string holding "
                      "one); fix its JSON") from None
    return tools or None


def _short(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
