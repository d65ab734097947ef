"""Training: loss-bearing tokens per second, padding, and time to reach the same eval loss.

Each run starts from the raw JSON: the baseline runs its recipe (naive.py), tunekit runs
its own path (prepare_data into an empty cache, build_model, build_trainer with its
default collator: packed rows on this CPU). Same tiny model, rows, seed, sampler, batch
of 8 samples per step, learning rate and schedule, full fine-tuning. The sampler draws
the same samples for each step on both sides, so both train on the same tokens (checked).

The clock covers trainer.train(); every `eval_every` steps a callback stops it, measures
the token-weighted loss of the eval rows (the same ids and the same code for both sides),
and starts it again. "Time to eval loss" is preprocessing + model load + training up to
the first evaluation at or below the baseline's final eval loss (x 1.001).

Run as a script (`python bench/training.py SIDE MODEL_DIR WORK STEPS NUM_PROC`) it trains one side
without evaluation in a fresh process and prints its peak RSS: the memory benchmark.
"""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

import naive
from common import EVAL_FILE, TRAIN_FILES, Clock, Pairs, interleaved, setup

TOLERANCE = 1.001  # "the same eval loss": within 0.1%


@dataclass
class RunResult:
    prepare_s: float = 0.0
    load_s: float = 0.0
    train_s: float = 0.0
    loss_tokens: int = 0  # labels that enter the loss (after the shift)
    real_tokens: int = 0  # tokens of the samples
    positions: int = 0  # tokens of the batches, padding included
    curve: list = field(default_factory=list)  # (train seconds so far, step, eval loss)
    rss_before_train_mib: float = 0.0  # memory runs only
    peak_train_mib: float = 0.0  # highest RSS during trainer.train()

    @property
    def tokens_per_s(self) -> float:
        return self.loss_tokens / self.train_s

    @property
    def padding(self) -> float:
        return 1 - self.real_tokens / self.positions

    def seconds_to(self, target: float) -> float | None:
        """Preprocessing + load + training time up to the first evaluation at or below target."""
        reached = next((seconds for seconds, _, loss in self.curve if loss <= target * TOLERANCE), None)
        return None if reached is None else self.prepare_s + self.load_s + reached


class CountingCollator:
    """Wraps a collator; adds up loss-bearing, real and padded positions of every batch."""

    def __init__(self, collator, result: RunResult):
        self.collator, self.result = collator, result

    def __call__(self, features):
        batch = self.collator(features)
        self.result.loss_tokens += int((batch["labels"][..., 1:] != -100).sum())
        self.result.real_tokens += sum(len(f["input_ids"]) for f in features)
        self.result.positions += batch["input_ids"].numel()
        return batch


def eval_loss(model, samples: list[dict]) -> float:
    """Token-weighted mean cross-entropy over `samples`, eight at a time, padded."""
    import torch

    from tunekit.data.collate import PaddingCollator

    collate = PaddingCollator(pad_token_id=0)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(samples), 8):
            batch = collate(samples[start: start + 8])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                                             ignore_index=-100, reduction="sum"))
            count += int((labels != -100).sum())
    model.train(was_training)
    return total / count


def eval_clock(result: RunResult, samples: list[dict], every: int, started: list[float]):
    """A TrainerCallback that evaluates every `every` steps with the clock stopped."""
    import time

    from transformers import TrainerCallback

    class EvalClock(TrainerCallback):
        paused = 0.0

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0:
                now = time.perf_counter()
                loss = eval_loss(model, samples)
                result.curve.append((now - started[0] - self.paused, state.global_step, loss))
                self.paused += time.perf_counter() - now

        def on_train_end(self, args, state, control, **kwargs):
            result.train_s = time.perf_counter() - started[0] - self.paused

    return EvalClock()


def train_timed(trainer, result: RunResult, samples: list[dict], every: int) -> RunResult:
    """trainer.train() on the clock (evaluations excluded), with its peak RSS on Linux."""
    import time

    from transformers import PrinterCallback, ProgressCallback

    started = [0.0]
    trainer.data_collator = CountingCollator(trainer.data_collator, result)
    for printing in (ProgressCallback, PrinterCallback):  # the same silence on both sides
        trainer.remove_callback(printing)
    if every:
        trainer.add_callback(eval_clock(result, samples, every, started))
    result.rss_before_train_mib = reset_peak_rss()
    started[0] = time.perf_counter()
    trainer.train()
    if not every:
        result.train_s = time.perf_counter() - started[0]
    result.peak_train_mib = rss_mib("VmHWM")
    return result


