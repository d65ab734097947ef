"""GPU training benchmark: tokens/s, MFU and peak memory on a Qwen2.5-0.5B-shaped model in bf16.

    python bench/gpu_train.py              # a CUDA GPU: a few minutes on one H100
    python bench/gpu_train.py --dry-run    # the CPU, a tiny shape, fp32, seconds (the tests run this)

Installs nothing and needs no network: the model is Qwen2.5-0.5B's config with random
weights, built on the GPU; the batches are random token ids with the lengths of bench/data
under the real Qwen2.5 tokenizer and template (bench/data/qwen2_5_lengths.json), labels
-100 over each prompt. Full fine-tuning and LoRA (tunekit's method.lora defaults), each
with, in this process and on the same samples per step:

- tunekit packed: its collator for this model (one packed row with flash-attention varlen
  kwargs when flash-attn is installed, else bounded packed rows on sdpa);
- tunekit padded: pad-to-longest (data.packing: false);
- TRL padding-free: `SFTTrainer(padding_free=True)` with the same TrainingArguments, when
  trl is installed (skipped with a note otherwise).

Tokens/s counts loss-bearing tokens after `--warmup` steps; MFU is 6·N (full) or
4·N_frozen + 6·N_trainable (LoRA) FLOPs per real token over the bf16 matmul peak measured
in this run (an 8192³ product), and over the card's nominal dense bf16 peak when known.
Peak memory is torch.cuda.max_memory_allocated per run. Writes bench/results/gpu.json
(`--out` elsewhere) and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from real_shape import StepLog, flops_per_token, trl_args  # bench/ is not a package

LENGTHS = BENCH / "data" / "qwen2_5_lengths.json"
QWEN2_5_0_5B = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True,
                "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}
TINY = {**QWEN2_5_0_5B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 512}
NOMINAL_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}  # dense, no sparsity
SIDES = ("tunekit_packed", "tunekit_padded", "trl_padding_free")
PAD_ID = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, fp32, a few steps")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the measurement")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per step")
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/gpu.json; none on --dry-run)")
    args = parser.parse_args()
    if args.dry_run:
        args.steps, args.warmup, args.batch_size = 3, 1, 4
    elif args.out is None:
        args.out = BENCH / "results" / "gpu.json"
    if not 0 < args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and below --steps")
    return args


def samples(count: int, vocab: int, seed: int = 42) -> list[dict]:
    """Random ids with real prompt/answer lengths; labels are the answer ids, -100 over the prompt."""
    rng = random.Random(seed)
    lengths = json.loads(LENGTHS.read_text())
    rows = []
    for prompt, answer in (lengths[i % len(lengths)] for i in range(count)):
        ids = [rng.randrange(1, vocab) for _ in range(prompt + answer)]
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def attention() -> str:
    import torch

    return "flash_attention_2" if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") else "sdpa"


def build_model(shape: dict, dtype, device: str, method: str, tunekit_cfg):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from tunekit.model.adapters import apply_method

    torch.manual_seed(0)
    config = Qwen2Config(**shape, pad_token_id=PAD_ID, eos_token_id=1, use_cache=False)
    config._attn_implementation = attention()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tunekit_cfg.method.name = method
    return apply_method(model, tunekit_cfg.method)


def tunekit_config(precision: str, steps: int, batch_size: int, output_dir: Path):
    from tunekit.config import from_dict

    return from_dict({
        "model": {"name_or_path": "qwen2.5-0.5b-shape", "dtype": precision},
        "train": {"output_dir": str(output_dir), "max_steps": steps, "batch_size": batch_size, "learning_rate": 1e-4,
                  "precision": precision, "logging_steps": steps + 1, "save_steps": steps + 1, "report_to": []},
    })


def stand_in_tokenizer():
    """TRL wants a processing class (for its pad token); the ids are made up, so a two-token one."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(WordLevel({"<pad>": PAD_ID, "<eos>": 1}, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def trainer_for(side: str, model, cfg, rows, output_dir: Path):
    from transformers import Trainer

    from tunekit.data.collate import collator_for
    from tunekit.train.run import training_arguments

    args = training_arguments(cfg, output_dir, False)
    args.disable_tqdm = True
    if side.startswith("tunekit"):
        collator = collator_for(model, side == "tunekit_packed", PAD_ID)
        return Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
    from trl import SFTTrainer

    return SFTTrainer(model=model, args=trl_args(args, side, output_dir, None, 1), train_dataset=rows,
                      processing_class=stand_in_tokenizer())


