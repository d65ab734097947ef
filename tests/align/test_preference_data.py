"""Preference, unpaired and prompt rows -> records, bad rows as FILE:LINE, and the length limits counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ROOT, SHARED

from tunekit.config import DatasetSpec, load_config
from tunekit.data.align_data import build_dataset
from tunekit.data.preferences import Pair, load_preference_records
from tunekit.data.templates import load_template


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_shared_sharegpt_pairs_read_whole():
    result = load_preference_records([DatasetSpec(str(SHARED / "data" / "dpo_zh_demo.json"))], "pairs")
    assert (result.rows_read, len(result.records), result.problems) == (300, 300, [])
    raw = json.loads((SHARED / "data" / "dpo_zh_demo.json").read_text(encoding="utf-8"))
    first = result.records[0]
    assert first.prompt[-1] == {"role": "user", "content": raw[0]["conversations"][-1]["value"]}
    assert (first.chosen, first.rejected) == (raw[0]["chosen"]["value"], raw[0]["rejected"]["value"])
    assert first.source.endswith("dpo_zh_demo.json:2")


def test_alpaca_openai_and_sharegpt_pairs_are_the_same_record(tmp_path):
    want = Pair([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi\nthere"}], "Hello!", "Go.")
    files = {
        "alpaca": {"system": "Be kind.", "instruction": "Hi", "input": "there", "chosen": "Hello!", "rejected": "Go."},
        "openai": {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi\nthere"}],
                   "chosen": {"role": "assistant", "content": "Hello!"}, "rejected": "Go."},
        "sharegpt": {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi\nthere"}],
                     "chosen": [{"from": "gpt", "value": "Hello!"}], "rejected": {"from": "gpt", "value": "Go."}},
    }
    for name, row in files.items():
        record = load_preference_records([DatasetSpec(str(jsonl(tmp_path / f"{name}.jsonl", [row])))], "pairs").records[0]
        assert (record.prompt, record.chosen, record.rejected) == (want.prompt, want.chosen, want.rejected), name


def test_bad_pairs_are_reported_by_file_and_line(tmp_path):
    ok = {"prompt": "Q", "chosen": "good", "rejected": "bad"}
    path = jsonl(tmp_path / "pairs.jsonl", [
        ok,
        {"prompt": "Q", "rejected": "bad"},
        {"prompt": "Q", "chosen": "good", "rejected": "  "},
        {"prompt": "Q", "chosen": "same", "rejected": "same "},
        "{not json",
    ])
    result = load_preference_records([DatasetSpec(str(path))], "pairs")
    assert len(result.records) == 1
    problems = {p.line: p.message for p in result.problems}
    assert {p.file for p in result.problems} == {str(path)}
    assert "missing 'chosen'" in problems[2]
    assert "'rejected' is empty" in problems[3]
    assert "identical" in problems[4]
    assert 5 in problems
    chat = jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "chosen": "x",
         "rejected": "y"}])
    problem = load_preference_records([DatasetSpec(str(chat))], "pairs").problems[0]
    assert (problem.line, "ends on an assistant turn" in problem.message) == (1, True)


def test_unpaired_rows_need_a_boolean_label_and_prompts_keep_their_answer(tmp_path):
    kto = jsonl(tmp_path / "kto.jsonl", [{"prompt": "Q", "completion": "A", "label": True},
                                         {"prompt": "Q", "completion": "A", "label": "yes"}])
    result = load_preference_records([DatasetSpec(str(kto))], "unpaired")
    assert [r.label for r in result.records] == [True]
    assert result.problems[0].line == 2 and "'label' must be true" in result.problems[0].message
    grpo = jsonl(tmp_path / "grpo.jsonl", [{"instruction": "1+1?", "answer": 2}, {"instruction": "Say hi"}])
    rows = load_preference_records([DatasetSpec(str(grpo))], "prompts").records
    assert [(r.prompt[-1]["content"], r.answer) for r in rows] == [("1+1?", "2"), ("Say hi", None)]


def test_length_limits_drop_long_prompts_and_cut_long_completions(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    path = jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "short", "chosen": "yes", "rejected": "no"},
        {"prompt": "word " * 80, "chosen": "yes", "rejected": "no"},
        {"prompt": "short", "chosen": "long " * 80, "rejected": "no"},
    ])
    template = load_template(AutoTokenizer.from_pretrained(tiny_model_dir), None)
    counts = ("kept", "prompt_too_long", "dropped_overlength", "truncated")
    for overlength, want in (("truncate", (2, 1, 0, 1)), ("drop", (1, 1, 1, 0))):
        cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.path={path}", "data.cutoff_len=40",
                                 "train.stage=dpo", "align.max_prompt_len=20", f"data.overlength={overlength}"])
        data, stats, problems = build_dataset(cfg, cfg.data.datasets, template, "pairs")
        assert (tuple(stats[k] for k in counts), problems) == (want, [])
        assert all(len(r["prompt_ids"]) + len(r["chosen_ids"]) <= 40 for r in data)


def test_rows_all_dropped_for_length_say_which_limit(tmp_path, tiny_model_dir):
    """Measured on SmolLM2, whose template adds a default system prompt: every prompt over the default
    align.max_prompt_len of cutoff_len // 2, and nothing else in the message."""
    from transformers import AutoTokenizer

    from tunekit.errors import DataError

    path = jsonl(tmp_path / "pairs.jsonl", [{"prompt": "word " * 30, "chosen": "yes", "rejected": "no"}] * 2)
    template = load_template(AutoTokenizer.from_pretrained(tiny_model_dir), None)
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.path={path}", "data.cutoff_len=40",
                             "train.stage=dpo"])
    with pytest.raises(DataError, match=r"dropped 2 prompt\(s\) longer than align.max_prompt_len \(20 tokens\)"):
        build_dataset(cfg, cfg.data.datasets, template, "pairs")


def test_train_refuses_a_dataset_without_usable_rows(tmp_path, tiny_model_dir, capsys):
    from tunekit.cli import main

    path = jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q", "chosen": "same", "rejected": "same"}])
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"model: {{name_or_path: {tiny_model_dir}}}\ndata: {{datasets: [{path}]}}\n"
                        f"train: {{stage: dpo, output_dir: {tmp_path / 'run'}}}\n")
    code = main(["train", str(cfg_file)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert f"error: no usable rows in {path}" in err and f"{path}:1:" in err and "identical" in err
    assert not (tmp_path / "run" / "tunekit.json").exists()


def test_data_check_reports_bad_pairs_as_the_stage_reads_them(tmp_path, tiny_model_dir, capsys):
    from tunekit.cli import main

    path = jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "good", "rejected": "bad"},
                                            {"prompt": "Q", "chosen": "same", "rejected": "same"}])
    code = main(["data", "check", str(ROOT / "configs" / "dpo.yaml"), f"model.name_or_path={tiny_model_dir}",
                 f"data.path={path}"])
    out = capsys.readouterr().out
    assert code == 1 and f"{path}:2: " in out and "identical" in out and "kept: 1" in out
