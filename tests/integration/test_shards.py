"""Tokenization in shards: a killed run resumes at the shard it reached, the cache follows the
files (a new file costs only that file), and statistics come from histograms."""

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from helpers import make_config

from tunekit.data import pipeline
from tunekit.data.pipeline import histogram_percentiles, prepare_data
from tunekit.data.templates import load_template
from tunekit.model.load import load_tokenizer


def write_rows(path, start: int, count: int):
    rows = [{"instruction": f"question {i}", "output": f"answer number {i}"} for i in range(start, start + count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prepared(model_dir, tmp_path, data_path, stage="sft", **data):
    cfg = make_config(model_dir, tmp_path / "run", tmp_path / "cache", train={"stage": stage},
                      data={"datasets": [{"path": str(data_path)}], "num_proc": 1, **data})
    tokenizer = load_tokenizer(cfg.model)
    return prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template) if stage == "sft" else None)


@pytest.fixture
def encoded(monkeypatch):
    """(entry folder name, shard index) of every shard tokenized, in order."""
    seen = []
    real = pipeline._encode_shard

    def spy(job, folder, shard):
        seen.append((folder.name, shard.index))
        real(job, folder, shard)

    monkeypatch.setattr(pipeline, "_encode_shard", spy)
    monkeypatch.setattr(pipeline, "SHARD_ROWS", 10)
    return seen


KILL_AT_SHARD_3 = """
import os, signal, sys
from helpers import make_config
from tunekit.data import pipeline
from tunekit.data.pipeline import prepare_data
from tunekit.data.templates import load_template
from tunekit.model.load import load_tokenizer

pipeline.SHARD_ROWS = 10
real = pipeline._write_json
def dying(path, value):
    if path.name == "shard-00003.json":
        os.kill(os.getpid(), signal.SIGKILL)  # after the shard's Arrow file, before its JSON
    real(path, value)
pipeline._write_json = dying
model, run, cache, data = sys.argv[1:]
cfg = make_config(model, run, cache, data={"datasets": [{"path": data}], "num_proc": 1})
tokenizer = load_tokenizer(cfg.model)
prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template))
"""


