"""`tunekit data check / preview / tokenize` and the tokenized cache, as a user meets them."""

import json

import pytest
from helpers import NER_TRAIN

from tunekit.cli import main


def write_config(tmp_path, model_dir, data_path, cache, extra=""):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"model: {{name_or_path: {model_dir}}}\n"
                    f"data: {{datasets: [{data_path}], cutoff_len: 64, cache_dir: {cache}}}\n"
                    f"train: {{output_dir: {tmp_path / 'run'}}}\n{extra}", encoding="utf-8")
    return str(path)


@pytest.fixture
def bad_file(tmp_path):
    rows = [
        {"instruction": "说你好", "output": "你好"},
        {"instruction": "空答案", "output": ""},
        "not an object",
        {"instruction": "x", "output": "y", "history": [["only one"]]},
        {"instruction": 3, "output": "y"},
    ]
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{broken json\n"
    path = tmp_path / "bad.jsonl"
    path.write_bytes(text.encode() + b'{"instruction": "\xff\xfe", "output": "y"}\n')
    return path


def test_check_reports_each_bad_row_by_file_and_line(tmp_path, tiny_model_dir, bad_file, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, bad_file, tmp_path / "cache")
    assert main(["data", "check", cfg]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(str(bad_file))]
    assert [line.split(":")[1] for line in lines] == ["2", "3", "4", "5", "6", "7"]
    assert "empty" in lines[0] and "history" in lines[2] and "UTF-8" in lines[5]
    assert "rows read: 7  kept: 1  skipped: 6" in out
    assert "token lengths: p50" in out


def test_check_of_good_data_exits_0_with_counts_and_percentiles(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, NER_TRAIN, tmp_path / "cache")
    assert main(["data", "check", cfg, "data.cutoff_len=512"]) == 0
    out = capsys.readouterr().out
    assert ("rows read: 3000  kept: 3000  skipped: 0  longer than cutoff_len 512: dropped 0, truncated 0 "
            "(data.overlength: drop)  answer truncated away: 0") in out
    p50, p90, p99, top = (int(out.split(k + " ")[1].split()[0]) for k in ("p50", "p90", "p99", "max"))
    assert 0 < p50 <= p90 <= p99 <= top


@pytest.mark.parametrize("policy", ["drop", "truncate"])
def test_overlength_samples_are_dropped_or_truncated_and_counted(tmp_path, tiny_model_dir, capsys, policy):
    """The longest tenth is over the cutoff: by default dropped (kept answers stay whole), or truncated."""
    cfg = write_config(tmp_path, tiny_model_dir, NER_TRAIN, tmp_path / "cache")
    assert main(["data", "check", cfg, "data.cutoff_len=512"]) == 0
    p90 = int(capsys.readouterr().out.split("p90 ")[1].split()[0])
    assert main(["data", "check", cfg, f"data.cutoff_len={p90}", f"data.overlength={policy}"]) == 0
    out = capsys.readouterr().out
    dropped = int(out.split("dropped ")[1].split(",")[0])
    truncated = int(out.split("truncated ")[1].split()[0])
    kept = int(out.split("kept: ")[1].split()[0])
    over = dropped + truncated
    assert 0 < over <= 300 and (dropped if policy == "drop" else truncated) == over
    assert kept == 3000 - dropped - int(out.split("answer truncated away: ")[1].split()[0])
    assert ("not trained" in out) == (policy == "drop")
    assert main(["data", "preview", cfg, f"data.cutoff_len={p90}", f"data.overlength={policy}", "-n", "3000"]) == 0
    marked = capsys.readouterr().out.count("OVERLENGTH")
    assert marked == over


def test_data_that_no_cutoff_fits_says_raise_cutoff_len(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, NER_TRAIN, tmp_path / "cache")
    assert main(["data", "check", cfg, "data.cutoff_len=8"]) == 1
    assert "raise data.cutoff_len" in capsys.readouterr().err


def test_bad_config_is_one_message_no_traceback(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, NER_TRAIN, tmp_path / "cache", "method: {lora_rank: 8}\n")
    assert main(["data", "check", cfg]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key 'method.lora_rank'") and "Traceback" not in err


def test_preview_marks_trained_spans(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, NER_TRAIN, tmp_path / "cache")
    assert main(["data", "preview", cfg, "-n", "2"]) == 0
    out = capsys.readouterr().out
    first = json.loads(NER_TRAIN.read_text(encoding="utf-8").splitlines()[0])
    assert f"[[{first['answer']}<|im_end|>]]" in out
    assert "[[" not in out.split(first["answer"])[0].split("assistant")[0]  # the prompt is not trained
    assert out.count("trained: ") == 2


def test_tokenize_fills_the_cache_that_a_second_run_hits_and_a_change_misses(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(NER_TRAIN.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    cfg = write_config(tmp_path, tiny_model_dir, data, tmp_path / "cache")
    assert main(["data", "tokenize", cfg]) == 0
    assert "tokenized: 1 samples" in capsys.readouterr().out
    assert main(["data", "tokenize", cfg]) == 0
    assert "already cached: 1 samples" in capsys.readouterr().out
    with data.open("a", encoding="utf-8") as f:
        f.write(NER_TRAIN.read_text(encoding="utf-8").splitlines()[1] + "\n")
    assert main(["data", "tokenize", cfg]) == 0
    assert "tokenized: 2 samples" in capsys.readouterr().out
    assert main(["data", "tokenize", cfg, "data.cutoff_len=256"]) == 0  # length options are in the key
    assert "tokenized: 2 samples" in capsys.readouterr().out
