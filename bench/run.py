"""make bench: tunekit against the naive tutorial recipe (naive.py), measured in one run.

    .venv/bin/python bench/run.py            # the full bench (the real-shape section is most of it)
    .venv/bin/python bench/run.py --quick    # a smoke run: 1 repeat, few steps; writes quick.*
    .venv/bin/python bench/run.py --no-real-shape   # the tiny-model sections only (about 90 s)
    .venv/bin/python bench/run.py --no-serve        # without serving under load (bench/serve.py, ~2 min)

Same machine, same tiny model (built here by tunekit init-model), same rows of bench/data,
same seed and 8 samples per optimizer step; torch on 2 threads. Every ratio is tunekit over
baseline, from pairs of runs interleaved in this process (medians of the pair ratios); all
measurements go to bench/results/latest.json, the table to latest.md.

The last section (bench/real_shape.py) trains a SmolLM2-135M-shaped model against TRL's
SFTTrainer (padded, padding-free, packing) and reports the fraction of this machine's
matmul peak reached; bench/gpu_train.py is the GPU counterpart, run by hand on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from common import BENCH, THREADS, build_tiny_model, setup

RESULTS = BENCH / "results"

# key -> (what, higher is better?, target, unit of the two sides)
TARGETS = {
    "train_tokens_per_s_ratio": ("training: loss-bearing tokens/s", True, 2.0, "tokens/s"),
    "peak_rss_ratio": ("peak RSS at equal effective batch", False, 1.0, "MiB"),
    "preprocess_cold_ratio": ("preprocessing, cold: examples/s", True, 3.0, "examples/s"),
    "preprocess_warm_ratio": ("preprocessing, warm cache: examples/s", True, 50.0, "examples/s"),
    "generate_batch_ratio": ("generation, 32 prompts: prompts/s", True, 4.0, "prompts/s"),
    "time_to_eval_loss_ratio": ("end to end: time to the same eval loss", False, 1.0, "s"),
}


def main() -> None:
    args = parse_args()
    setup()
    import generation
    import preprocess
    import training

    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tunekit-bench-") as folder:
        work = Path(folder)
        model_dir = build_tiny_model(work)
        sections = {}
        step("preprocessing")
        sections["preprocess"] = preprocess.run(model_dir, work, args.repeats_preprocess, args.num_proc)
        step("training")
        sections["training"] = training.run(model_dir, work, args.repeats_train, args.steps, args.eval_every,
                                            args.num_proc)
        step("memory")
        sections["memory"] = training.memory(model_dir, work, args.rss_steps, args.num_proc, args.repeats_memory)
        step("generation")
        sections["generation"] = generation.run(model_dir, args.repeats_generate)
        if args.real_shape:
            import real_shape

            step("training on the real shape (SmolLM2-135M) against TRL")
            sections["real_shape"] = real_shape.run(work, args.real_shape_steps, args.repeats_real_shape,
                                                    ["full", "lora"], layers=args.real_shape_layers)
    if args.serve:
        import serve

        step("serving: batched against one at a time (bench/serve.py)")
        with tempfile.TemporaryDirectory(prefix="tunekit-bench-serve-") as folder:
            serve_started, serve_load = time.perf_counter(), os.getloadavg()
            work = Path(folder)
            served = serve.run(build_tiny_model(work), work, list(serve.LEVELS), 16 if args.quick else 64,
                               1 if args.quick else 2)
            serve.save(served, serve_load, serve_started, "serve-quick" if args.quick else "serve")
    results = summary(sections)
    results["machine"] = machine(load_before, os.getloadavg(), time.perf_counter() - started)
    results["settings"] = vars(args)
    results["sections"] = sections
    write(results, "quick" if args.quick else "latest")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one repeat of everything, 4 steps")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per training run")
    parser.add_argument("--eval-every", type=int, default=6)
    parser.add_argument("--rss-steps", type=int, default=8, help="steps of the peak-memory runs")
    parser.add_argument("--num-proc", type=int, default=1, help="tunekit's data.num_proc (1: its default, "
                        "faster than 2 on 2 cores, see docs/throughput.md)")
    parser.add_argument("--repeats-train", type=int, default=3)
    parser.add_argument("--repeats-preprocess", type=int, default=5)
    parser.add_argument("--repeats-generate", type=int, default=3)
    parser.add_argument("--repeats-memory", type=int, default=1)
    parser.add_argument("--no-real-shape", dest="real_shape", action="store_false",
                        help="skip the SmolLM2-shaped training against TRL (the longest section)")
    parser.add_argument("--real-shape-steps", type=int, default=3, help="steps per real-shape run, "
                        "the first a warm-up")
    parser.add_argument("--repeats-real-shape", type=int, default=1)
    parser.add_argument("--no-serve", dest="serve", action="store_false",
                        help="skip serving under 1/8/32 concurrent clients (bench/serve.py)")
    args = parser.parse_args()
    args.real_shape_layers = None  # SmolLM2's 30
    if args.quick:
        args.steps, args.eval_every, args.rss_steps = 4, 2, 2
        args.repeats_train = args.repeats_preprocess = args.repeats_generate = args.repeats_memory = 1
        args.real_shape_steps, args.repeats_real_shape, args.real_shape_layers = 2, 1, 2
    return args


def step(name: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {name}", flush=True)


def summary(s: dict) -> dict:
    """The headline numbers: medians of the paired ratios."""
    t = s["training"]
    reached = t["time_to_eval_loss"]
    return {
        "train_tokens_per_s_ratio": t["tokens_per_s"]["median_ratio"],
        "padding_fraction_baseline": t["padding_baseline"],
        "padding_fraction_tunekit": t["padding_tunekit"],
        "peak_rss_ratio": s["memory"]["peak"]["median_ratio"],
        "preprocess_cold_ratio": s["preprocess"]["cold"]["median_ratio"],
        "preprocess_warm_ratio": s["preprocess"]["warm"]["median_ratio"],
        "generate_batch_ratio": s["generation"]["prompts_per_s"]["median_ratio"],
        "time_to_eval_loss_ratio": reached["median_ratio"] if reached else None,
    }


def machine(load_before, load_after, seconds: float) -> dict:
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": THREADS, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after], "bench_seconds": round(seconds, 1)}


def write(results: dict, name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    table = markdown(results)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (RESULTS / f"{name}.md").write_text(table, encoding="utf-8")
    print(table)
    print(f"[bench] wrote {RESULTS / name}.json and .md")


def markdown(results: dict) -> str:
    s, m = results["sections"], results["machine"]
    sides = {
        "train_tokens_per_s_ratio": s["training"]["tokens_per_s"],
        "peak_rss_ratio": s["memory"]["peak"],
        "preprocess_cold_ratio": s["preprocess"]["cold"],
        "preprocess_warm_ratio": s["preprocess"]["warm"],
        "generate_batch_ratio": s["generation"]["prompts_per_s"],
        "time_to_eval_loss_ratio": s["training"]["time_to_eval_loss"],
    }
    lines = ["| measurement | baseline | tunekit | tunekit / baseline | target | met |",
             "|---|---|---|---|---|---|"]
    for key, (what, higher, target, unit) in TARGETS.items():
        ratio, pairs = results[key], sides[key]
        if ratio is None or pairs is None:
            lines.append(f"| {what} | | | not reached | {'≥' if higher else '≤'} {target} | no |")
            continue
        met = ratio >= target if higher else ratio <= target
        lines.append(f"| {what} | {median(pairs['baseline'])} {unit} | {median(pairs['tunekit'])} {unit} "
                     f"| **{ratio:.2f}** | {'≥' if higher else '≤'} {target} | {'yes' if met else 'no'} |")
    lines.append(f"| padding fraction of the batches | {results['padding_fraction_baseline']:.1%} "
                 f"| {results['padding_fraction_tunekit']:.1%} | | | |")
    lines.append("")
    lines.append(f"Measured on {m['cpu']}, {m['cores']} cores, torch {m['torch']} on {m['torch_threads']} threads, "
                 f"{m['date']}; load average {m['load_average_before'][0]} before and {m['load_average_after'][0]} "
                 f"after (a shared machine); the bench took {m['bench_seconds']:.0f} s. Medians of "
                 f"{results['settings']['repeats_train']} training, {results['settings']['repeats_preprocess']} "
                 f"preprocessing and {results['settings']['repeats_generate']} generation pairs.")
    if "real_shape" in s:
        import real_shape

        lines += [""] + real_shape.markdown(s["real_shape"])
    return "\n".join(lines) + "\n"


def median(values: list[float]) -> str:
    import statistics

    value = statistics.median(values)
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


if __name__ == "__main__":
    main()
