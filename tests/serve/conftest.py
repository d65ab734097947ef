"""Fixtures for the inference tests: a tiny model fine-tuned to answer briefly, the engine on
it, and the API and web UI server processes on it.

`brief_run` fine-tunes the tiny qwen2 model (method full, a few dozen steps) to answer every
question with BRIEF_ANSWER and end the turn, so a correct engine stops after 8 tokens; one
that ignores the run's end-of-turn token runs to max_new_tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_config
from serve_helpers import API_KEY, BRIEF_ANSWER, QUESTIONS, Server, free_port, tool_rows


@pytest.fixture(scope="session")
def brief_run(tiny_model_dir, tmp_path_factory, cache_dir) -> Path:
    folder = tmp_path_factory.mktemp("brief")
    data = folder / "brief.json"
    data.write_text(json.dumps([{"instruction": q, "output": BRIEF_ANSWER} for q in QUESTIONS], ensure_ascii=False),
                    encoding="utf-8")
    return train_full(tiny_model_dir, data, folder / "run", cache_dir, cutoff_len=48, max_steps=30)


def train_full(model_dir, data: Path, output: Path, cache_dir, cutoff_len: int, max_steps: int) -> Path:
    """Full fine-tuning of the tiny model on one data file, fast and hard enough to memorise it."""
    from tunekit.train.run import train

    cfg = make_config(model_dir, output, cache_dir, data={"datasets": [{"path": str(data)}], "cutoff_len": cutoff_len},
                      method={"name": "full"},
                      train={"max_steps": max_steps, "learning_rate": 3e-3, "lr_scheduler": "constant",
                             "batch_size": 8, "logging_steps": 10})
    return train(cfg)


@pytest.fixture(scope="session")
def tool_run(tiny_model_dir, tmp_path_factory, cache_dir) -> Path:
    """The tiny qwen2 model fine-tuned (full) on tool calls and two-turn reasoning (serve_helpers.tool_rows).
    Its own ChatML template has no tool branch: calls are trained as <tool_call> text, and the
    reasoning it drops is written back per turn."""
    folder = tmp_path_factory.mktemp("tools")
    data = folder / "tools.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in tool_rows()), encoding="utf-8")
    return train_full(tiny_model_dir, data, folder / "run", cache_dir, cutoff_len=160, max_steps=80)


@pytest.fixture(scope="session")
def tool_server(tool_run, tmp_path_factory):
    server = Server(["serve", str(tool_run), "--max-new-tokens", "96"], free_port(),
                    tmp_path_factory.mktemp("tool-server") / "api.log", "/health")
    yield server.wait_ready(timeout=300)
    server.stop()


@pytest.fixture(scope="session")
def engine(brief_run, tiny_lora_run):
    """The engine on the brief run, with the LoRA run's adapter loaded too (named 'lora')."""
    from tunekit.infer.engine import Engine

    with Engine.load(str(brief_run), adapters=[str(tiny_lora_run)]) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def servers(brief_run, tiny_lora_run, tmp_path_factory):
    """API and web UI processes, started together so they load while other tests run."""
    logs = tmp_path_factory.mktemp("server-logs")
    common = [str(brief_run), "--adapter", str(tiny_lora_run), "--max-new-tokens", "64"]
    started = {
        "api": Server(["serve", *common, "--api-key", API_KEY, "--max-tokens-cap", "256",
                       "--max-request-bytes", "65536"], free_port(), logs / "api.log", "/health"),
        "webui": Server(["webui", *common], free_port(), logs / "webui.log", "/"),
    }
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(scope="session")
def api_server(servers) -> Server:
    return servers["api"].wait_ready()


@pytest.fixture(scope="session")
def webui_server(servers) -> Server:
    return servers["webui"].wait_ready()
