"""Streamed readers: a file is read row by row (never whole), rows keep FILE:LINE, and a row too
large or too deeply nested is one bad row, not a crash; a .json file holding one object is refused."""

import json

import pytest

from tunekit.config import DatasetSpec
from tunekit.data import formats
from tunekit.data.formats import FileSource, load_one, read_source
from tunekit.errors import DataError


def lines_of(result) -> list[int]:
    return [int(r.source.rsplit(":", 1)[1]) for r in result.records]


def problems_of(result) -> dict[int, str]:
    return {p.line: p.message for p in result.problems}


ROWS = [{"instruction": f"question {i} 问题", "output": f"answer {i}\n" * (i % 4 + 1)} for i in range(40)]


@pytest.mark.parametrize("block", [3, 17, 1 << 20])
def test_json_list_in_small_blocks_gives_every_row_at_its_line(tmp_path, monkeypatch, block):
    monkeypatch.setattr(formats, "READ_BLOCK", block)
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(ROWS, ensure_ascii=False, indent=2), encoding="utf-8")
    minified = tmp_path / "one_line.json"
    minified.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    starts = [n for n, line in enumerate(pretty.read_text(encoding="utf-8").split("\n"), 1) if line == "  {"]

    for path, expected_lines in ((pretty, starts), (minified, [1] * len(ROWS))):
        result = load_one(DatasetSpec(str(path)), "sft")
        assert not result.problems and lines_of(result) == expected_lines
        assert [c.messages[1]["content"] for c in result.records] == [r["output"] for r in ROWS]


def test_json_syntax_error_found_across_blocks_keeps_line_and_column(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "READ_BLOCK", 5)
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c",\n   "output": "d" "x"}\n]\n')
    result = load_one(DatasetSpec(str(path)), "sft")
    assert len(result.records) == 1
    assert [str(p) for p in result.problems] == [f"{path}:4: JSON syntax error at line 4 column 18: Expecting ',' "
                                                 "delimiter; fix the file there (the rows after it were not read)"]


@pytest.mark.parametrize("suffix, write", [
    (".jsonl", lambda rows: "".join(json.dumps(r) + "\n" for r in rows)),
    (".json", lambda rows: json.dumps(rows, indent=1)),
    (".csv", lambda rows: "text\n" + "".join(f'"{r["text"]}"\n' for r in rows)),
    (".txt", lambda rows: "".join(r["text"] + "\n" for r in rows)),
])
def test_reading_the_first_row_does_not_read_the_whole_file(tmp_path, suffix, write):
    rows = [{"text": f"document number {i} " + "x" * 200} for i in range(20_000)]  # about 4.5 MB
    path = tmp_path / f"big{suffix}"
    path.write_text(write(rows), encoding="utf-8")
    source = FileSource(path)
    items = read_source(source, DatasetSpec(str(path)), "pt")
    first = next(items)
    assert first.text == rows[0]["text"] and first.source == f"{path}:{2 if suffix in ('.json', '.csv') else 1}"
    assert 0 < source.tell() <= formats.READ_BLOCK + 65536 < source.size / 3
    assert sum(1 for _ in items) == len(rows) - 1 and source.tell() == source.size


def test_parquet_is_read_batch_by_batch_with_row_numbers(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(formats, "PARQUET_BATCH", 10)
    path = tmp_path / "d.parquet"
    texts = [f"doc {i}" if i != 25 else "" for i in range(60)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=20)
    seen = []
    real = pq.ParquetFile.iter_batches

    def counted(self, **kwargs):
        for batch in real(self, **kwargs):
            seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counted)
    result = load_one(DatasetSpec(str(path)), "pt")
    assert seen == [10] * 6 and len(result.records) == 59
    assert str(result.problems[0]) == f"{path}:26: row 26: 'text' is empty; delete the row or fill in its text"


# ---------------------------------------------------------------- issue 13: one object, huge rows, deep nesting


@pytest.mark.parametrize("text, hint", [
    ('{\n  "instruction": "a",\n  "output": "b"\n}\n', ""),
    ('{"instruction": "a", "output": "b"}', ""),
    ('{"data": [{"instruction": "a", "output": "b"}], "version": 2}', "its key 'data' holds a list"),
])
def test_a_json_file_holding_one_object_is_refused(tmp_path, text, hint):
    path = tmp_path / "one.json"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"{path}: the file holds one JSON object, not a list of rows.*{hint}.*"
                                        r"JSON list \[.*or one object per line \(JSONL\)"):
        load_one(DatasetSpec(str(path)), "sft")


def test_a_json_file_with_one_object_per_line_is_still_read(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "response": "d"}\n')
    assert lines_of(load_one(DatasetSpec(str(path)), "sft")) == [1, 3]


def too_large_files(tmp_path, big: str):
    small = {"text": "fine"}
    yield "d.jsonl", json.dumps(small) + "\n" + json.dumps({"text": big}) + "\n" + json.dumps(small) + "\n", 2, 3
    yield "d.txt", f"fine\n{big}\nfine\n", 2, 3
    yield "d.csv", f"text\nfine\n{big}\nfine\n", 3, 4
    yield "d.json", json.dumps([small, {"text": big}, small], indent=1), 5, 8
    yield "one_line.json", json.dumps([small, {"text": big}, small]), 1, 1


def test_a_row_over_the_size_limit_is_one_bad_row_at_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "MAX_ROW_BYTES", 4000)
    monkeypatch.setattr(formats, "READ_BLOCK", 256)
    for name, text, bad_line, last_line in too_large_files(tmp_path, "y" * 9000):
        path = tmp_path / name
        path.write_text(text)
        result = load_one(DatasetSpec(str(path)), "pt")
        assert [r.text for r in result.records] == ["fine", "fine"], name
        assert lines_of(result)[-1] == last_line, name
        assert [p.line for p in result.problems] == [bad_line], name
        assert "larger than 0.0038147 MB, the most one row may hold; split its text" in result.problems[0].message


def test_a_50_mb_row_is_refused_quickly_and_the_next_row_is_read(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as f:
        f.write('{"instruction": "' + "x" * (50 << 20) + '", "output": "y"}\n{"instruction": "q", "output": "a"}\n')
    result = load_one(DatasetSpec(str(path)), "sft")
    assert lines_of(result) == [2]
    assert [p.line for p in result.problems] == [1] and "larger than 16 MB" in result.problems[0].message


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_200000_deep_nesting_is_a_bad_row_not_a_recursion_error(tmp_path, suffix):
    deep = "[" * 200_000 + "]" * 200_000
    good = '{"instruction": "q", "output": "a"}'
    path = tmp_path / f"deep{suffix}"
    path.write_text(f"{good}\n{{\"instruction\": {deep}, \"output\": \"a\"}}\n{good}\n" if suffix == ".jsonl"
                    else f"[\n{good},\n{{\"instruction\": {deep}, \"output\": \"a\"}},\n{good}\n]")
    result = load_one(DatasetSpec(str(path)), "sft")
    assert lines_of(result) == [1, 3] if suffix == ".jsonl" else [2, 4]
    assert [p.line for p in result.problems] == [2 if suffix == ".jsonl" else 3]
    assert "nests lists or objects too deeply" in result.problems[0].message