def run_side(side: str, method: str, opts, shape: dict, device: str, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback

    precision = "fp32" if opts.dry_run else "bf16"
    cfg = tunekit_config(precision, opts.steps, opts.batch_size, work / side)
    dtype = torch.float32 if opts.dry_run else torch.bfloat16
    model = build_model(shape, dtype, device, method, cfg)
    rows = Dataset.from_list(samples(opts.steps * opts.batch_size, shape["vocab_size"]))
    trainer = trainer_for(side, model, cfg, rows, work / side)
    trainer.remove_callback(PrinterCallback)
    log = StepLog(trainer.data_collator)
    trainer.data_collator = log
    trainer.add_callback(log.callback())
    flops = flops_per_token(trainer.model)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    result = log.measured(flops, opts.warmup)
    result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None
    del trainer, model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def matmul_peak(device: str, dtype, size: int) -> float:
    import torch

    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    seconds = []
    for _ in range(12):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds[2:])


def main() -> None:
    opts = parse_args()
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if opts.dry_run:  # one passive thread: the tiny shape gains nothing from more, a shared CPU loses
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import tempfile

    import torch

    if opts.dry_run:
        torch.set_num_threads(1)
    device = "cpu" if opts.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here; run with --dry-run for the CPU smoke run")
    shape = TINY if opts.dry_run else QWEN2_5_0_5B
    sides = [s for s in SIDES if s.startswith("tunekit") or importlib.util.find_spec("trl")]
    if len(sides) < len(SIDES):
        print("note: trl is not installed here: no TRL padding-free side", flush=True)
    peak = matmul_peak(device, torch.float32 if opts.dry_run else torch.bfloat16, 256 if opts.dry_run else 8192)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    nominal = next((v for k, v in NOMINAL_BF16.items() if k in name), None) if device == "cuda" else None
    results = {"device": name, "attention": attention(), "shape": "tiny" if opts.dry_run else "Qwen2.5-0.5B",
               "steps": opts.steps, "warmup": opts.warmup, "samples_per_step": opts.batch_size,
               "measured_matmul_peak_flop_per_s": round(peak), "nominal_bf16_flop_per_s": nominal,
               "versions": versions(), "methods": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tunekit-gpu-bench-") as folder:
        for method in opts.methods:
            results["methods"][method] = {}
            for side in sides:
                result = run_side(side, method, opts, shape, device, Path(folder))
                result["mfu_measured_peak"] = result["flop_per_s"] / peak
                result["mfu_nominal"] = result["flop_per_s"] / nominal if nominal else None
                results["methods"][method][side] = result
                print(f"[gpu-bench] {method} {side}: {result['tokens_per_s']:,.0f} loss tokens/s", flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(table(results))
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"[gpu-bench] wrote {opts.out}")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "peft", "trl", "flash-attn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def table(results: dict) -> str:
    lines = [(f"{results['shape']} on {results['device']}, attention {results['attention']}, "
              f"{results['samples_per_step']} samples per step, {results['steps']} steps ({results['warmup']} warm-up); "
              f"measured matmul peak {results['measured_matmul_peak_flop_per_s'] / 1e12:.3g} TFLOP/s"), "",
             ("| method | side | loss tokens/s | padding | MFU (measured peak) | MFU (nominal) | peak GiB "
              "| tunekit packed / side |"), "|---|---|---|---|---|---|---|---|"]
    for method, sides in results["methods"].items():
        ours = sides["tunekit_packed"]["tokens_per_s"]
        for side, r in sides.items():
            nominal = f"{r['mfu_nominal']:.1%}" if r["mfu_nominal"] else "n/a"
            memory = r["peak_memory_gib"] if r["peak_memory_gib"] is not None else "n/a"
            ratio = "" if side == "tunekit_packed" else f"**{ours / r['tokens_per_s']:.2f}**"
            lines.append(f"| {method} | {side.replace('_', ' ')} | {r['tokens_per_s']:,.0f} | {r['padding']:.1%} "
                         f"| {r['mfu_measured_peak']:.1%} | {nominal} | {memory} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
