"""Multi-process training: the few decisions tunekit makes around torchrun, accelerate and DeepSpeed.

    torchrun --nproc_per_node 4 -m tunekit train cfg.yaml         # DDP
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m tunekit train cfg.yaml
    tunekit train cfg.yaml train.deepspeed=configs/deepspeed/ds_z3.json   (under torchrun)

tunekit has no distribution layer of its own: the launcher starts the processes and the HF
Trainer runs DDP, DeepSpeed ZeRO or FSDP. What is decided here, once:

- which process is the main one (global rank 0, tunekit/processes.py): it alone creates
  the run directory, tokenizes, logs and writes files; the others wait at a barrier;
- where no GPU is visible the processes talk over gloo on the CPU (`use_cpu`), so a
  CPU-only launch is a real data-parallel run and not N copies of one run;
- DeepSpeed is an optional extra: `check_launch` refuses, before any work, a DeepSpeed config
  that is missing, that cannot save the weights or that contradicts the method or FSDP, and
  names the install command when DeepSpeed is not installed;
- saving is collective: under ZeRO-3 and FSDP every process holds a shard, so every process
  calls `save_model`, which gathers the full weights (LoRA adapters included) to rank 0
  before rank 0 writes them; `check_saved_weights` then refuses an empty file.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from tunekit.config import LORA_METHODS
from tunekit.errors import ConfigError, TunekitError
from tunekit.processes import (  # noqa: F401  (re-exported: the training side's one import)
    BARRIER_TIMEOUT, barrier, is_distributed, is_main_process, main_process_first, use_cpu, world_size)
DEEPSPEED_HINT = "pip install 'tunekit[deepspeed]'"
GATHER_ON_SAVE = "stage3_gather_16bit_weights_on_model_save"


def deepspeed_installed() -> bool:
    try:
        return importlib.util.find_spec("deepspeed") is not None
    except ValueError:  # a module object without a spec, e.g. sys.modules["deepspeed"] = None
        return False


def check_launch(cfg) -> None:
    """Before any work: refuse engine choices that contradict each other or the method."""
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    if fsdp and cfg.train.deepspeed:
        raise ConfigError("launched with FSDP (configs/accelerate/fsdp.yaml) and train.deepspeed is set: they are "
                          "two ways of sharding; keep one (for DeepSpeed launch with torchrun or "
                          "configs/accelerate/ddp.yaml)")
    if fsdp and cfg.method.name == "qlora":
        raise ConfigError("FSDP cannot shard the 4-bit weights of method qlora: launch with torchrun (DDP) or use "
                          "train.deepspeed=configs/deepspeed/ds_z2.json")
    check_deepspeed(cfg)


def check_deepspeed(cfg) -> dict | None:
    """The DeepSpeed config named by train.deepspeed, refused with the fix when it cannot work."""
    path = cfg.train.deepspeed
    if not path:
        return None
    ds = read_deepspeed_config(path)
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage == 3 and cfg.method.name == "qlora":
        raise ConfigError(f"train.deepspeed {path} is ZeRO-3, which cannot shard the 4-bit weights of method qlora: "
                          "use configs/deepspeed/ds_z2.json (or ds_z2_offload.json), or method lora with ZeRO-3")
    if stage == 3 and cfg.train.stage == "rm" and cfg.method.name in LORA_METHODS:
        raise ConfigError(f"train.deepspeed {path} is ZeRO-3, and a LoRA reward model is merged into its base when "
                          "saved (so that its run directory loads as a classifier), which needs every weight whole "
                          "on one process: use configs/deepspeed/ds_z2.json, or method full with ZeRO-3")
    if stage == 3 and ds["zero_optimization"].get(GATHER_ON_SAVE) is not True:
        raise ConfigError(f"train.deepspeed {path} is ZeRO-3 without zero_optimization.{GATHER_ON_SAVE}: true, so "
                          "the run directory would get no weights; set it to true (as configs/deepspeed/ds_z3.json)")
    if not deepspeed_installed():
        raise ConfigError(f"train.deepspeed is set but DeepSpeed is not installed: {DEEPSPEED_HINT} "
                          "(it builds against the installed torch; needs a GPU machine), or remove train.deepspeed")
    return ds


def read_deepspeed_config(path: str | Path) -> dict:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"train.deepspeed: {path} is not a file; give a DeepSpeed JSON config, e.g. "
                          "configs/deepspeed/ds_z2.json (ZeRO-2) or ds_z3.json (ZeRO-3)")
    try:
        ds = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"train.deepspeed: {path} is not valid JSON: {exc}") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"train.deepspeed: {path} must hold a JSON object of DeepSpeed settings")
    return ds


def save_model(trainer, run_dir: Path) -> None:
    """Collective: every process calls it. Gathers sharded weights (ZeRO-3, FSDP) to rank 0, which writes.

    The Trainer gathers ZeRO-3 shards (trainable ones only for a peft model) and FSDP's full
    state dict in collective calls, so a rank that skipped this would leave the others
    waiting, and saving the peft model directly would write the empty local shards.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(run_dir))
    barrier()
    if is_main_process():
        check_saved_weights(run_dir)


def check_saved_weights(run_dir: Path) -> None:
    """Refuse a run directory whose weights are missing or hold empty tensors (an ungathered shard)."""
    from safetensors import safe_open

    files = sorted(Path(run_dir).glob("*.safetensors"))
    if not files:
        raise TunekitError(f"no weights were written to {run_dir}: under DeepSpeed ZeRO-3 set zero_optimization."
                           f"{GATHER_ON_SAVE}: true; under FSDP launch with configs/accelerate/fsdp.yaml")
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            empty = [k for k in f.keys() if 0 in f.get_slice(k).get_shape()]
            if not list(f.keys()) or empty:
                raise TunekitError(f"{file} holds empty weights ({', '.join(empty[:3]) or 'no tensors'}): the "
                                   "ZeRO-3 / FSDP shards were not gathered before saving; the checkpoints under "
                                   "checkpoints/ keep the trained state (DeepSpeed's zero_to_fp32.py recovers it)")
