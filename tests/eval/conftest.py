"""Session fixtures for the eval tests: a word-type task and a tiny model fine-tuned on it.

The task ("郭洋杰是人名还是地名？" -> "人名") is built from the names and places of the shipped
NER demo data. The tiny model cannot learn to copy entities in a few seconds, but it learns
this answer format in 40 full fine-tuning steps (exact match 0 -> ~50 on a balanced test
set), which is what the comparison test needs: a task metric that reliably moves.
"""

from __future__ import annotations

import json
import random

import pytest
from helpers import NER_TRAIN, make_config

TRAIN_ROWS = 1200
TEST_PER_TYPE = 10


def _word_types() -> dict[str, str]:
    words = {}
    for line in NER_TRAIN.read_text(encoding="utf-8").splitlines():
        for entity_line in json.loads(line)["answer"].splitlines():
            if "_" in entity_line:
                word, kind = entity_line.rsplit("_", 1)
                words[word] = kind
    return words


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def word_type_task(tmp_path_factory):
    """(train.jsonl, test.jsonl): alpaca rows "<word>是人名还是地名？" -> 人名 | 地名; test balanced 10 + 10."""
    words = _word_types()
    names = sorted(w for w, t in words.items() if t == "人名")
    places = sorted(w for w, t in words.items() if t == "地名")
    folder = tmp_path_factory.mktemp("word_type")
    rng = random.Random(0)

    def row(word):
        return {"instruction": f"{word}是人名还是地名？", "output": words[word]}

    train = [row(rng.choice(names[:-TEST_PER_TYPE] if i % 2 else places[:-TEST_PER_TYPE])) for i in range(TRAIN_ROWS)]
    test = [row(w) for w in names[-TEST_PER_TYPE:] + places[-TEST_PER_TYPE:]]
    return _write_jsonl(folder / "train.jsonl", train), _write_jsonl(folder / "test.jsonl", test)


@pytest.fixture(scope="session")
def tuned_run(tiny_model_dir, word_type_task, tmp_path_factory, cache_dir):
    """The tiny model fully fine-tuned on the word-type task for 40 steps (a finished run directory)."""
    from tunekit.train.run import train

    cfg = make_config(tiny_model_dir, tmp_path_factory.mktemp("runs") / "word-type", cache_dir,
                      method={"name": "full"},
                      data={"datasets": [{"path": str(word_type_task[0])}], "cutoff_len": 64},
                      train={"max_steps": 40, "batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 0.1,
                             "logging_steps": 10})
    return train(cfg)
