"""Bad inputs, as a table: each one through `tunekit data check` and `tunekit train`.

Every row is a dataset file (or several) and config settings a careless user could write. Both
commands must exit 1 (or `data check` 0 where only training cares), print one `error:` line or
FILE:LINE problems matching the row's pattern, raise no traceback, and leave nothing half-written:
the run directory is not created and the cache holds no hidden temporary entry. Rows with bad
dataset rows are also checked for the full list of problems in the file the report names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from reliability_helpers import hidden_leftovers, run_cli

GOOD = {"instruction": "say hi", "output": "hi"}
ROW_REFUSED = r"error: \d+ bad dataset rows? \(shown above; full list in .*\).*data\.skip_bad_rows=true"


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


@dataclass
class Case:
    id: str
    files: dict  # name -> text or bytes, written into the case folder
    check: str  # regex the output of `data check` must match (stdout + stderr)
    train: str  # regex the stderr of `train` must match
    config: dict = field(default_factory=dict)  # section -> {key: value}, merged over the base config
    lines: list[int] = field(default_factory=list)  # FILE:LINE numbers the problem list must hold (data.jsonl)
    check_code: int = 1
    yaml_text: str | None = None  # the config file verbatim (for YAML-level mistakes)


def bad_rows(id, *rows, lines, pattern, name="data.jsonl", **extra) -> Case:
    text = jsonl(GOOD, *rows) if name.endswith(".jsonl") else rows[0]
    return Case(id, {name: text}, check=pattern, train=ROW_REFUSED, lines=lines,
                config={"data": {"datasets": [name]}} if name != "data.jsonl" else {}, **extra)


def sharegpt(*turns) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in turns]}


def messages(*msgs) -> dict:
    return {"messages": list(msgs)}


DATA_CASES = [
    bad_rows("empty-answer", {"instruction": "q", "output": ""}, lines=[2], pattern=r"data\.jsonl:2: .*empty"),
    bad_rows("broken-json-line", "{broken", lines=[2], pattern=r"data\.jsonl:2: .*JSON"),
    bad_rows("row-is-a-string", '"just text"', lines=[2], pattern=r"data\.jsonl:2: "),
    bad_rows("row-is-a-list", "[1, 2]", lines=[2], pattern=r"data\.jsonl:2: "),
    bad_rows("row-is-null", "null", lines=[2], pattern=r"data\.jsonl:2: "),
    bad_rows("instruction-not-string", {"instruction": 3, "output": "y"}, lines=[2],
             pattern=r"data\.jsonl:2: .*must be a string"),
    bad_rows("missing-output", {"instruction": "q"}, lines=[2], pattern=r"data\.jsonl:2: .*output"),
    bad_rows("history-half-pair", {"instruction": "x", "output": "y", "history": [["only one"]]}, lines=[2],
             pattern=r"data\.jsonl:2: .*history"),
    bad_rows("history-not-a-list", {"instruction": "x", "output": "y", "history": 5}, lines=[2],
             pattern=r"data\.jsonl:2: .*history"),
    bad_rows("history-empty-answer", {"instruction": "x", "output": "y", "history": [["q", ""]]}, lines=[2],
             pattern=r"data\.jsonl:2: .*history"),
    bad_rows("system-not-string", {"instruction": "x", "output": "y", "system": ["a"]}, lines=[2],
             pattern=r"data\.jsonl:2: .*system"),
    bad_rows("two-bad-rows", {"instruction": "", "output": "y"}, {"instruction": "x", "output": 7}, lines=[2, 3],
             pattern=r"data\.jsonl:2: .*\n.*data\.jsonl:3: "),
    Case("invalid-utf8", {"data.jsonl": jsonl(GOOD).encode() + b'{"instruction": "\xff\xfe", "output": "y"}\n'},
         check=r"data\.jsonl:2: .*UTF-8", train=ROW_REFUSED, lines=[2]),
    Case("sharegpt-unknown-role", {"data.jsonl": jsonl(sharegpt(("human", "q"), ("gpt", "a")),
                                                       sharegpt(("human", "q"), ("robot", "a")))},
         check=r"data\.jsonl:2: .*unknown role 'robot'", train=ROW_REFUSED, lines=[2]),
    Case("sharegpt-ends-with-user", {"data.jsonl": jsonl(sharegpt(("human", "q"), ("gpt", "a")),
                                                         sharegpt(("human", "q"), ("gpt", "a"), ("human", "b")))},
         check=r"data\.jsonl:2: .*ends with", train=ROW_REFUSED, lines=[2]),
    Case("sharegpt-out-of-order", {"data.jsonl": jsonl(sharegpt(("human", "q"), ("gpt", "a")),
                                                       sharegpt(("gpt", "a"), ("human", "q"), ("gpt", "a")))},
         check=r"data\.jsonl:2: .*out of order", train=ROW_REFUSED, lines=[2]),
    Case("sharegpt-empty-list", {"data.jsonl": jsonl(sharegpt(("human", "q"), ("gpt", "a")), {"conversations": []})},
         check=r"data\.jsonl:2: .*missing or empty", train=ROW_REFUSED, lines=[2]),
    Case("sharegpt-bad-tools", {"data.jsonl": jsonl(sharegpt(("human", "q"), ("gpt", "a")),
                                                    {**sharegpt(("human", "q"), ("gpt", "a")), "tools": "not json"})},
         check=r"data\.jsonl:2: .*tools", train=ROW_REFUSED, lines=[2]),
    Case("openai-content-number", {"data.jsonl": jsonl(
        messages({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}),
        messages({"role": "user", "content": "q"}, {"role": "assistant", "content": 5}))},
         check=r"data\.jsonl:2: .*content must be a string", train=ROW_REFUSED, lines=[2]),
    Case("openai-message-not-object", {"data.jsonl": jsonl(
        messages({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}),
        messages("hello", {"role": "assistant", "content": "a"}))},
         check=r"data\.jsonl:2: .*message 1", train=ROW_REFUSED, lines=[2]),
    Case("openai-empty-assistant", {"data.jsonl": jsonl(
        messages({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}),
        messages({"role": "user", "content": "q"}, {"role": "assistant", "content": ""}))},
         check=r"data\.jsonl:2: .*empty", train=ROW_REFUSED, lines=[2]),
    Case("json-list-with-bad-item", {"data.json": json.dumps([GOOD, {"instruction": "q", "output": ""}, 3])},
         check=r"data\.json:\d+: ", train=ROW_REFUSED, config={"data": {"datasets": ["data.json"]}}),
    Case("csv-empty-text", {"data.csv": "text\nfirst document\n\"\"\n"}, check=r"data\.csv:3: .*empty",
         train=ROW_REFUSED, config={"data": {"datasets": ["data.csv"]}, "train": {"stage": "pt"}}),
    Case("many-bad-rows-listed-in-full", {"data.jsonl": jsonl(GOOD, *[{"instruction": f"q{i}", "output": ""}
                                                                      for i in range(30)])},
         check=r"\.\.\. and 10 more\n30 bad rows; full list in ", train=ROW_REFUSED, lines=list(range(2, 32))),
    Case("eval-set-bad-row", {"data.jsonl": jsonl(GOOD, GOOD), "eval.jsonl": jsonl(GOOD, {"instruction": "q"})},
         check=r"eval\.jsonl:2: .*output", train=ROW_REFUSED,
         config={"data": {"eval_datasets": ["eval.jsonl"]}}),
    # the whole file or set cannot be used
    Case("every-row-bad", {"data.jsonl": jsonl({"instruction": "q", "output": ""}, "{x")},
         check=r"error: no usable rows in .*data\.jsonl:1: ", train=r"error: no usable rows in .*data\.jsonl:1: "),
    Case("empty-file", {"data.jsonl": ""}, check=r"error: dataset .*data\.jsonl has no rows",
         train=r"error: dataset .*data\.jsonl has no rows"),
    Case("unknown-extension", {"data.xml": "<rows/>"}, check=r"error: .*data\.xml: unknown file type '\.xml'",
         train=r"error: .*unknown file type", config={"data": {"datasets": ["data.xml"]}}),
    Case("missing-file", {}, check=r"error: dataset .*nothere\.jsonl not found", train=r"error: dataset .* not found",
         config={"data": {"datasets": ["./nothere.jsonl"]}}),
    Case("folder-without-data", {"sub/readme.md": "x"}, check=r"error: folder .*sub has no dataset files",
         train=r"error: folder .* has no dataset files", config={"data": {"datasets": ["sub"]}}),
    Case("glob-matches-nothing", {}, check=r"error: dataset .*\*\.jsonl not found", train=r"error: dataset .* not found",
         config={"data": {"datasets": ["nope/*.jsonl"]}}),
    Case("unknown-row-shape", {"data.jsonl": jsonl({"foo": 1, "bar": 2})},
         check=r"error: .*cannot tell the dataset format", train=r"error: .*cannot tell the dataset format"),
    Case("column-mapping-to-missing-key", {"data.jsonl": jsonl({"q": "a", "a": "b"})},
         check=r"(data\.jsonl:1: .*missing 'question'|error: .*question)", train=r"error: .*question",
         config={"data": {"datasets": [{"path": "data.jsonl", "columns": {"prompt": "question", "response": "a"}}]}}),
    Case("nothing-fits-cutoff", {"data.jsonl": jsonl(*[{"instruction": "word " * 40, "output": "answer " * 5}] * 2)},
         check=r"error: no sample fits data\.cutoff_len=8.*raise data\.cutoff_len",
         train=r"error: no sample fits data\.cutoff_len=8", config={"data": {"cutoff_len": 8}}),
]

SETTING_CASES = [
    Case("lr-negative", {}, check=r"error: train\.learning_rate is -0\.1: give a positive number",
         train=r"error: train\.learning_rate is -0\.1", config={"train": {"learning_rate": -0.1}}),
    Case("lr-nan", {}, check=r"error: train\.learning_rate is nan", train=r"error: train\.learning_rate is nan",
         config={"train": {"learning_rate": ".nan"}}),
    Case("batch-size-0", {}, check=r"error: train\.batch_size is 0: give at least 1",
         train=r"error: train\.batch_size is 0", config={"train": {"batch_size": 0}}),
    Case("grad-accum-negative", {}, check=r"error: train\.grad_accum is -2: give at least 1",
         train=r"error: train\.grad_accum is -2", config={"train": {"grad_accum": -2}}),
    Case("logging-steps-0", {}, check=r"error: train\.logging_steps is 0", train=r"error: train\.logging_steps is 0",
         config={"train": {"logging_steps": 0}}),
    Case("save-steps-0", {}, check=r"error: train\.save_steps is 0", train=r"error: train\.save_steps is 0",
         config={"train": {"save_steps": 0}}),
    Case("eval-steps-0", {}, check=r"error: train\.eval_steps is 0", train=r"error: train\.eval_steps is 0",
         config={"train": {"eval_steps": 0}}),
    Case("lora-r-0", {}, check=r"error: method\.lora_r is 0: the LoRA rank must be at least 1",
         train=r"error: method\.lora_r is 0", config={"method": {"lora_r": 0}}),
    Case("lora-dropout-above-1", {}, check=r"error: method\.lora_dropout is 1\.5", train=r"error: method\.lora_dropout",
         config={"method": {"lora_dropout": 1.5}}),
    Case("warmup-nan", {}, check=r"error: train\.warmup_steps is nan", train=r"error: train\.warmup_steps is nan",
         config={"train": {"warmup_steps": ".nan"}}),
    Case("no-epochs-no-steps", {}, check=r"error: set train\.num_epochs > 0 or train\.max_steps > 0",
         train=r"error: set train\.num_epochs", config={"train": {"num_epochs": 0, "max_steps": -1}}),
    Case("val-size-larger-than-data", {"data.jsonl": jsonl(GOOD, GOOD, GOOD)},
         check=r"error: data\.val_size is 100, which holds out 100 of the 3 training samples",
         train=r"error: data\.val_size is 100.*give a smaller", config={"data": {"val_size": 100}}),
    Case("val-size-fraction-takes-all", {"data.jsonl": jsonl(GOOD, GOOD)},
         check=r"error: data\.val_size is 0\.9, which holds out 2 of the 2", train=r"error: data\.val_size is 0\.9",
         config={"data": {"val_size": 0.9}}),
    Case("val-size-negative", {}, check=r"error: data\.val_size must be >= 0", train=r"error: data\.val_size",
         config={"data": {"val_size": -1}}),
    Case("output-dir-is-a-file", {"taken.txt": "x"}, check=r"rows read: 1", check_code=0,
         train=r"error: train\.output_dir .*taken\.txt is a file, not a folder", config={"train": {"output_dir": "taken.txt"}}),
    Case("model-empty-folder", {"emptymodel/.keep": ""},
         check=r"error: model\.name_or_path .*emptymodel is a folder without a model",
         train=r"error: model\.name_or_path .*emptymodel is a folder without a model",
         config={"model": {"name_or_path": "emptymodel"}}),
    Case("model-missing-local-path", {}, check=r"error: model\.name_or_path \./models/nope does not exist",
         train=r"error: model\.name_or_path \./models/nope does not exist(?!.*[Rr]epo id)",
         config={"model": {"name_or_path": "./models/nope"}}),
    Case("model-is-a-file", {"weights.bin": "x"}, check=r"error: model\.name_or_path .*weights\.bin is a file",
         train=r"error: model\.name_or_path .*is a file", config={"model": {"name_or_path": "weights.bin"}}),
    Case("unknown-key", {}, check=r"error: unknown key 'train\.learning_rte' \(did you mean 'learning_rate'\?\)",
         train=r"error: unknown key 'train\.learning_rte'", config={"train": {"learning_rte": 1e-4}}),
    Case("wrong-type", {}, check=r"error: 'train\.batch_size' must be int, got 'four'",
         train=r"error: 'train\.batch_size' must be int", config={"train": {"batch_size": "four"}}),
    Case("missing-template-file", {}, check=r"error: .*missing\.jinja", train=r"error: .*missing\.jinja",
         config={"model": {"template": "missing.jinja"}}),
    Case("missing-deepspeed-config", {}, check=r"rows read: 1", check_code=0,
         train=r"error: train\.deepspeed: .*ds\.json is not a file", config={"train": {"deepspeed": "ds.json"}}),
    Case("section-written-twice", {}, check=r"error: .*not valid YAML: .*'train' is written twice",
         train=r"error: .*'train' is written twice", yaml_text="train: {max_steps: 2}\ntrain: {batch_size: 1}\n"),
    Case("key-written-twice", {}, check=r"error: .*'max_steps' is written twice.*merge the two",
         train=r"error: .*'max_steps' is written twice", yaml_text="train:\n  max_steps: 2\n  max_steps: 3\n"),
]

CASES = DATA_CASES + SETTING_CASES


def write_case(case: Case, folder: Path, model_dir: Path, cache: Path) -> Path:
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    if "data.jsonl" not in case.files and not any(n.startswith("data.") for n in case.files):
        (folder / "data.jsonl").write_text(jsonl(GOOD), encoding="utf-8")
    raw = {"model": {"name_or_path": str(model_dir)},
           "data": {"datasets": ["data.jsonl"], "cutoff_len": 64, "cache_dir": str(cache)},
           "method": {"name": "lora", "lora_r": 4},
           "train": {"output_dir": "run", "max_steps": 1, "report_to": []}}
    for section, values in case.config.items():
        raw.setdefault(section, {}).update(values)
    for section in ("train", "model"):  # paths relative to the case folder
        for key in ("output_dir", "name_or_path", "deepspeed"):
            value = raw[section].get(key)
            if isinstance(value, str) and not value.startswith(".") and (folder / value).exists():
                raw[section][key] = str(folder / value)
    text = yaml.safe_dump(raw, allow_unicode=True)
    if case.yaml_text is not None:
        text = case.yaml_text.replace("train:", f"model: {{name_or_path: {model_dir}}}\ntrain:", 1)
    config = folder / "config.yaml"
    config.write_text(text.replace("'.nan'", ".nan"), encoding="utf-8")
    return config


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad-inputs-cache")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_reported_by_check_and_refused_by_train(case, tmp_path, tiny_model_dir, cache, capsys,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_case(case, tmp_path, tiny_model_dir, cache)
    code, out, err = run_cli(["data", "check", config], capsys)
    assert code == case.check_code, (out, err)
    assert re.search(case.check, out + err, re.S), out + err
    assert "Traceback" not in out + err

    code, out, err = run_cli(["train", config], capsys)
    assert code == 1, (out, err)
    assert err.startswith("error: ") and re.search(case.train, err, re.S), err
    assert "Traceback" not in out + err
    run = tmp_path / "run"
    assert not run.exists(), "train wrote a run directory for input it refused"
    assert hidden_leftovers(cache) == []
    if case.lines:
        listed = Path(re.search(r"full list in (\S+)\)", err).group(1)).read_text(encoding="utf-8").splitlines()
        numbers = [int(m.group(1)) for line in listed if (m := re.match(r".*data\.jsonl:(\d+): ", line))]
        assert numbers == case.lines


def test_the_table_is_large_enough():
    assert len(CASES) >= 40, len(CASES)


def test_skip_bad_rows_trains_on_the_good_rows_and_says_so(tmp_path, tiny_model_dir, cache, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = DATA_CASES[0]
    config = write_case(case, tmp_path, tiny_model_dir, cache)
    code, out, err = run_cli(["train", config, "data.skip_bad_rows=true"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "run" / "tunekit.json").read_text(encoding="utf-8"))
    assert meta["data_stats"]["kept"] == 1 and meta["data_stats"]["skipped"] == 1
    assert meta["steps"] == 1
