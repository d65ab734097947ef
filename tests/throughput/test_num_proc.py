"""data.num_proc: shards tokenized by forked workers give exactly the dataset one process gives."""

import pytest
from helpers import NER_TRAIN, SHARED, make_config

from tunekit.data import pipeline
from tunekit.data.pipeline import prepare_data
from tunekit.data.templates import load_template
from tunekit.model.load import load_tokenizer

DATASETS = [{"path": str(SHARED / "data" / "alpaca_zh_demo.json"), "max_samples": 60},
            {"path": str(NER_TRAIN), "max_samples": 60}]


def prepared(model_dir, tmp_path, num_proc: int):
    cfg = make_config(model_dir, tmp_path / "run", tmp_path / f"cache-{num_proc}",
                      data={"datasets": DATASETS, "num_proc": num_proc, "cutoff_len": 64, "overlength": "truncate"})
    tokenizer = load_tokenizer(cfg.model)
    return prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template))


def test_two_workers_give_the_same_ids_labels_and_stats(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "SHARD_ROWS", 15)  # 2 files of 60 conversations -> 8 shards, 4 per worker

    one = prepared(tiny_model_dir, tmp_path, num_proc=1)
    two = prepared(tiny_model_dir, tmp_path, num_proc=2)

    assert not one.cache_hit and not two.cache_hit
    assert one.stats["truncated"] > 0 and one.stats["answers_lost"] > 0  # both paths of the cut are taken
    assert len(one.train) == one.stats["kept"] == 120 - one.stats["answers_lost"]
    for column in ("input_ids", "labels", "length"):
        assert two.train[column] == one.train[column], column
    assert two.stats == one.stats
    assert two.problems == one.problems


def test_length_column_holds_each_sample_length(tiny_model_dir, tmp_path):
    data = prepared(tiny_model_dir, tmp_path, num_proc=1)

    assert data.train.column_names == ["input_ids", "labels", "length"]
    assert data.train["length"] == [len(ids) for ids in data.train["input_ids"]]
    assert max(data.train["length"]) == 64


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_rerun_reads_the_cache_whatever_num_proc(tiny_model_dir, tmp_path, num_proc):
    first = prepared(tiny_model_dir, tmp_path, num_proc=num_proc)
    again = prepared(tiny_model_dir, tmp_path, num_proc=num_proc)

    assert again.cache_hit and again.fingerprint == first.fingerprint
    assert again.train["input_ids"] == first.train["input_ids"]
