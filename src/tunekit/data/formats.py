"""Readers and converters: every dataset source row -> a `Conversation` (sft) or `TextRecord` (pt).

    result = load_records([DatasetSpec("data/train.json")], stage="sft")
    result.records     # Conversation(messages=[{"role": "user", ...}, ...], tools, source="data/train.json:2")
    result.problems    # [Problem("data/train.json", 14, "missing 'output' ...")]: bad rows, skipped

    for source in sources(spec, "sft"):             # the same, streamed: memory does not grow with the data
        for item in read_source(source, spec, "sft"):   # a record or a Problem per row
            ...

A spec path is a file, a folder (every supported file inside, recursively, sorted; hidden
ones skipped), a glob, or else a Hugging Face dataset name. Files: .json (a list of rows,
or one object per line), .jsonl, .csv, .tsv, .parquet, .txt. A .txt file holds one
document per non-empty line (pt only), like wiki_demo.txt. Every file is read as a stream:
line by line, a JSON list block by block, Parquet batch by batch; a .json file holding one
object (not a list of rows) is refused. One row may hold at most MAX_ROW_BYTES; a larger
one, or one nested deeper than the JSON parser allows, is a bad row (skipped unread).

Row formats (detected per file from its first row, or forced with `format:`; `columns:`
maps canonical names to the file's keys): alpaca, instruct, prompt_response, sharegpt,
openai, text. A tool call (sharegpt function_call, openai tool_calls) becomes an assistant
message with structured `tool_calls` (records.py), rendered by the template's own tool
branch; a tool result (observation, tool) becomes a "tool" message; `tools` definitions
travel with the conversation. Reasoning (an OpenAI-style `reasoning_content` field or an
inline `<think>...</think>` opening the answer) becomes the message's reasoning_content.

A bad row becomes a `Problem(file, line, message)`: line is the 1-based file line where
the row starts (Parquet and hub datasets: the row number, and the message says so).
`DataError` is raised only when a whole dataset cannot be used (not found, unknown file
type, no rows at all, format not detectable, plain text for sft). A dataset whose rows
are all bad returns no records and every problem: the caller decides what to do.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import json
import re
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from tunekit.data.records import (Conversation, LoadResult, Problem, TextRecord, normalize_message,
                                  normalize_tools, tool_call)
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

MAX_ROW_BYTES = 16 << 20  # one row larger than this is refused unread (a row that big is a mistake)
READ_BLOCK = 1 << 20  # bytes read at a time from a JSON list
PARQUET_BATCH = 1024  # Parquet rows converted to Python at a time

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_BAD_BYTE = re.compile("[\udc80-\udcff]")  # undecodable bytes, kept by errors="surrogateescape"

Row = tuple[int, object, str | None]  # (line, parsed row or None, problem message or None)


class BadRow(Exception):
    """One row cannot be used; the message says what is wrong and how to fix it."""


# ---------------------------------------------------------------- public API


def load_records(specs: list, stage: str, converter: Callable | None = None) -> LoadResult:
    """Read several datasets in order into one result (records, problems, rows read).

    `converter(first_row, spec, stage, where)` -> `convert(row, source)` replaces the sft / pt
    row conversion (data.preferences reads pairs, unpaired rows and prompts with it)."""
    total = LoadResult()
    for spec in specs:
        part = load_one(spec, stage, converter)
        total.records += part.records
        total.problems += part.problems
        total.rows_read += part.rows_read
    return total


def load_one(spec, stage: str, converter: Callable | None = None) -> LoadResult:
    """Read one dataset into memory: Conversations for stage sft, TextRecords for stage pt."""
    result = LoadResult()
    for source in sources(spec, stage if converter is None else "sft"):
        limit = None if spec.max_samples is None else spec.max_samples - len(result.records)
        if limit == 0:
            break
        rows_before = result.rows_read
        for item in read_source(source, spec, stage, limit, converter):
            result.rows_read += 1
            (result.problems if isinstance(item, Problem) else result.records).append(item)
        if result.rows_read == rows_before:
            result.problems.append(empty_file_problem(source))
    check_has_rows(spec, result.rows_read, result.problems)
    return result


def sources(spec, stage: str, streaming: bool = False) -> list[Source]:
    """Where one dataset's rows come from, in order: its files, or the hub dataset it names (streamed from
    the hub, not downloaded whole, when `streaming`)."""
    if stage not in ("sft", "pt"):
        raise DataError(f"stage '{stage}' has no dataset reader: use sft or pt")
    if spec.max_samples is not None and spec.max_samples <= 0:
        raise DataError(f"max_samples of dataset {spec.path} is {spec.max_samples}: give a positive count")
    files = _resolve(spec)
    return [FileSource(path) for path in files] if files is not None else [HubSource(spec, streaming)]


def read_source(source: Source, spec, stage: str, limit: int | None = None,
                converter: Callable | None = None) -> Iterator[object]:
    """One item per row, streamed: a record (Conversation / TextRecord) or a Problem; at most `limit` records."""
    convert, kept = None, 0
    for line, row, problem in source.rows():
        if problem is None and not isinstance(row, dict):
            problem = (f"the row is a JSON {type(row).__name__}, not an object; write each row as "
                       '{"key": value, ...}')
        if problem is None:
            convert = convert or (converter or _row_converter)(row, spec, stage, f"{source.name}:{line}")
            try:
                yield convert(row, f"{source.name}:{line}")
                kept += 1
            except BadRow as exc:
                problem = str(exc)
        if problem is not None:
            yield Problem(source.name, line, f"row {line}: {problem}" if source.unit == "row" else problem)
        if limit is not None and kept >= limit:
            return


def empty_file_problem(source: Source) -> Problem:
    return Problem(source.name, 1, "the file has no rows; add rows or remove it from the dataset")


def check_has_rows(spec, rows_read: int, problems: list[Problem]) -> None:
    """A dataset none of whose files holds a row cannot be used at all."""
    if rows_read == 0:
        details = "; ".join(str(p) for p in problems[:5])
        raise DataError(f"dataset {spec.path} has no rows{': ' + details if details else ''}")


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


def sniff_format(spec, stage: str = "sft") -> str:
    """The format a spec's rows are read as: the forced one, else the one detected from the first object row."""
    if stage == "pt":
        return "text"
    if spec.format not in ("auto", None):
        return spec.format
    for path in _resolve(spec) or []:
        for _, row, problem in FileSource(path).rows():
            if problem is None and isinstance(row, dict):
                return detect_format(_renamed(row, spec.columns or {}))
    return "auto (hub dataset: detected when read)"


