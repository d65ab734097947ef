"""Fixtures for multi-process runs on the CPU: a YAML config on disk, a launcher command, a reference run.

Every launch hides the GPUs (CUDA_VISIBLE_DEVICES="") so the processes talk over gloo on the
CPU on any machine, one thread each, as a user's `torchrun ... -m tunekit train` would.
"""

import sys
from pathlib import Path

import pytest
from distributed_helpers import GLOBAL_BATCH, run, write_config


@pytest.fixture(scope="session")
def reference_run(tiny_model_dir, tmp_path_factory) -> Path:
    """One process, the whole global batch per step: the run every multi-process run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = write_config(tmp / "cfg.yaml", tiny_model_dir, tmp / "run", tmp / "cache",
                       train={"batch_size": GLOBAL_BATCH})
    run([sys.executable, "-m", "tunekit", "train", str(cfg)])
    return tmp / "run"