def test_a_killed_tokenization_resumes_at_the_shard_it_reached(tiny_model_dir, tmp_path, encoded):
    data = write_rows(tmp_path / "d.jsonl", 0, 55)  # 6 shards of 10, 10, 10, 10, 10, 5 rows
    tests = os.path.dirname(os.path.dirname(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests, *sys.path]))
    killed = subprocess.run([sys.executable, "-c", KILL_AT_SHARD_3, str(tiny_model_dir), str(tmp_path / "run"),
                             str(tmp_path / "cache"), str(data)], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    [entry] = (tmp_path / "cache" / "datasets").iterdir()
    assert sorted(p.name for p in entry.glob("shard-*.json")) == [f"shard-0000{i}.json" for i in range(3)]
    assert (entry / "shard-00003.arrow").is_file() and not (entry / "done.json").exists()
    (entry / f".tmp-{os.getpid()}-shard-00009.arrow").write_bytes(b"a live writer's")  # this process: kept
    assert [p.name for p in entry.glob(".tmp-*")] == [f".tmp-{os.getpid()}-shard-00009.arrow"]
    (entry / ".tmp-999999999-shard-00004.arrow").write_bytes(b"left by a dead worker")

    resumed = prepared(tiny_model_dir, tmp_path, data)
    assert encoded == [(entry.name, i) for i in (3, 4, 5)]  # shards 0-2 were not tokenized again
    assert not resumed.cache_hit and [p.name for p in entry.glob(".tmp-*")] == [f".tmp-{os.getpid()}-shard-00009.arrow"]

    fresh = prepared(tiny_model_dir, tmp_path / "fresh", data)
    assert resumed.train["input_ids"] == fresh.train["input_ids"] and resumed.train["labels"] == fresh.train["labels"]
    assert resumed.stats == fresh.stats and resumed.stats["kept"] == 55


def test_adding_a_file_tokenizes_only_that_file(tiny_model_dir, tmp_path, encoded):
    folder = tmp_path / "data"
    folder.mkdir()
    write_rows(folder / "a.jsonl", 0, 12)
    write_rows(folder / "b.jsonl", 12, 5)
    first = prepared(tiny_model_dir, tmp_path, folder)
    first_entries = {name for name, _ in encoded}
    assert len(first_entries) == 2 and len(encoded) == 3 and first.stats["kept"] == 17

    encoded.clear()
    write_rows(folder / "c.jsonl", 17, 4)
    second = prepared(tiny_model_dir, tmp_path, folder)
    assert [index for _, index in encoded] == [0] and encoded[0][0] not in first_entries
    assert not second.cache_hit and second.fingerprint != first.fingerprint
    assert second.train["input_ids"][:17] == first.train["input_ids"] and second.stats["kept"] == 21

    encoded.clear()
    again = prepared(tiny_model_dir, tmp_path, folder)
    assert encoded == [] and again.cache_hit and again.fingerprint == second.fingerprint


def test_pt_blocks_never_lose_a_token_across_shards(tiny_model_dir, tmp_path, encoded):
    docs = [f"document {i} " + "word " * (i % 7) for i in range(35)]
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(docs) + "\n")
    data = prepared(tiny_model_dir, tmp_path, path, stage="pt", cutoff_len=16)
    tok = load_tokenizer(make_config(tiny_model_dir, tmp_path / "r", tmp_path / "c").model)
    expected = [t for d in docs for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    rows = data.train["input_ids"]
    assert [t for row in rows for t in row] == expected and len(encoded) == 4
    assert data.train["labels"] == rows and max(map(len, rows)) == 16
    assert data.stats["tokens"] == len(expected) and data.stats["blocks"] == len(rows) and data.stats["kept"] == 35


def test_histogram_percentiles_equal_numpy_on_the_values():
    values = np.random.default_rng(0).integers(1, 400, size=1001).tolist()
    expected = {f"p{q}": int(np.percentile(values, q)) for q in (50, 90, 99)} | {"max": max(values)}
    assert histogram_percentiles(Counter(values)) == expected
    assert histogram_percentiles(Counter([7])) == {"p50": 7, "p90": 7, "p99": 7, "max": 7}


def write_config(tmp_path, model_dir, data_path, stage="sft"):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"model: {{name_or_path: {model_dir}}}\n"
                    f"data: {{datasets: [{data_path}], cutoff_len: 16, cache_dir: {tmp_path / 'cache'}}}\n"
                    f"train: {{output_dir: {tmp_path / 'run'}, stage: {stage}, max_steps: 1}}\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("command", [["data", "check"], ["train"]])
def test_a_json_file_holding_one_object_is_refused_by_check_and_train(tiny_model_dir, tmp_path, capsys, command):
    from tunekit.cli import main

    path = tmp_path / "one.json"
    path.write_text(json.dumps({"rows": [{"instruction": "q", "output": "a"}]}, indent=2))
    assert main([*command, write_config(tmp_path, tiny_model_dir, path)]) == 1
    err = capsys.readouterr().err
    assert f"error: {path}: the file holds one JSON object, not a list of rows (its key 'rows' holds a list" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "tunekit.json").exists()


def test_pt_check_reports_blocks_and_no_sft_only_counts(tiny_model_dir, tmp_path, capsys):
    from tunekit.cli import main

    path = tmp_path / "docs.txt"
    path.write_text("".join(f"document {i} has a few words\n" for i in range(30)))
    assert main(["data", "check", write_config(tmp_path, tiny_model_dir, path, stage="pt")]) == 0
    out = capsys.readouterr().out
    assert "rows read: 30  kept: 30  skipped: 0  blocks: " in out and "tokens: " in out
    assert "truncated" not in out and "answer" not in out