def source_files(spec) -> list[Path]:
    """The local files a spec reads (for cache fingerprints); [] for a hub dataset."""
    return _resolve(spec) or []


# ---------------------------------------------------------------- where the rows come from


class FileSource:
    """One local file, read row by row; `tell()` is how many of its bytes were read (for progress)."""

    def __init__(self, path: Path):
        self.path, self.name = path, str(path)
        self.unit = "row" if path.suffix.lower() == ".parquet" else "line"
        self.size = path.stat().st_size
        self._file = None

    def rows(self) -> Iterator[Row]:
        with open(self.path, "rb") as f:
            self._file = f
            yield from _READERS[self.path.suffix.lower()](f)

    def tell(self) -> int:
        if self._file is None:
            return 0
        return self.size if self._file.closed else min(self._file.tell(), self.size)


class HubSource:
    """A Hugging Face dataset, named by the spec (no local file)."""

    unit, size = "row", 0

    def __init__(self, spec, streaming: bool = False):
        self.spec, self.name, self.streaming = spec, spec.path, streaming

    def rows(self) -> Iterator[Row]:
        spec = self.spec
        try:
            import datasets

            more = {"streaming": True} if self.streaming else {}
            table = datasets.load_dataset(spec.path, name=spec.subset, split=spec.split, **more)
        except Exception as exc:  # network, missing dataset or split: all mean "cannot load it"
            raise DataError(f"dataset {spec.path} is not a local file or folder, and loading it from the Hugging "
                            f"Face hub (subset {spec.subset}, split {spec.split}) failed: {exc}. Check the path "
                            "or the dataset name") from exc
        return ((number, row, None) for number, row in enumerate(table, 1))

    def tell(self) -> int:
        return 0


Source = FileSource | HubSource


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


# ---------------------------------------------------------------- file readers: binary file -> (line, row, problem)


def _too_large() -> str:
    return (f"the row is larger than {MAX_ROW_BYTES / 2**20:g} MB, the most one row may hold; split its text "
            "into several rows (it was skipped without being read)")


