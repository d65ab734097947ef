"""The example configs of the adapter methods train end to end from the CLI, and their runs load for inference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from adapters_helpers import CONFIGS, EXAMPLES

from tunekit.config import load_config
from tunekit.model.multi import load_adapters

PEFT_TYPES = {"qlora4": "LORA", "qlora8": "LORA", "dora": "LORA", "prefix": "PREFIX_TUNING", "ptuning": "P_TUNING"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_config_header_shows_its_command_and_data_resolves(name):
    text = (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8")
    assert f"tunekit train configs/{name}.yaml" in text.split("\nmodel:")[0]
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert all(Path(spec.path).is_file() for spec in cfg.data.datasets)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_config_trains_a_loadable_adapter(example_run, name):
    run = example_run(name)
    meta = json.loads((run / "tunekit.json").read_text())
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["peft_type"] == PEFT_TYPES[name]
    assert meta["steps"] == 2 and math.isfinite(meta["final_loss"])
    assert adapter.get("use_dora", False) == (name == "dora")
    if name.startswith("qlora"):
        assert meta["method"] == "qlora" and meta["config"]["method"]["bits"] == int(name[-1])


@pytest.mark.parametrize("name", ["prefix", "ptuning"])
def test_prompt_runs_generate_with_their_virtual_tokens(example_run, token_ids, name):
    """Cached generation equals step-by-step argmax over the whole sequence, and differs from the base."""
    model, _ = load_adapters([example_run(name)], dtype="fp32")
    prompt = {"input_ids": token_ids["input_ids"][:1], "attention_mask": token_ids["attention_mask"][:1]}
    generated = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    sequence = prompt["input_ids"]
    with torch.no_grad():
        for _ in range(6):
            logits = model(input_ids=sequence, attention_mask=torch.ones_like(sequence)).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        with model.disable_adapter():
            base_logits = model(**prompt).logits
        tuned_logits = model(**prompt).logits
    assert torch.equal(generated, sequence[:, : generated.shape[1]])  # generation may stop early at eos
    assert not torch.allclose(tuned_logits[:, -prompt["input_ids"].shape[1]:], base_logits, atol=1e-3)
