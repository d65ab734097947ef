"""DeepSpeed: the shipped ZeRO configs, the checks before a run, the install hint, and saving gathered weights.

DeepSpeed is an optional extra that `make test` does not install: the last test runs ZeRO-3
LoRA on 2 CPU processes (gloo) only where it is installed.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from distributed_helpers import GLOBAL_BATCH, curve, run, torchrun, write_config
from helpers import ROOT
from safetensors.torch import load_file, save_file

from tunekit import cli
from tunekit.config import from_dict, load_config
from tunekit.errors import ConfigError, TunekitError
from tunekit.train import distributed
from tunekit.train.distributed import (
    DEEPSPEED_HINT,
    check_deepspeed,
    check_launch,
    check_saved_weights,
)

CONFIGS = sorted((ROOT / "configs" / "deepspeed").glob("*.json"))
# The "auto" values the HF Trainer fills from its arguments (transformers/integrations/deepspeed.py,
# HfTrainerDeepSpeedConfig.trainer_config_process / _finalize); an "auto" anywhere else reaches DeepSpeed.
HF_FILLS_AUTO = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
    "optimizer.params.lr", "optimizer.params.betas", "optimizer.params.eps", "optimizer.params.weight_decay",
    "scheduler.params.warmup_min_lr", "scheduler.params.warmup_max_lr", "scheduler.params.total_num_steps",
    "scheduler.params.warmup_num_steps", "fp16.enabled", "bf16.enabled", "zero_optimization.reduce_bucket_size",
    "zero_optimization.stage3_prefetch_bucket_size", "zero_optimization.stage3_param_persistence_threshold",
}


def auto_keys(node: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        if isinstance(value, dict):
            keys |= auto_keys(value, f"{prefix}{key}.")
        elif value == "auto":
            keys.add(prefix + key)
    return keys


def config(tmp_path, method="lora", **zero) -> object:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": zero}))
    return from_dict({"method": {"name": method}, "train": {"deepspeed": str(path)}})


def test_the_four_zero_configs_are_shipped():
    assert [p.name for p in CONFIGS] == ["ds_z2.json", "ds_z2_offload.json", "ds_z3.json", "ds_z3_offload.json"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_zero_config_matches_its_name_and_leaves_nothing_auto_that_the_trainer_does_not_fill(path):
    ds = json.loads(path.read_text(encoding="utf-8"))
    zero = ds["zero_optimization"]
    assert zero["stage"] == int(path.stem[4])
    offload = "_offload" in path.stem
    assert (zero.get("offload_optimizer", {}).get("device") == "cpu") == offload
    assert (zero.get("offload_param", {}).get("device") == "cpu") == (offload and zero["stage"] == 3)
    # ZeRO-Offload refuses the Trainer's torch optimizer: an offload config names DeepSpeed's own
    assert ("optimizer" in ds) == offload
    assert auto_keys(ds) <= HF_FILLS_AUTO
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_no_deepspeed_config_means_no_check():
    assert check_deepspeed(from_dict({})) is None


def test_a_missing_deepspeed_config_names_the_shipped_ones(tmp_path):
    cfg = from_dict({"train": {"deepspeed": str(tmp_path / "nope.json")}})
    with pytest.raises(ConfigError, match="configs/deepspeed/ds_z2.json"):
        check_deepspeed(cfg)


def test_a_deepspeed_config_that_is_not_json_is_refused(tmp_path):
    (tmp_path / "ds.json").write_text("{stage: 3")
    with pytest.raises(ConfigError, match="not valid JSON"):
        check_deepspeed(from_dict({"train": {"deepspeed": str(tmp_path / "ds.json")}}))


def test_zero3_with_qlora_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "deepspeed_installed", lambda: True)
    with pytest.raises(ConfigError, match="qlora"):
        check_deepspeed(config(tmp_path, "qlora", stage=3, stage3_gather_16bit_weights_on_model_save=True))
    assert check_deepspeed(config(tmp_path, "qlora", stage=2))["zero_optimization"]["stage"] == 2


def test_zero3_with_a_lora_reward_model_is_refused(tmp_path, monkeypatch):
    """A LoRA reward model is merged when saved, which ZeRO-3's partitioned weights cannot do (measured:
    a size-0 tensor error after training); ZeRO-2, or full fine-tuning under ZeRO-3, run (test_deepspeed_align)."""
    monkeypatch.setattr(distributed, "deepspeed_installed", lambda: True)
    cfg = config(tmp_path, "lora", stage=3, stage3_gather_16bit_weights_on_model_save=True)
    cfg.train.stage = "rm"
    with pytest.raises(ConfigError, match="ds_z2.json, or method full"):
        check_deepspeed(cfg)
    cfg.method.name = "full"
    assert check_deepspeed(cfg)["zero_optimization"]["stage"] == 3
    assert check_deepspeed(config(tmp_path, "lora", stage=2))["zero_optimization"]["stage"] == 2


def test_zero3_that_would_save_no_weights_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "deepspeed_installed", lambda: True)
    with pytest.raises(ConfigError, match="stage3_gather_16bit_weights_on_model_save: true"):
        check_deepspeed(config(tmp_path, stage=3))


def test_a_deepspeed_path_in_a_yaml_file_may_be_relative_to_that_file(tmp_path):
    (tmp_path / "ds.json").write_text("{}")
    (tmp_path / "cfg.yaml").write_text("train: {deepspeed: ds.json}\n")
    assert load_config(tmp_path / "cfg.yaml").train.deepspeed == str(tmp_path / "ds.json")


def test_fsdp_launch_refuses_deepspeed_and_qlora(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="keep one"):
        check_launch(config(tmp_path, stage=2))
    with pytest.raises(ConfigError, match="qlora"):
        check_launch(from_dict({"method": {"name": "qlora"}}))
    check_launch(from_dict({"method": {"name": "lora"}}))


def test_choosing_deepspeed_without_it_installed_prints_the_install_hint(tiny_model_dir, tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setattr(distributed, "deepspeed_installed", lambda: False)
    cfg = write_config(tmp_path / "cfg.yaml", tiny_model_dir, tmp_path / "run", tmp_path / "cache",
                       train={"deepspeed": str(ROOT / "configs" / "deepspeed" / "ds_z3.json")})
    status = cli.main(["train", str(cfg)])
    err = capsys.readouterr().err
    assert status == 1
    assert "error: train.deepspeed is set but DeepSpeed is not installed" in err
    assert DEEPSPEED_HINT in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_deepspeed_is_detected_as_missing_when_it_cannot_be_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    assert distributed.deepspeed_installed() is False


def test_an_adapter_saved_from_ungathered_shards_is_refused(tmp_path):
    empty = {"lora_A.weight": torch.zeros(0), "lora_B.weight": torch.zeros(0)}
    save_file(empty, tmp_path / "adapter_model.safetensors")
    with pytest.raises(TunekitError, match="not gathered"):
        check_saved_weights(tmp_path)


def test_a_run_directory_without_weights_is_refused(tmp_path):
    with pytest.raises(TunekitError, match="no weights"):
        check_saved_weights(tmp_path)


def test_full_weights_pass_the_check(tmp_path):
    save_file({"lora_A.weight": torch.ones(4, 8), "scale": torch.tensor(1.0)}, tmp_path / "adapter_model.safetensors")
    check_saved_weights(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason=f"DeepSpeed is not installed: {DEEPSPEED_HINT}")
def test_zero3_lora_saves_the_whole_adapter(tiny_model_dir, tmp_path, reference_run):
    cfg = write_config(tmp_path / "cfg.yaml", tiny_model_dir, tmp_path / "run", tmp_path / "cache",
                       train={"batch_size": GLOBAL_BATCH // 2,
                              "deepspeed": str(ROOT / "configs" / "deepspeed" / "ds_z3.json")})
    run(torchrun(2, "train", str(cfg)))
    assert curve(tmp_path / "run") == pytest.approx(curve(reference_run), rel=1e-4)
    trained = load_file(Path(tmp_path / "run" / "adapter_model.safetensors"))
    expected = load_file(reference_run / "adapter_model.safetensors")
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in expected.items()}
    for name in expected:
        assert torch.allclose(trained[name], expected[name], rtol=1e-3, atol=1e-6), name
