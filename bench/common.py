"""What every benchmark shares: the data, the tiny model, the clock, and the paired ratios.

Both sides of a comparison run on the same machine, the same tiny model and the same rows,
interleaved (baseline first on even repeats, tunekit first on odd ones) so that a burst of
load from elsewhere hits both; a ratio is taken per pair and the median of the pairs is
reported, with every measurement kept in the JSON.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
TRAIN_FILES = [DATA / "alpaca_zh.json", DATA / "alpaca_en.json"]  # 500 + 500 rows of LLaMA-Factory's demo data
EVAL_FILE = DATA / "alpaca_eval.json"  # 24 + 24 other rows
CORPUS = [ROOT / "src/tunekit/assets/corpus/wiki_en.txt", ROOT / "src/tunekit/assets/corpus/alpaca_en.json",
          ROOT / "src/tunekit/assets/corpus/alpaca_zh.json"]

CUTOFF_LEN = 1024  # tunekit's default data.cutoff_len
BATCH_SIZE = 8  # samples per optimizer step on both sides
LEARNING_RATE = 1e-3
SEED = 42
THREADS = 2


def setup() -> None:
    """Call first, before torch is imported: THREADS torch threads, quiet libraries.

    OpenMP threads wait passively: on a machine shared with other work, libgomp's default
    spinning wait makes two threads several times slower than one (a thread spins while
    its partner is descheduled), which would measure the neighbours, not the recipes.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def build_tiny_model(folder: Path) -> Path:
    """tunekit's tiny random Qwen2 (ChatML) with a tokenizer trained on the shipped corpus."""
    from tunekit.model.init_model import init_model

    return init_model("qwen2", "tiny", CORPUS, folder / "tiny-qwen2", overwrite=True)


class Clock:
    """Wall time of a block: `with Clock() as c: ...; c.seconds`."""

    def __enter__(self) -> Clock:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


@dataclass
class Pairs:
    """Paired measurements of one quantity; ratio = tunekit / baseline per pair."""

    baseline: list[float]
    tunekit: list[float]

    def ratios(self) -> list[float]:
        return [t / b for b, t in zip(self.baseline, self.tunekit)]

    def median_ratio(self) -> float:
        return statistics.median(self.ratios())

    def as_dict(self) -> dict:
        return {"baseline": rounded(self.baseline), "tunekit": rounded(self.tunekit),
                "ratios": rounded(self.ratios()), "median_ratio": round(self.median_ratio(), 3)}


def interleaved(repeats: int, baseline, tunekit) -> tuple[list, list]:
    """Run baseline() and tunekit() `repeats` times each, alternating which goes first."""
    base, ours = [], []
    for repeat in range(repeats):
        order = [(baseline, base), (tunekit, ours)]
        for run, results in order if repeat % 2 == 0 else reversed(order):
            results.append(run())
    return base, ours


def rounded(values: list[float], digits: int = 4) -> list[float]:
    return [round(v, digits) for v in values]