def reset_peak_rss() -> float:
    """Reset the kernel's RSS high-water mark of this process (Linux); the RSS now, in MiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return rss_mib("VmRSS")


def rss_mib(field_name: str) -> float:
    status = Path("/proc/self/status")
    if not status.exists():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = next(line for line in status.read_text().splitlines() if line.startswith(field_name + ":"))
    return int(line.split()[1]) / 1024


def baseline_run(model_dir: Path, work: Path, steps: int, samples: list[dict], every: int) -> RunResult:
    from transformers import AutoTokenizer

    result = RunResult()
    with Clock() as prepare:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dataset = naive.preprocess(TRAIN_FILES, tokenizer)
    with Clock() as load:
        trainer = naive.trainer(model_dir, tokenizer, dataset, work / "baseline-run", steps)
    result.prepare_s, result.load_s = prepare.seconds, load.seconds
    return train_timed(trainer, result, samples, every)


def tunekit_run(model_dir: Path, work: Path, steps: int, samples: list[dict], every: int, num_proc: int) -> RunResult:
    import shutil

    from preprocess import tunekit_config
    from tunekit.data.pipeline import prepare_data
    from tunekit.data.templates import load_template
    from tunekit.model.load import load_tokenizer
    from tunekit.train.run import build_model, build_trainer

    cache, run_dir = work / "tunekit-cache", work / "tunekit-run"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = tunekit_settings(tunekit_config(model_dir, cache, num_proc, output_dir=run_dir), steps)
    result = RunResult()
    with Clock() as prepare:
        tokenizer = load_tokenizer(cfg.model)
        data = prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template))
    with Clock() as load:
        model = build_model(cfg, tokenizer)
        trainer, _ = build_trainer(cfg, model, tokenizer, data, run_dir)
    result.prepare_s, result.load_s = prepare.seconds, load.seconds
    return train_timed(trainer, result, samples, every)


def tunekit_settings(cfg, steps: int):
    """The baseline's hyperparameters in tunekit's config (full fine-tuning, no checkpoints)."""
    from common import BATCH_SIZE, LEARNING_RATE, SEED

    cfg.method.name = "full"
    t = cfg.train
    t.max_steps, t.batch_size, t.learning_rate, t.seed = steps, BATCH_SIZE, LEARNING_RATE, SEED
    t.lr_scheduler, t.logging_steps, t.save_steps, t.report_to = "cosine", steps + 1, steps + 1, []
    return cfg


def eval_samples(model_dir: Path, work: Path) -> list[dict]:
    """The eval rows as token ids, tokenized once and shared by both sides."""
    from preprocess import tunekit_prepare, tunekit_config

    _, data = tunekit_prepare(tunekit_config(model_dir, work / "eval-cache", 1, files=[EVAL_FILE]))
    return [{"input_ids": row["input_ids"], "labels": row["labels"]} for row in data.train]


def run(model_dir: Path, work: Path, repeats: int, steps: int, every: int, num_proc: int) -> dict:
    samples = eval_samples(model_dir, work)
    base, ours = interleaved(repeats, lambda: baseline_run(model_dir, work, steps, samples, every),
                             lambda: tunekit_run(model_dir, work, steps, samples, every, num_proc))
    if any(b.loss_tokens != t.loss_tokens for b, t in zip(base, ours)):
        print("warning: the two sides trained on different numbers of loss-bearing tokens", file=sys.stderr)
    to_loss = [(b.seconds_to(b.curve[-1][2]), t.seconds_to(b.curve[-1][2])) for b, t in zip(base, ours)]
    reached = [(b, t) for b, t in to_loss if b is not None and t is not None]
    return {
        "steps": steps, "eval_every": every, "eval_rows": len(samples),
        "tokens_per_s": Pairs([r.tokens_per_s for r in base], [r.tokens_per_s for r in ours]).as_dict(),
        "loss_tokens": [[b.loss_tokens, t.loss_tokens] for b, t in zip(base, ours)],
        "padding_baseline": round(sum(r.padding for r in base) / len(base), 4),
        "padding_tunekit": round(sum(r.padding for r in ours) / len(ours), 4),
        "train_seconds": Pairs([r.train_s for r in base], [r.train_s for r in ours]).as_dict(),
        "prepare_seconds": Pairs([r.prepare_s for r in base], [r.prepare_s for r in ours]).as_dict(),
        "time_to_eval_loss": Pairs([b for b, _ in reached], [t for _, t in reached]).as_dict() if reached else None,
        "runs_reaching_target": f"{len(reached)}/{len(to_loss)}",
        "curves": {"baseline": [curve(r) for r in base], "tunekit": [curve(r) for r in ours]},
    }


def curve(result: RunResult) -> list:
    return [[round(seconds, 3), step, round(loss, 5)] for seconds, step, loss in result.curve]


def peak_rss(side: str, model_dir: Path, work: Path, steps: int, num_proc: int) -> dict:
    """Train `steps` steps of one side in this (fresh) process: RSS in MiB before and at the peak
    of trainer.train(), and the peak of the whole process (imports and preprocessing included)."""
    if side == "baseline":
        result = baseline_run(model_dir, work, steps, [], 0)
    else:
        result = tunekit_run(model_dir, work, steps, [], 0, num_proc)
    return {"peak_train_mib": round(result.peak_train_mib, 1),
            "before_train_mib": round(result.rss_before_train_mib, 1),
            "process_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "train_s": round(result.train_s, 3), "positions": result.positions}


def memory(model_dir: Path, work: Path, steps: int, num_proc: int, repeats: int) -> dict:
    """Peak RSS of each side in its own process while training the same steps (the same batches)."""
    import subprocess

    def measure(side: str) -> dict:
        command = [sys.executable, __file__, side, str(model_dir), str(work / f"rss-{side}"), str(steps),
                   str(num_proc)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    base, ours = interleaved(repeats, lambda: measure("baseline"), lambda: measure("tunekit"))
    growth = Pairs([b["peak_train_mib"] - b["before_train_mib"] for b in base],
                   [t["peak_train_mib"] - t["before_train_mib"] for t in ours])
    return {"steps": steps, "baseline": base, "tunekit": ours,
            "peak": Pairs([b["peak_train_mib"] for b in base], [t["peak_train_mib"] for t in ours]).as_dict(),
            "growth_during_training": growth.as_dict()}


if __name__ == "__main__":
    setup()
    side, model, folder, n_steps, procs = sys.argv[1:6]
    Path(folder).mkdir(parents=True, exist_ok=True)
    print(json.dumps(peak_rss(side, Path(model), Path(folder), int(n_steps), int(procs))))