def _decode(raw: bytes) -> tuple[str, str | None]:
    """UTF-8 text of one row, and a problem when it holds bytes that are not UTF-8."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")
        return text, _bad_utf8(text)[1]


def _bad_utf8(text: str, start: int = 0, end: int | None = None) -> tuple[int, str] | None:
    """Offset and message of the first undecodable byte in text[start:end], if any."""
    found = _BAD_BYTE.search(text, start, len(text) if end is None else end)
    if found is None:
        return None
    byte = ord(found.group()) - 0xDC00
    return found.start(), (f"invalid UTF-8 (byte 0x{byte:02x}); re-save the file as UTF-8, "
                           "e.g. iconv -f GBK -t UTF-8 FILE > NEW_FILE")


def _parse(text: str) -> tuple[object, str | None]:
    """One JSON row, or the problem that keeps it from being one."""
    try:
        return json.loads(text), None
    except RecursionError:
        return None, _TOO_DEEP
    except json.JSONDecodeError as exc:
        return None, (f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                      "complete JSON object: fix the quotes or brackets, or delete the line")


_TOO_DEEP = ("the row nests lists or objects too deeply for a dataset row (deeper than Python's JSON parser "
             "allows); flatten it or delete the row")


def _lines(f: BinaryIO) -> Iterator[tuple[int, str | None, str | None]]:
    """(number, text, problem) per line; a line longer than MAX_ROW_BYTES is skipped unread, with a problem."""
    number = 0
    while raw := f.readline(MAX_ROW_BYTES + 1):
        number += 1
        if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
            while (rest := f.readline(READ_BLOCK)) and not rest.endswith(b"\n"):
                pass
            yield number, None, _too_large()
            continue
        text, problem = _decode(raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw)
        yield number, text, problem


def _jsonl_rows(f: BinaryIO) -> Iterator[Row]:
    """One JSON object per line; blank lines are not rows."""
    for number, text, problem in _lines(f):
        if problem is None and not text.strip():
            continue
        yield (number, None, problem) if problem else (number, *_parse(text))


def _txt_rows(f: BinaryIO) -> Iterator[Row]:
    """Each non-empty line is one document."""
    for number, text, problem in _lines(f):
        if problem is None:
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
        yield (number, None, problem) if problem else (number, {"text": text}, None)


def _json_rows(f: BinaryIO) -> Iterator[Row]:
    """A JSON list of rows, streamed (line = where each row starts), or one object per line."""
    text = _JsonText(f)
    pos = text.skip_space(0)
    if pos == len(text.buf):
        return
    if text.buf[pos] != "[":  # one object per line (JSONL in a .json file), but not one object in all
        if text.buf[pos] == "{":
            _refuse_single_object(text, pos, f.name)
        f.seek(0)
        yield from _jsonl_rows(f)
        return
    try:
        yield from _json_list(text, pos)
    except json.JSONDecodeError as exc:
        line, column = text.where(exc.pos)
        yield line, None, (f"JSON syntax error at line {line} column {column}: {exc.msg}; fix "
                           "the file there (the rows after it were not read)")


def _refuse_single_object(text: _JsonText, pos: int, name: str) -> None:
    """A .json file that is one object (not one object per line) holds no list of rows: say so."""
    row, end, problem = text.value(pos)
    if problem == _too_large() or (problem is None and text.skip_space(end) == len(text.buf)):
        lists = [key for key, value in (row or {}).items() if isinstance(value, list)]
        hint = f" (its key '{lists[0]}' holds a list: make that list the whole file)" if len(lists) == 1 else ""
        raise DataError(f"{name}: the file holds one JSON object, not a list of rows{hint}; write the rows as a "
                        'JSON list [{"...": ...}, {"...": ...}], or one object per line (JSONL)')


def _json_list(text: _JsonText, pos: int) -> Iterator[Row]:
    pos = text.skip_space(pos + 1)
    while not text.buf.startswith("]", pos):
        line = text.where(pos)[0]
        row, end, problem = text.value(pos)
        found = _bad_utf8(text.buf, pos, end) if problem is None else None
        if found:
            yield text.where(found[0])[0], None, found[1]
        else:
            yield line, row, problem
        pos = text.skip_space(end)
        if text.buf.startswith(",", pos):
            pos = text.skip_space(pos + 1)
            if text.buf.startswith("]", pos):
                raise json.JSONDecodeError("a comma before the closing ] (remove it)", text.buf, pos)
        elif not text.buf.startswith("]", pos):
            raise json.JSONDecodeError("Expecting ',' or ']' after a row", text.buf, pos)
        pos = text.drop(pos)
    rest = text.skip_space(pos + 1)
    if rest < len(text.buf):
        raise json.JSONDecodeError("Extra data after the closing ]", text.buf, rest)


class _JsonText:
    """The text of a JSON file read block by block, so that a list of rows is never held whole.

    `buf` holds the unread part; positions index into it. `drop(pos)` forgets what lies before
    pos and returns pos's new index; line and column numbers stay those of the file.
    """

    _DECODER = json.JSONDecoder()
    _TOKEN = re.compile(r'[\[\]{}"]')
    _STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)

    def __init__(self, f: BinaryIO):
        self.f, self.buf, self.eof = f, "", False
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.line, self.column = 1, 1  # of buf[0]
        self.counted, self.counted_line = 0, 1  # a position whose line is known, to count lines forward from
        self.read_more()
        self.buf = self.buf.removeprefix("\ufeff")

    def read_more(self, at_least: int = READ_BLOCK) -> bool:
        if self.eof:
            return False
        data = self.f.read(at_least)
        self.eof = len(data) < at_least
        self.buf += self.decoder.decode(data, final=self.eof)
        return bool(data)

    def skip_space(self, pos: int) -> int:
        while True:
            pos = _WHITESPACE.match(self.buf, pos).end()
            if pos < len(self.buf) or not self.read_more():
                return pos

    def where(self, pos: int) -> tuple[int, int]:
        """File line and column of buf[pos]."""
        if pos < self.counted:
            self.counted, self.counted_line = 0, self.line
        self.counted_line += self.buf.count("\n", self.counted, pos)
        self.counted = pos
        newline = self.buf.rfind("\n", 0, pos)
        return self.counted_line, (pos - newline if newline >= 0 else self.column + pos)

    def drop(self, pos: int) -> int:
        """Forget buf[:pos] once it is large; returns where pos is now."""
        if pos < READ_BLOCK:
            return pos
        self.line, column = self.where(pos)
        self.column, self.counted, self.counted_line = column, 0, self.line
        self.buf = self.buf[pos:]
        return 0

    def value(self, pos: int) -> tuple[object, int, str | None]:
        """(row, end, None), or (None, end, problem) for a row too large or too deep, skipped unread."""
        while True:
            try:
                row, end = self._DECODER.raw_decode(self.buf, pos)
                return (row, end, None) if end - pos <= MAX_ROW_BYTES else (None, end, _too_large())
            except RecursionError:
                return None, self.skip_value(pos), _TOO_DEEP
            except json.JSONDecodeError:
                if len(self.buf) - pos > MAX_ROW_BYTES:
                    return self._too_large_or_wrong(pos)
                if not self.read_more(max(READ_BLOCK, len(self.buf) - pos)):
                    raise

    def _too_large_or_wrong(self, pos: int) -> tuple[None, int, str]:
        """A row that did not parse though MAX_ROW_BYTES of it were read: a syntax error, or too large."""
        end = self.skip_value(pos, limit=pos + MAX_ROW_BYTES)
        if end is not None:
            self._DECODER.raw_decode(self.buf, pos)  # complete but not valid: raises the syntax error
        return None, self.skip_value(pos), _too_large()

    def skip_value(self, pos: int, limit: int | None = None) -> int | None:
        """The end of the object, list or string opening at pos (None: not before limit). Without a limit
        it reads on, forgetting what it passed, and returns the end's index in the buffer as it is then."""
        depth, at = 0, pos
        while limit is None or at < limit:
            token = self._TOKEN.search(self.buf, at)
            if token is None or (token.group() == '"' and not self._STRING_REST.match(self.buf, token.end())):
                if limit is not None:
                    return None
                at = self.drop(len(self.buf) if token is None else token.start())
                if not self.read_more(4 * READ_BLOCK):
                    return len(self.buf)
                continue
            at = token.end()
            if token.group() == '"':
                at = self._STRING_REST.match(self.buf, at).end()
            else:
                depth += 1 if token.group() in "[{" else -1
            if depth <= 0:
                return at
        return None


