"""Preprocessing: examples per second from the JSON files to a tokenized dataset.

cold: tunekit's `prepare_data` into an empty cache (read, convert, render, tokenize with
`data.num_proc` workers, write the cache) against the baseline's per-example `.map`;
warm: `prepare_data` again on the same cache (a rerun after a crash) against the baseline,
which has no cache and tokenizes everything again. Every run gets a freshly loaded
tokenizer (the Rust tokenizer caches words it has seen), loaded outside the clock.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import naive
from common import CUTOFF_LEN, TRAIN_FILES, Clock, Pairs, interleaved


def tunekit_config(model_dir: Path, cache: Path, num_proc: int, files=TRAIN_FILES, output_dir: Path | None = None):
    from tunekit.config import from_dict, validate

    cfg = from_dict({
        "model": {"name_or_path": str(model_dir)},
        "data": {"datasets": [str(f) for f in files], "cutoff_len": CUTOFF_LEN, "cache_dir": str(cache),
                 "overlength": "truncate",  # as the baseline recipe does: both sides train the same tokens
                 "num_proc": num_proc},
        "train": {"output_dir": str(output_dir or cache / "run")},
    })
    validate(cfg)
    return cfg


def tunekit_prepare(cfg):
    from tunekit.data.pipeline import prepare_data
    from tunekit.data.templates import load_template
    from tunekit.model.load import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    template = load_template(tokenizer, cfg.model.template)
    with Clock() as clock:
        data = prepare_data(cfg, tokenizer, template)
    return clock.seconds, data


def _baseline_seconds(model_dir: Path) -> tuple[float, int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with Clock() as clock:
        dataset = naive.preprocess(TRAIN_FILES, tokenizer)
    return clock.seconds, len(dataset)


def run(model_dir: Path, work: Path, repeats: int, num_proc: int) -> dict:
    """Interleaved cold runs (each followed by its warm rerun) against the baseline; every tunekit
    turn also times a cold run with the other worker count (1 <-> 2), for the notes."""
    other = 2 if num_proc == 1 else 1
    rows, cold, warm, cold_other = {}, [], [], []
    cache = work / "preprocess-cache"

    def ours():
        shutil.rmtree(cache, ignore_errors=True)
        seconds, data = tunekit_prepare(tunekit_config(model_dir, cache, num_proc))
        again, rerun = tunekit_prepare(tunekit_config(model_dir, cache, num_proc))
        assert not data.cache_hit and rerun.cache_hit
        rows["tunekit"] = len(data.train)
        cold.append(seconds)
        warm.append(again)
        shutil.rmtree(cache, ignore_errors=True)
        cold_other.append(tunekit_prepare(tunekit_config(model_dir, cache, other))[0])
        return seconds

    def baseline():
        seconds, count = _baseline_seconds(model_dir)
        rows["baseline"] = count
        return seconds

    base, _ = interleaved(repeats, baseline, ours)
    speed = lambda seconds: [rows["baseline"] / s for s in seconds]  # noqa: E731  examples per second
    return {
        "rows": rows, "num_proc": num_proc,
        "cold": Pairs(speed(base), speed(cold)).as_dict(),
        "warm": Pairs(speed(base), speed(warm)).as_dict(),
        f"cold_num_proc_{other}": Pairs(speed(base), speed(cold_other)).as_dict(),
    }
