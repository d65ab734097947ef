"""Fixtures for the preference / GRPO tests: the example configs run once each, on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from align_helpers import CONFIGS, TOPICS, animal_pairs, tiny_overrides


@pytest.fixture(scope="session")
def align_example(tiny_model_dir, tmp_path_factory):
    """align_example("dpo") -> the run directory of `tunekit train configs/dpo.yaml ...` (run once)."""
    from tunekit.cli import main

    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            out = tmp_path_factory.mktemp("align-examples") / name
            code = main(["train", str(CONFIGS / f"{name}.yaml"), *tiny_overrides(tiny_model_dir, out)])
            assert code == 0, f"tunekit train configs/{name}.yaml exited with {code}"
            done[name] = out
        return done[name]

    return run


@pytest.fixture(scope="session")
def learned_dpo(tiny_model_dir, tmp_path_factory):
    """(run directory, config, held-out pairs file): DPO (LoRA, RPO loss) on the animal preference of
    align_helpers, 20 topics twice for training, 10 other topics held out; 12 steps (~1 minute)."""
    import json
    import random

    from tunekit.config import load_config
    from tunekit.train.run import train

    folder = tmp_path_factory.mktemp("learned-dpo")
    rng = random.Random(0)
    (folder / "train.json").write_text(json.dumps(animal_pairs(TOPICS[:20] * 2, rng)))
    (folder / "test.json").write_text(json.dumps(animal_pairs(TOPICS[20:], rng)))
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.path={folder / 'train.json'}",
                             "data.cutoff_len=48", "train.stage=dpo", f"train.output_dir={folder / 'dpo'}",
                             "train.report_to=[]", "train.logging_steps=1", "train.seed=0", "train.max_steps=12",
                             "train.batch_size=8", "train.learning_rate=1e-2", "method.lora_r=8",
                             "align.loss_type=sigmoid,sft"])
    return train(cfg), cfg, folder / "test.json"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train several times faster on one thread when the machine is shared (measured:
    GRPO 20 steps 225 s -> 21 s at load average 13 on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
