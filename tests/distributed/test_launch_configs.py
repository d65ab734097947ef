"""The shipped accelerate configs parse as `accelerate launch` parses them; FSDP's can save full weights."""

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_multi_gpu_env
from helpers import ROOT

ACCELERATE = ROOT / "configs" / "accelerate"


@pytest.mark.parametrize("name, kind", [("ddp", DistributedType.MULTI_GPU), ("fsdp", DistributedType.FSDP)])
def test_accelerate_config_leaves_precision_to_tunekit(name, kind):
    config = load_config_from_file(str(ACCELERATE / f"{name}.yaml"))
    assert config.distributed_type == kind
    assert config.mixed_precision == "no"  # train.precision decides


def test_fsdp_config_builds_an_fsdp2_plugin_that_can_switch_to_full_state_dicts(monkeypatch):
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(ACCELERATE / "fsdp.yaml"), "--num_processes", "2",
                              "-m", "tunekit", "train", "cfg.yaml"])
    args = _validate_launch_command(args)[0]  # what `accelerate launch` does with the file
    for key, value in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and "SHARDED_STATE_DICT" in str(plugin.state_dict_type)
    plugin.set_state_dict_type("FULL_STATE_DICT")  # what tunekit.train.distributed.save_model does
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
