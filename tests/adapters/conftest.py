"""Fixtures for the adapter tests: short runs of the example configs and of LoRA, built once.

Runs train 2-3 steps at a high learning rate so that every adapter visibly changes the
model's outputs (an equality test between "merged" and "base + adapter" must not pass
because the adapter does nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from adapters_helpers import CONFIGS, example_overrides
from helpers import make_config


@pytest.fixture(scope="session")
def example_run(tiny_model_dir, tmp_path_factory, cache_dir):
    """example_run("dora") -> the run directory of `tunekit train configs/dora.yaml ...` (run once)."""
    from tunekit.cli import main

    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            out = tmp_path_factory.mktemp("examples") / name
            code = main(["train", str(CONFIGS / f"{name}.yaml"), *example_overrides(tiny_model_dir, out, cache_dir)])
            assert code == 0, f"tunekit train configs/{name}.yaml exited with {code}"
            done[name] = out
        return done[name]

    return run


def _lora_run(tiny_model_dir, tmp_path_factory, cache_dir, name, **method):
    from tunekit.train.run import train

    out = tmp_path_factory.mktemp("adapter-runs") / name
    cfg = make_config(tiny_model_dir, out, cache_dir, method={"name": "lora", "lora_r": 4, **method},
                      train={"max_steps": 3, "learning_rate": 0.02, "seed": len(name)})
    return train(cfg)


@pytest.fixture(scope="session")
def lora_a(tiny_model_dir, tmp_path_factory, cache_dir) -> Path:
    """LoRA r=4 on every linear layer."""
    return _lora_run(tiny_model_dir, tmp_path_factory, cache_dir, "lora_a")


@pytest.fixture(scope="session")
def lora_b(tiny_model_dir, tmp_path_factory, cache_dir) -> Path:
    """LoRA r=4 on the attention projections only, rsLoRA scaling (mixing must undo it)."""
    return _lora_run(tiny_model_dir, tmp_path_factory, cache_dir, "lora_bb", rslora=True,
                     lora_target=["q_proj", "k_proj", "v_proj", "o_proj"])


@pytest.fixture(scope="session")
def token_ids(tiny_model_dir):
    """A small batch of real token ids (two chat prompts of different lengths, right-padded)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                           add_generation_prompt=True)
             for q in ("找出句子中的人名和地名：江宁强明天从苏州来到兰州。", "hello")]
    return tokenizer(texts, return_tensors="pt", padding=True)