def _csv_rows(f: BinaryIO, delimiter: str) -> Iterator[Row]:
    """A header line, then one row per record (line = the file line where the row starts)."""
    csv.field_size_limit(MAX_ROW_BYTES)
    lines = _BoundedLines(io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline=""))
    reader = csv.reader(lines, delimiter=delimiter)
    header = None
    while True:
        start = lines.number + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except _LineTooLarge:
            yield lines.number, None, _too_large()
            continue
        except csv.Error as exc:
            yield lines.number, None, f"CSV syntax error: {exc}; fix the quoting there (the rest was not read)"
            return
        if header is None:
            header = fields
        elif fields:
            yield _csv_row(header, fields, start)


class _LineTooLarge(Exception):
    """Raised through csv.reader by _BoundedLines for a line over MAX_ROW_BYTES (already skipped)."""


class _BoundedLines:
    """The lines of a text file for csv.reader, counted, none longer than MAX_ROW_BYTES characters."""

    def __init__(self, text: io.TextIOWrapper):
        self.text, self.number = text, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.text.readline(MAX_ROW_BYTES + 1)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) > MAX_ROW_BYTES and not line.endswith(("\n", "\r")):
            while (rest := self.text.readline(READ_BLOCK)) and not rest.endswith(("\n", "\r")):
                pass
            raise _LineTooLarge
        return line


