"""Preference stages under DeepSpeed: DPO with LoRA and with full fine-tuning (and its frozen
reference copy) under the shipped ZeRO-2 config, one CPU process launched by torchrun as the
SFT DeepSpeed test launches it, trains like the plain run: the same losses and reward margins,
and the same weights saved into a run directory that merge and chat read.

DeepSpeed is an optional extra that `make test` does not install: these tests run only where
it is installed.
"""

import importlib.util
import sys

import pytest
import torch
from distributed_helpers import GLOBAL_BATCH, curve, run, torchrun
from helpers import ROOT
from safetensors.torch import load_file
from test_ddp_align import dpo_args
from transformers import AutoModelForCausalLM

from tunekit.train.distributed import DEEPSPEED_HINT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                 reason=f"DeepSpeed is not installed: {DEEPSPEED_HINT}")]
ZERO2 = f"train.deepspeed={ROOT / 'configs' / 'deepspeed' / 'ds_z2.json'}"
WEIGHTS = {"lora": "adapter_model.safetensors", "full": "model.safetensors"}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_dpo_under_zero2_trains_like_the_plain_run(tiny_model_dir, tmp_path, method):
    plain, zero2 = tmp_path / "plain", tmp_path / "zero2"
    run([sys.executable, "-m", "tunekit", *dpo_args(tiny_model_dir, plain, GLOBAL_BATCH, f"method.name={method}")])
    run(torchrun(1, *dpo_args(tiny_model_dir, zero2, GLOBAL_BATCH, f"method.name={method}", ZERO2)))
    for key in ("loss", "rewards/margins", "rewards/chosen"):
        assert curve(zero2, key) == pytest.approx(curve(plain, key), rel=1e-3, abs=1e-5), key
    assert any(abs(m) > 1e-3 for m in curve(plain, "rewards/margins")[1:])  # the policy left its reference
    trained, expected = load_file(zero2 / WEIGHTS[method]), load_file(plain / WEIGHTS[method])
    assert expected.keys() <= trained.keys()  # a full ZeRO save also writes the tied lm_head.weight
    for name in expected:
        difference = (trained[name] - expected[name]).norm() / expected[name].norm().clamp_min(1e-12)
        assert difference < 1e-2, (name, float(difference))
    if method == "lora":
        return
    state = AutoModelForCausalLM.from_pretrained(zero2).state_dict()
    assert all(torch.equal(state[name], trained[name]) for name in trained if name in state)
