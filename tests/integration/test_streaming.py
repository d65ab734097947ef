"""data.streaming: samples tokenized while training, equal to the tokenized path's; shuffled
reproducibly, split between processes, resumed past what was trained, stopped by a bad row."""

import json
from collections import Counter
from itertools import islice

import pytest
from helpers import NER_TRAIN, make_config

from tunekit.config import validate
from tunekit.data import stream
from tunekit.data.pipeline import prepare_data
from tunekit.data.stream import streamed_samples
from tunekit.data.templates import load_template
from tunekit.errors import ConfigError, DataError
from tunekit.model.load import load_tokenizer

ROWS = 40


def config(model_dir, tmp_path, data_path=NER_TRAIN, stage="sft", **data):
    return make_config(model_dir, tmp_path / "run", tmp_path / "cache", train={"stage": stage, "max_steps": 3},
                       data={"datasets": [{"path": str(data_path), "max_samples": ROWS}], "streaming": True,
                             "cutoff_len": 48, "overlength": "truncate", **data})


def setup(cfg):
    tokenizer = load_tokenizer(cfg.model)
    return tokenizer, load_template(tokenizer, cfg.model.template) if cfg.train.stage == "sft" else None


def first_pass(cfg, tokenizer, template, count, **kwargs):
    return [(s["input_ids"], s["labels"]) for s in islice(streamed_samples(cfg, tokenizer, template, **kwargs), count)]


def test_streamed_samples_equal_the_tokenized_ones(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, shuffle_buffer=1)
    tokenizer, template = setup(cfg)
    streamed = first_pass(cfg, tokenizer, template, ROWS + 5)
    cfg.data.streaming = False
    tokenized = prepare_data(cfg, tokenizer, template).train
    expected = list(zip(tokenized["input_ids"], tokenized["labels"]))
    assert streamed[:len(expected)] == expected and len(expected) > ROWS - 5
    assert streamed[len(expected):] == expected[:5]  # the stream goes round again until max_steps


def test_shuffle_is_a_seeded_permutation_and_processes_share_the_rows(tiny_model_dir, tmp_path, monkeypatch):
    cfg = config(tiny_model_dir, tmp_path, shuffle_buffer=16)
    tokenizer, template = setup(cfg)
    plain = first_pass(config(tiny_model_dir, tmp_path, shuffle_buffer=1), tokenizer, template, ROWS)
    shuffled = first_pass(cfg, tokenizer, template, ROWS)
    assert shuffled != plain and sorted(shuffled) == sorted(plain)
    assert first_pass(cfg, tokenizer, template, ROWS) == shuffled

    monkeypatch.setattr(stream, "world_size", lambda: 2)
    dataset = streamed_samples(config(tiny_model_dir, tmp_path, shuffle_buffer=1), tokenizer, template)
    assert dataset.n_shards == 2
    shares = [[(s["input_ids"], s["labels"]) for s in islice(dataset.shard(2, index=i), ROWS // 2)] for i in (0, 1)]
    assert shares[0] == plain[0::2] and shares[1] == plain[1::2]


def test_a_resumed_stream_continues_where_it_stopped(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path, shuffle_buffer=8)
    tokenizer, template = setup(cfg)
    whole = first_pass(cfg, tokenizer, template, 30)
    assert first_pass(cfg, tokenizer, template, 18, skip=12) == whole[12:]


def test_pt_blocks_are_cut_from_the_joined_documents(tiny_model_dir, tmp_path):
    path = tmp_path / "docs.txt"
    docs = [f"document {i} " + "word " * (i % 9) for i in range(ROWS)]
    path.write_text("\n".join(docs) + "\n")
    cfg = config(tiny_model_dir, tmp_path, path, stage="pt", shuffle_buffer=1, cutoff_len=16)
    tokenizer, _ = setup(cfg)
    joined = [t for d in docs for t in tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]
    blocks = first_pass(cfg, tokenizer, None, len(joined) // 16)
    assert [ids for ids, _ in blocks] == [joined[i: i + 16] for i in range(0, len(joined) - 15, 16)]
    assert all(ids == labels for ids, labels in blocks)


def test_a_bad_row_stops_the_stream_with_file_and_line(tiny_model_dir, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q", "output": ""}\n')
    cfg = config(tiny_model_dir, tmp_path, path)
    tokenizer, template = setup(cfg)
    with pytest.raises(DataError, match=rf"{path}:2: 'output' is empty.*streaming mode stops at a bad row.*data check"):
        first_pass(cfg, tokenizer, template, 5)


def test_streaming_needs_max_steps_and_no_val_size(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, tmp_path)
    cfg.train.max_steps = -1
    with pytest.raises(ConfigError, match="data.streaming is true.*set train.max_steps"):
        validate(cfg)
    with pytest.raises(ConfigError, match="data.val_size cannot hold rows out of a stream"):
        config(tiny_model_dir, tmp_path, val_size=0.1)


def test_streaming_training_runs_and_resumes_past_the_trained_samples(tiny_model_dir, tmp_path, monkeypatch):
    from tunekit.train.run import train

    skips = []
    real = stream.streamed_samples
    monkeypatch.setattr(stream, "streamed_samples", lambda *a, skip=0: skips.append(skip) or real(*a, skip=skip))
    cfg = config(tiny_model_dir, tmp_path)
    cfg.train.max_steps, cfg.train.save_steps, cfg.train.batch_size = 2, 2, 4
    run = train(cfg)
    assert json.loads((run / "tunekit.json").read_text())["steps"] == 2
    cfg.train.max_steps, cfg.train.resume = 3, True
    train(cfg)
    assert skips == [0, 2 * 4]  # the resumed run passed over the 8 samples of its 2 steps
    steps = Counter(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
                    if "loss" in json.loads(line))
    assert 3 in steps


def test_a_hub_dataset_is_streamed_from_the_hub_not_downloaded(tiny_model_dir, tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load(path, name=None, split=None, streaming=False):
        calls.append((path, split, streaming))
        return iter([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = config(tiny_model_dir, tmp_path, shuffle_buffer=1)
    cfg.data.datasets[0].path = "someone/chat"
    tokenizer, template = setup(cfg)
    samples = first_pass(cfg, tokenizer, template, 3)
    assert calls[0] == ("someone/chat", "train", True) and len(samples) == 3