def _csv_row(header: list[str], fields: list[str], line: int) -> Row:
    if len(fields) != len(header):
        return line, None, (f"row has {len(fields)} fields but the header has {len(header)}; quote fields "
                            "that contain the delimiter, or fix the row")
    joined = "\x00".join(fields)
    found = _bad_utf8(joined)
    if found:
        return line + joined.count("\n", 0, found[0]), None, found[1]
    return line, dict(zip(header, fields)), None


def _parquet_rows(f: BinaryIO) -> Iterator[Row]:
    """Row by row, one batch of a row group at a time (line = the row number)."""
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(f).iter_batches(batch_size=PARQUET_BATCH)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{f.name}: cannot read it as Parquet ({exc}); check it is a complete Parquet file") from exc
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, row, None


def _reading(reader: Callable[[BinaryIO], Iterator[Row]]) -> Callable[[Path], Iterator[Row]]:
    def read(path: Path) -> Iterator[Row]:
        with open(path, "rb") as f:
            yield from reader(f)

    return read


_READERS: dict[str, Callable[[BinaryIO], Iterator[Row]]] = {
    ".json": _json_rows, ".jsonl": _jsonl_rows, ".csv": lambda f: _csv_rows(f, ","),
    ".tsv": lambda f: _csv_rows(f, "\t"), ".parquet": _parquet_rows, ".txt": _txt_rows,
}
READERS: dict[str, Callable[[Path], Iterator[Row]]] = {suffix: _reading(r) for suffix, r in _READERS.items()}



# ---------------------------------------------------------------- rows -> records


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
    if name == "function_call":
        return {"role": "assistant", "content": "", "tool_calls": _calls_from_text(content, number)}
    calls = _openai_calls(item["tool_calls"], number) if item.get("tool_calls") else None
    if content is None and calls:
        content = ""
    if not isinstance(content, str):
        raise BadRow(f"message {number} content must be a string, got {_short(content)}; put it in quotes")
    message = {"role": role, "content": content}
    if calls:
        message["tool_calls"] = calls
    for key in ("reasoning_content", "tool_call_id", "name"):
        if isinstance(item.get(key), str) and item[key]:
            message[key] = item[key]
    return normalize_message(message)


def _calls_from_text(value, number: int) -> list[dict]:
    """sharegpt function_call: {"name": ..., "arguments": {...}} as JSON, or a list of them."""
    try:
        found = json.loads(value) if isinstance(value, str) else value
        found = found if isinstance(found, list) else [found]
        return [tool_call(c["name"], c.get("arguments", c.get("parameters", {}))) for c in found]
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError):
        raise BadRow(f"message {number} (function_call) must be a JSON call like "
                      '{"name": "get_weather", "arguments": {"city": "Paris"}}; fix its JSON') from None


def _openai_calls(calls, number: int) -> list[dict]:
    try:
        return [tool_call(c["function"]["name"], c["function"].get("arguments", {}), c.get("id")) for c in calls]
    except (TypeError, KeyError, AttributeError):
        raise BadRow(f"message {number} tool_calls must look like "
                      '[{"type": "function", "function": {"name": ..., "arguments": ...}}]') from None


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
        if role in ("user", "assistant") and not (message["content"].strip() or message.get("tool_calls")):
            what = "answer" if role == "assistant" else "prompt"
            raise BadRow(f"message {number} ({role}) is empty; write the {what} or delete the row")
        previous = role
    if previous != "assistant":
        raise BadRow(f"the conversation ends with '{previous}', not an answer; sft needs a final "
                      "assistant answer: add it or drop the trailing messages")


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
        return normalize_tools([value])
    try:
        tools = _list(row, columns, "tools")
    except BadRow:
        raise BadRow(f"'{key}' must be a JSON list of function definitions (a list, or a string holding "
                      "one); fix its JSON") from None
    return normalize_tools(tools)


def _short(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
