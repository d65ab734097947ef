"""Dataset readers: every format and file type -> records, and every bad row -> FILE:LINE problem."""

import json
from pathlib import Path

import pytest

from helpers import FIXTURES

from tunekit.config import DatasetSpec
from tunekit.data.formats import detect_format, load_one, load_records, source_files
from tunekit.data.records import Conversation, TextRecord
from tunekit.errors import DataError

SHARED = Path("/work/shared/data")
FORMATS = FIXTURES / "formats"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared sample data not present")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(result) -> dict[int, str]:
    return {p.line: p.message for p in result.problems}


def roles(conv: Conversation) -> list[str]:
    return [m["role"] for m in conv.messages]


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Tests never reach the network: a hub load fails loudly unless a test replaces it."""
    import datasets

    def refuse(*args, **kwargs):
        pytest.fail("a test tried to load a hub dataset")  # BaseException: not wrapped as DataError

    monkeypatch.setattr(datasets, "load_dataset", refuse)


# ---------------------------------------------------------------- real sample files


@needs_shared
def test_alpaca_zh_demo_reads_every_row_with_object_start_lines():
    result = load_one(DatasetSpec(str(SHARED / "alpaca_zh_demo.json")), "sft")
    assert (len(result.records), result.rows_read, result.problems) == (1000, 1000, [])
    first, second = result.records[:2]
    assert first.source.endswith("alpaca_zh_demo.json:2") and second.source.endswith("alpaca_zh_demo.json:7")
    assert second.messages == [
        {"role": "user", "content": "输入三支篮球队的名称并生成一个适当的口号。\n输入：俄克拉荷马城雷霆队，芝加哥公牛队，布鲁克林网队。"},
        {"role": "assistant", "content": '输出： "雷霆，公牛和网队：各显神通，角逐群雄!"'},
    ]


@needs_shared
def test_glaive_toolcall_maps_roles_and_parses_tools():
    result = load_one(DatasetSpec(str(SHARED / "glaive_toolcall_zh_demo.json")), "sft")
    assert (len(result.records), result.problems) == (300, [])
    first = result.records[0]
    assert roles(first) == ["user", "assistant", "tool", "assistant"]
    call = first.messages[1]["tool_calls"][0]
    assert first.messages[1]["content"] == "" and call["type"] == "function"
    assert call["function"]["name"] == "generate_invoice"
    assert call["function"]["arguments"]["customer_name"] == "约翰·多伊"  # a dict, as templates expect
    assert [t["function"]["name"] for t in first.tools] == ["generate_invoice", "generate_password"]
    assert {t["type"] for t in first.tools} == {"function"}


@needs_shared
def test_pretraining_text_from_jsonl_and_txt_lines():
    c4 = load_one(DatasetSpec(str(SHARED / "c4_demo.jsonl")), "pt")
    wiki = load_one(DatasetSpec(str(SHARED / "wiki_demo.txt")), "pt")
    assert len(c4.records) == 300 and all(isinstance(r, TextRecord) for r in c4.records)
    assert c4.records[0].text.startswith("Don’t think you need all the bells")
    assert len(wiki.records) == 30 and wiki.records[0].text.startswith("Anarchism is a political philosophy")
    assert wiki.records[29].source.endswith("wiki_demo.txt:30")


@needs_shared
def test_sft_refuses_plain_text():
    with pytest.raises(DataError, match="stage sft trains on conversations.*train.stage: pt"):
        load_one(DatasetSpec(str(SHARED / "c4_demo.jsonl")), "sft")


# ---------------------------------------------------------------- bad rows, each at its line


def test_alpaca_bad_rows_are_reported_at_their_lines():
    result = load_one(DatasetSpec(str(FORMATS / "alpaca_mixed.json")), "sft")
    assert result.rows_read == 6 and len(result.records) == 2
    found = problems_of(result)
    assert sorted(found) == [3, 4, 8, 9]
    assert "missing 'output'" in found[3] and "columns:" in found[3]
    assert "'instruction' must be a string, got int 42" in found[4]
    assert "history must be a list of [question, answer] string pairs" in found[8]
    assert "'output' is empty; write the answer" in found[9]
    assert str(result.problems[0]).endswith("alpaca_mixed.json:3: " + found[3])
    assert result.records[1].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "with input\nctx"}, {"role": "assistant", "content": "fine"},
    ]


def test_sharegpt_bad_rows_are_reported_at_their_lines():
    result = load_one(DatasetSpec(str(FORMATS / "sharegpt_mixed.jsonl")), "sft")
    found = problems_of(result)
    assert sorted(found) == [2, 3, 4, 5, 7, 8, 9]
    assert "unknown role 'bot'" in found[2] and "human, user, gpt" in found[2]
    assert "message 2 is 'user' but follows 'user'" in found[3]
    assert "ends with 'user'" in found[4] and "final assistant answer" in found[4]
    assert "message 2 is 'tool' but follows 'user'" in found[5]
    assert "not valid JSON" in found[7] and "column" in found[7]
    assert "not an object" in found[8]
    assert "'tools' must be a JSON list" in found[9]
    assert result.rows_read == 9  # the blank line 6 is not a row
    good, own_system = result.records
    assert roles(good) == ["user", "assistant", "tool", "assistant"] and good.tools == [
        {"type": "function", "function": {"name": "w", "description": "weather"}}]
    assert own_system.messages[0] == {"role": "system", "content": "own system"}
    assert own_system.source.endswith("sharegpt_mixed.jsonl:10")


def test_json_syntax_error_reports_line_and_column_and_keeps_earlier_rows(tmp_path):
    path = write(tmp_path / "broken.json", '[\n  {"instruction": "a", "output": "b"},\n'
                                           '  {"instruction": "c",\n   "output": "d" "x"}\n]\n')
    result = load_one(DatasetSpec(str(path)), "sft")
    assert len(result.records) == 1
    [problem] = result.problems
    assert problem.line == 4 and "JSON syntax error at line 4 column 18" in problem.message


def test_json_trailing_comma_is_a_syntax_problem(tmp_path):
    path = write(tmp_path / "comma.json", '[\n{"prompt": "a", "response": "b"},\n]')
    result = load_one(DatasetSpec(str(path)), "sft")
    assert len(result.records) == 1
    assert result.problems[0].line == 3 and "comma before the closing ]" in result.problems[0].message


def test_invalid_utf8_line_is_reported_and_the_rest_is_read(tmp_path):
    path = tmp_path / "gbk.jsonl"
    good = '{"instruction": "q", "output": "a"}\n'.encode()
    path.write_bytes(good + '{"instruction": "问", "output": "答"}\n'.encode("gbk") + good)
    result = load_one(DatasetSpec(str(path)), "sft")
    assert len(result.records) == 2 and result.records[1].source.endswith("gbk.jsonl:3")
    assert result.problems[0].line == 2 and "invalid UTF-8" in result.problems[0].message


def test_invalid_utf8_inside_a_json_list_points_at_its_line(tmp_path):
    path = tmp_path / "gbk.json"
    path.write_bytes(b'[\n {"instruction": "q", "output": "a"},\n {"instruction": "q",\n  "output": "'
                     + "答".encode("gbk") + b'"},\n {"instruction": "z", "output": "y"}\n]')
    result = load_one(DatasetSpec(str(path)), "sft")
    assert [r.source.rsplit(":", 1)[1] for r in result.records] == ["2", "5"]
    assert result.problems[0].line == 4 and "re-save the file as UTF-8" in result.problems[0].message


def test_empty_file_is_a_dataset_error_alone_and_a_problem_in_a_folder(tmp_path):
    write(tmp_path / "a_empty.jsonl", "\n\n")
    with pytest.raises(DataError, match="has no rows.*a_empty.jsonl:1: the file has no rows"):
        load_one(DatasetSpec(str(tmp_path / "a_empty.jsonl")), "sft")
    write(tmp_path / "b.jsonl", '{"prompt": "p", "response": "r"}\n')
    result = load_one(DatasetSpec(str(tmp_path)), "sft")
    assert len(result.records) == 1 and str(result.problems[0]).endswith("a_empty.jsonl:1: the file has no "
                                                                            "rows; add rows or remove it from "
                                                                            "the dataset")


def test_openai_messages_with_tools_and_tool_calls(tmp_path):
    row = {"messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}]},
        {"role": "tool", "content": "4"},
        {"role": "assistant", "content": "4"}], "tools": [{"name": "add"}]}
    path = write(tmp_path / "chat.jsonl", json.dumps(row) + "\n" + json.dumps({"messages": [
        {"role": "assistant", "content": "hi"}]}) + "\n")
    result = load_one(DatasetSpec(str(path), system="Be exact."), "sft")
    conv = result.records[0]
    assert roles(conv) == ["system", "user", "assistant", "tool", "assistant"]
    assert conv.tools == [{"type": "function", "function": {"name": "add"}}]
    assert conv.messages[2] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]}
    assert conv.messages[3] == {"role": "tool", "content": "4"}
    assert "message 1 is 'assistant' but opens the conversation" in problems_of(result)[2]


def test_reasoning_from_a_field_or_inline_think_and_bad_calls(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": "<think>\nstep 1\n</think>\n\nanswer"}]},
            {"messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": "answer", "reasoning_content": "step 1"}]},
            {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{oops"}]}]
    path = write(tmp_path / "r.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    result = load_one(DatasetSpec(str(path), format="auto"), "sft")
    inline, field = (c.messages[1] for c in result.records[:2])
    assert inline == {"role": "assistant", "content": "answer", "reasoning_content": "step 1"}
    assert field == inline
    sharegpt = load_one(DatasetSpec(str(write(tmp_path / "s.jsonl", json.dumps(rows[2]) + "\n"))), "sft")
    assert "message 2 (function_call) must be a JSON call" in str(sharegpt.problems[0])


# ---------------------------------------------------------------- formats, mappings, options


@pytest.mark.parametrize("row, expected", [
    ({"instruction": "", "input": "", "output": ""}, "alpaca"),
    ({"instruct": "", "query": "", "answer": ""}, "instruct"),
    ({"prompt": "", "response": ""}, "prompt_response"),
    ({"conversations": []}, "sharegpt"),
    ({"messages": []}, "openai"),
    ({"sentence": ""}, "text"),
])
def test_detect_format(row, expected):
    assert detect_format(row) == expected


def test_undetectable_format_names_the_keys_and_the_fix(tmp_path):
    path = write(tmp_path / "qa.jsonl", '{"q": "a", "a": "b"}\n')
    with pytest.raises(DataError, match=r"qa.jsonl:1: .*keys \(a, q\).*alpaca \{instruction.*Set format:.*columns:"):
        load_one(DatasetSpec(str(path)), "sft")


def test_prompt_response_with_column_mapping_and_system(tmp_path):
    path = write(tmp_path / "qa.jsonl", '{"q": "hi", "a": "hello"}\n{"q": "x", "a": "y", "system": "own"}\n')
    result = load_one(DatasetSpec(str(path), columns={"prompt": "q", "response": "a"}, system="default"), "sft")
    assert [r.messages for r in result.records] == [
        [{"role": "system", "content": "default"}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "hello"}],
        [{"role": "system", "content": "own"}, {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
    ]


def test_instruct_query_answer_and_forced_format(tmp_path):
    path = write(tmp_path / "ner.jsonl", '{"instruct": "find names", "query": "Tom ran", "answer": "Tom"}\n'
                                         '{"instruct": "find names", "query": "", "answer": "none"}\n')
    result = load_one(DatasetSpec(str(path)), "sft")
    assert [r.messages[0]["content"] for r in result.records] == ["find names\nTom ran", "find names"]
    forced = load_one(DatasetSpec(str(path), format="alpaca"), "sft")
    assert forced.records == [] and "missing 'instruction'" in forced.problems[0].message


def test_csv_lines_count_quoted_newlines_and_bad_field_counts(tmp_path):
    path = write(tmp_path / "d.csv", 'instruction,input,output\n"two\nlines",,a\nshort,row\nq,,b\n')
    result = load_one(DatasetSpec(str(path)), "sft")
    assert [r.source.rsplit(":", 1)[1] for r in result.records] == ["2", "5"]
    assert result.records[0].messages[0]["content"] == "two\nlines"
    assert problems_of(result)[4].startswith("row has 2 fields but the header has 3")


def test_parquet_rows_and_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["first doc", "", "third doc"]}), path)
    result = load_one(DatasetSpec(str(path)), "pt")
    assert [r.text for r in result.records] == ["first doc", "third doc"]
    assert str(result.problems[0]) == f"{path}:2: row 2: 'text' is empty; delete the row or fill in its text"


def test_pt_needs_a_text_column_or_a_mapping(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"instruction": "q", "output": "a"}\n')
    with pytest.raises(DataError, match=r"stage pt reads a text column.*keys: instruction, output.*columns: \{text:"):
        load_one(DatasetSpec(str(path)), "pt")
    mapped = load_one(DatasetSpec(str(path), columns={"text": "output"}), "pt")
    assert [r.text for r in mapped.records] == ["a"]


def test_max_samples_keeps_the_first_good_rows_and_stops_reading(tmp_path):
    path = write(tmp_path / "d.jsonl", "oops\n" + "".join(f'{{"text": "doc {i}"}}\n' for i in range(10)))
    result = load_one(DatasetSpec(str(path), max_samples=3), "pt")
    assert [r.text for r in result.records] == ["doc 0", "doc 1", "doc 2"]
    assert result.rows_read == 4 and result.problems[0].line == 1


def test_folder_glob_and_mixing_keep_order(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    write(folder / "b.txt", "two\n")
    write(folder / "a.jsonl", '{"content": "one"}\n')
    write(folder / "notes.md", "not data\n")
    assert source_files(DatasetSpec(str(folder))) == [folder / "a.jsonl", folder / "b.txt"]
    assert source_files(DatasetSpec(str(folder / "*.txt"))) == [folder / "b.txt"]
    extra = write(tmp_path / "c.csv", "sentence\nthree\n")
    result = load_records([DatasetSpec(str(folder)), DatasetSpec(str(extra))], "pt")
    assert [r.text for r in result.records] == ["one", "two", "three"] and result.rows_read == 3


# ---------------------------------------------------------------- whole-dataset failures and the hub


@pytest.mark.parametrize("path", ["data/nope.json", "./missing", "data/*.jsonl"])
def test_missing_local_paths_are_not_found(path):
    with pytest.raises(DataError, match="not found"):
        load_one(DatasetSpec(path), "sft")


def test_unknown_extension(tmp_path):
    path = write(tmp_path / "d.xlsx", "x")
    with pytest.raises(DataError, match=r"unknown file type '.xlsx'.*\.json, \.jsonl"):
        load_one(DatasetSpec(str(path)), "sft")


def test_hub_name_loads_through_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"instruction": "q", "output": "a"}, {"instruction": "q", "output": ""}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    spec = DatasetSpec("someone/tiny", subset="zh", split="train[:2]")
    result = load_one(spec, "sft")
    assert calls == [("someone/tiny", "zh", "train[:2]")] and source_files(spec) == []
    assert len(result.records) == 1 and str(result.problems[0]).startswith("someone/tiny:2: row 2: 'output' is empty")


def test_json_file_with_one_object_per_line_and_tsv(tmp_path):
    lines = write(tmp_path / "lines.json", '{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n')
    tsv = write(tmp_path / "d.tsv", "prompt\tresponse\nx, y\tz\n")
    result = load_records([DatasetSpec(str(lines)), DatasetSpec(str(tsv))], "sft")
    assert [r.messages[0]["content"] for r in result.records] == ["a", "c", "x, y"]
    assert result.records[1].source.endswith("lines.json:2") and result.records[2].source.endswith("d.tsv:2")
