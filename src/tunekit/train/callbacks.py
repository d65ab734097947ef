"""Trainer callbacks: a metrics log, a NaN/inf loss guard and the loss plot.

All of them act on the main process only, so a multi-process run writes each file once.
metrics.jsonl is appended one whole line at a time; `read_metrics` skips a line torn by a
crash, and at the start of training (or of a resume) the file is rewritten to hold only
whole records up to the step training starts from, so a resumed run never repeats a step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import TrainerCallback

from tunekit.errors import TunekitError
from tunekit.export.atomic import write_text_atomic
from tunekit.rundir import METRICS_FILE, PLOT_FILE


class MetricsLog(TrainerCallback):
    """Appends every log record (loss, lr, eval loss, ...) to metrics.jsonl."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.exists():
            keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= state.global_step]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """The whole records of metrics.jsonl; a line torn by a crash (or otherwise not a JSON object) is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class NonFiniteLossError(TunekitError):
    pass


class NanGuard(TrainerCallback):
    """Stops the run at the first NaN/inf loss; the caller raises `self.error` after train()."""

    def __init__(self, precision: str):
        self.precision = precision
        self.error: NonFiniteLossError | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            fix = ("fp16 overflows easily: use precision bf16 (or fp32)" if self.precision == "fp16" else
                   "lower train.learning_rate (e.g. by 10x), keep train.max_grad_norm at 1.0, and check the data")
            self.error = NonFiniteLossError(f"loss became {loss} at step {state.global_step}: {fix}; "
                                            "the last complete checkpoint is kept")
            control.should_training_stop = True
            control.should_save = False


def plot_loss(run_dir: Path) -> Path | None:
    """loss.png from metrics.jsonl: training loss per step, and eval loss when there is one."""
    return plot_metrics(run_dir, {"train loss": "loss", "eval loss": "eval_loss"}, PLOT_FILE, "loss")


def plot_metrics(run_dir: Path, series: dict[str, str], file: str, ylabel: str) -> Path | None:
    """A plot of metrics.jsonl keys per step (label -> key); None when none of them was logged."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    records = read_metrics(path)
    curves = {label: [(r["step"], r[key]) for r in records if key in r] for label, key in series.items()}
    if not any(curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / file
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
