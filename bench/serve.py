"""Serving under concurrent load: `tunekit serve` batching against one answer at a time.

    .venv/bin/python bench/serve.py               # 1, 8, 32 clients; writes bench/results/serve.{json,md}
    .venv/bin/python bench/serve.py --quick       # 1 and 8 clients, short answers
    .venv/bin/python bench/serve.py --model DIR   # another model directory (e.g. on a GPU machine)
    .venv/bin/python bench/serve.py --model DIR --backend vllm --max-tokens 256   # GPU: vLLM's batching
                                                  # (pip install 'tunekit[vllm]'; writes serve-vllm.{json,md})

`make bench` runs it too (bench/run.py, last section; --no-serve skips it).

Two `tunekit serve` processes on the same model directory, started together: the batching
one (default settings, up to 32 answers share each forward pass) and the one-at-a-time one
(`--no-batching`: one `generate` call per answer after another, the engine before batching). Each
concurrency level sends the same requests to both, interleaved (which server goes first
alternates), through the official `openai` client, streaming with usage. Measured per side:
aggregate output tokens/s (completion tokens of all clients / wall time), p50/p95 time to
first token, p50 inter-token latency (gaps between content chunks), and whether the greedy
answers are identical. The tiny random model never says end-of-turn, so every answer is
max_tokens long. Each client sends 8 requests one after another (with 2, the whole 32-client
run lasted about a second, mostly ramp-up and tail). Both servers run on `tunekit serve`'s
default torch threads (every core but one; the count is read from their start-up line).
Targets at 32 clients: >= 6x tokens/s, p50 TTFT <= 2 s, identical answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import BENCH, ROOT, build_tiny_model, setup

RESULTS = BENCH / "results"
LEVELS = (1, 8, 32)


def main() -> None:
    args = parse_args()
    setup()
    load_before, started = os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tunekit-bench-serve-") as folder:
        model = Path(args.model) if args.model else build_tiny_model(Path(folder))
        results = run(model, Path(folder), args.levels, args.max_tokens, args.rounds, args.backend)
    name = "serve" + ("-vllm" if args.backend == "vllm" else "") + ("-quick" if args.quick else "")
    save(results, load_before, started, name)


def save(results: dict, load_before, started: float, name: str) -> None:
    """Machine and load into results; bench/results/NAME.json and .md; the table printed."""
    results["machine"] = {"load_average_before": [round(x, 2) for x in load_before],
                          "load_average_after": [round(x, 2) for x in os.getloadavg()],
                          "cores": len(os.sched_getaffinity(0)),
                          "date": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.perf_counter() - started)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    table = markdown(results)
    (RESULTS / f"{name}.md").write_text(table, encoding="utf-8")
    print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: tunekit's tiny random qwen2)")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="concurrent clients")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per answer")
    parser.add_argument("--rounds", type=int, default=8, help="requests each client sends, one after another")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                        help="the batched side's backend (the one-at-a-time side is always hf)")
    parser.add_argument("--quick", action="store_true", help="1 and 8 clients, 16 tokens, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.max_tokens, args.rounds = [1, 8], 16, 1
    return args


def run(model: Path, folder: Path, levels: list[int], max_tokens: int, rounds: int, backend: str = "hf") -> dict:
    servers = {"one_at_a_time": Server(model, folder / "one.log", "--no-batching"),
               "batched": Server(model, folder / "batched.log", "--backend", backend)}
    try:
        for server in servers.values():
            server.wait_ready()
        threads = {name: server.torch_threads() for name, server in servers.items()}
        out = {}
        for i, clients in enumerate(levels):
            order = list(servers.items()) if i % 2 == 0 else list(reversed(servers.items()))
            measured = {name: asyncio.run(load(server.url, clients, rounds, max_tokens)) for name, server in order}
            out[str(clients)] = summarize(measured)
            print(f"[bench] {clients} clients: {json.dumps(out[str(clients)]['ratio'])}", flush=True)
        return {"levels": out, "max_tokens": max_tokens, "rounds": rounds, "backend": backend,
                "torch_threads": threads}
    finally:
        for server in servers.values():
            server.stop()


class Server:
    def __init__(self, model: Path, log: Path, *extra: str):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, "OMP_WAIT_POLICY": "PASSIVE",
               "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen([sys.executable, "-m", "tunekit", "serve", str(model), "--port", str(port),
                                         "--max-tokens-cap", "4096", *extra],
                                        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        self.log = log

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"server not ready after {timeout} s:\n{self.log.read_text()}")

    def torch_threads(self) -> int | None:
        """The torch threads the server says it runs on (its own default: every core but one)."""
        found = re.search(r"(\d+) torch threads", self.log.read_text(errors="replace"))
        return int(found.group(1)) if found else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def questions(count: int) -> list[str]:
    rows = json.loads((BENCH / "data" / "alpaca_eval.json").read_text(encoding="utf-8"))
    return [rows[i % len(rows)]["instruction"] for i in range(count)]


async def load(url: str, clients: int, rounds: int, max_tokens: int) -> dict:
    import openai

    asked = questions(clients * rounds)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600) as api:
        model = (await api.models.list()).data[0].id

        async def client(k: int) -> list[dict]:
            return [await one(api, model, asked[k * rounds + r], max_tokens) for r in range(rounds)]

        started = time.perf_counter()
        answers = [a for per_client in await asyncio.gather(*(client(k) for k in range(clients))) for a in per_client]
        wall = time.perf_counter() - started
    return {"wall_s": wall, "answers": answers}


async def one(api, model: str, question: str, max_tokens: int) -> dict:
    sent = time.perf_counter()
    stream = await api.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                               max_tokens=max_tokens, stream=True,
                                               stream_options={"include_usage": True})
    times, text, tokens = [], [], 0
    async for chunk in stream:
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
            text.append(chunk.choices[0].delta.content)
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"ttft": times[0] - sent if times else None, "gaps": gaps, "tokens": tokens, "text": "".join(text)}


def summarize(measured: dict) -> dict:
    sides = {}
    for name, m in measured.items():
        answers = m["answers"]
        ttfts = sorted(a["ttft"] for a in answers if a["ttft"] is not None)
        gaps = [g for a in answers for g in a["gaps"]]
        sides[name] = {"tokens_per_s": round(sum(a["tokens"] for a in answers) / m["wall_s"], 1),
                       "wall_s": round(m["wall_s"], 2), "ttft_p50_s": round(statistics.median(ttfts), 3),
                       "ttft_p95_s": round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))], 3),
                       "itl_p50_s": round(statistics.median(gaps), 4) if gaps else None}
    base, ours = measured["one_at_a_time"]["answers"], measured["batched"]["answers"]
    same = sum(a["text"] == b["text"] for a, b in zip(base, ours))
    return {**sides, "identical_answers": f"{same}/{len(base)}",
            "ratio": {"tokens_per_s": round(sides["batched"]["tokens_per_s"] / sides["one_at_a_time"]["tokens_per_s"],
                                            2), "identical": same == len(base)}}


def markdown(results: dict) -> str:
    lines = ["| clients | side | output tokens/s | p50 TTFT (s) | p95 TTFT (s) | p50 inter-token (s) | batched / one |",
             "|---|---|---|---|---|---|---|"]
    for clients, level in results["levels"].items():
        for name in ("one_at_a_time", "batched"):
            s = level[name]
            ratio = f"**{level['ratio']['tokens_per_s']:.2f}x**, answers identical {level['identical_answers']}" \
                if name == "batched" else ""
            lines.append(f"| {clients} | {name.replace('_', ' ')} | {s['tokens_per_s']} | {s['ttft_p50_s']} "
                         f"| {s['ttft_p95_s']} | {s['itl_p50_s']} | {ratio} |")
    m = results["machine"]
    lines += ["", f"{results['max_tokens']} tokens per answer, {results['rounds']} requests per client; "
              f"{m['cores']} cores, servers on {results.get('torch_threads')} torch threads (tunekit serve's "
              f"default: every core but one), {m['date']}; load average "
              f"{m['load_average_before'][0]} before and {m['load_average_after'][0]} after (a shared machine); "
              f"took {m['seconds']} s. Targets at 32 clients: >= 6x tokens/s, p50 TTFT <= 2 s, identical answers."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
