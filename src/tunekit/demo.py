"""The embedded default: build, fine-tune and evaluate a tiny model offline, in a few minutes.

    tunekit demo [--workdir runs/demo]

1. `init-model` builds a small random qwen2 model with a tokenizer trained on the corpus the
   project ships (src/tunekit/assets/corpus) and the demo task's text;
2. it is fine-tuned (method full: the model is random, so everything must learn) on a
   Chinese entity-extraction task in the instruct/query/answer shape
   (src/tunekit/assets/demo/ner_train.jsonl);
3. held-out exact match is measured before and after with greedy decoding, through the
   same engine that `tunekit chat` uses, and printed as a table with a few generations.

The run directory it writes is a normal one: chat, serve, eval and compare work on it.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

from tunekit.config import DatasetSpec, from_dict, validate
from tunekit.data.formats import load_records
from tunekit.data.records import Conversation
from tunekit.eval.metrics import exact_match as matches

ASSETS = resources.files("tunekit.assets")

# Measured on 2 CPU cores: see README ("The demo").
DEMO_TRAINING = {
    "cutoff_len": 128,  # the longest sample is 57 tokens
    "num_epochs": 1.0,
    "max_steps": 1500,
    "batch_size": 16,
    "learning_rate": 2.0e-3,  # 5e-3 diverges; 2e-3..3e-3 reach 92-99% held-out exact match
    "warmup_steps": 20,
}
CORPUS = ["corpus/wiki_en.txt", "corpus/alpaca_zh.json", "corpus/alpaca_en.json", "demo/ner_train.jsonl"]


def asset(path: str) -> Path:
    return Path(str(ASSETS.joinpath(path)))


def corpus_files() -> list[Path]:
    """Tokenizer training text: general text plus the task's (the held-out probe text stays out)."""
    return [asset(name) for name in CORPUS]


def demo_config(model_dir: Path, run_dir: Path, steps: int | None = None) -> dict:
    t = DEMO_TRAINING
    return {
        "model": {"name_or_path": str(model_dir)},
        # one sample per row: at this size, packed rows cost more attention than they save
        "data": {"datasets": [str(asset("demo/ner_train.jsonl"))], "cutoff_len": t["cutoff_len"], "packing": False},
        "method": {"name": "full"},
        "train": {"output_dir": str(run_dir), "num_epochs": t["num_epochs"], "max_steps": steps or t["max_steps"],
                  "batch_size": t["batch_size"], "learning_rate": t["learning_rate"],
                  "warmup_steps": t["warmup_steps"], "logging_steps": 25, "save_steps": 100000,
                  "overwrite": True, "report_to": ["tensorboard"]},
    }


def test_conversations(limit: int | None = None) -> list[Conversation]:
    records = load_records([DatasetSpec(path=str(asset("demo/ner_test.jsonl")))], "sft").records
    return records[:limit] if limit else records


def exact_match(engine, convs: list[Conversation], max_new_tokens: int = 32) -> tuple[float, list[tuple]]:
    from tunekit.infer.engine import GenerationParams

    prompts = [c.messages[:-1] for c in convs]
    replies = engine.batch(prompts, GenerationParams(max_new_tokens=max_new_tokens), batch_size=32)
    rows = [(c.messages[-2]["content"].split("\n")[-1], c.messages[-1]["content"].strip(), r.text.strip())
            for c, r in zip(convs, replies)]
    score = sum(matches(pred, ref, normalize_text=False) for _, ref, pred in rows) / max(len(rows), 1)
    return score, rows


def run_demo(workdir: Path, steps: int | None = None, test_limit: int | None = None, out=print) -> dict:
    from tunekit.infer.engine import Engine
    from tunekit.model.init_model import init_model
    from tunekit.train.run import train

    workdir = Path(workdir)
    model_dir, run_dir = workdir / "base-model", workdir / "run"
    timings, started = {}, time.perf_counter()
    out(f"1/4 building a small random model with a tokenizer trained on the shipped corpus -> {model_dir}")
    init_model("qwen2", "small", corpus_files(), model_dir, overwrite=True)
    timings["init-model"] = time.perf_counter() - started
    convs = test_conversations(test_limit)

    out(f"2/4 exact match of the untrained model on {len(convs)} held-out samples")
    t0 = time.perf_counter()
    before, _ = exact_match(Engine.load(str(model_dir)), convs)
    timings["eval before"] = time.perf_counter() - t0

    out(f"3/4 fine-tuning (method full) on {asset('demo/ner_train.jsonl').name} -> {run_dir}")
    t0 = time.perf_counter()
    cfg = from_dict(demo_config(model_dir, run_dir, steps))
    validate(cfg)
    train(cfg)
    timings["train"] = time.perf_counter() - t0

    out("4/4 exact match of the fine-tuned model")
    t0 = time.perf_counter()
    after, rows = exact_match(Engine.load(str(run_dir)), convs)
    timings["eval after"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    result = {"exact_match_before": before, "exact_match_after": after, "samples": len(convs),
              "seconds": {k: round(v, 1) for k, v in timings.items()}, "run_dir": str(run_dir)}
    (workdir / "demo_result.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    out(format_table(result, rows))
    return result


def format_table(result: dict, rows: list[tuple], shown: int = 4) -> str:
    lines = ["", "| held-out exact match | before | after |", "|---|---|---|",
             f"| {result['samples']} samples | {result['exact_match_before']:.0%} | {result['exact_match_after']:.0%} |",
             "", "sample generations after fine-tuning:"]
    for query, ref, pred in rows[:shown]:
        mark = "ok " if matches(pred, ref, normalize_text=False) else "BAD"
        lines.append(f"  [{mark}] {query}\n        -> {pred.replace(chr(10), ' | ')}")
    seconds = "  ".join(f"{k} {v:.0f}s" for k, v in result["seconds"].items())
    lines += ["", f"time: {seconds}", f"run directory: {result['run_dir']}  (try: tunekit chat {result['run_dir']})"]
    return "\n".join(lines)
