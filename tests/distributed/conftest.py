"""Fixtures for multi-process runs on the CPU: a YAML config on disk, a launcher command, a reference run.

Every launch hides the GPUs (CUDA_VISIBLE_DEVICES="") so the processes talk over gloo on the
CPU on any machine, one thread each, as a user's `torchrun ... -m tunekit train` would.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _root_conftest():
    """tests/conftest.py as a module of its own (pytest imports every conftest.py as "conftest")."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("tunekit_tests_root_conftest_distributed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_root = _root_conftest()
make_config = _root.make_config
# Test modules collected after this folder that `from conftest import ...` get this module.
NER_TRAIN, NER_TEST, ASSETS, SHARED, CORPUS, ROOT = (_root.NER_TRAIN, _root.NER_TEST, _root.ASSETS, _root.SHARED,
                                                     _root.CORPUS, _root.ROOT)
STEPS = 4
GLOBAL_BATCH = 8
LAUNCH_TIMEOUT = 300  # seconds; a run takes about 25 s on 2 cores


def write_config(path: Path, model_dir, output_dir, cache, **sections) -> Path:
    """A YAML config for a short LoRA run (make_config's), written where a launcher can read it."""
    sections.setdefault("train", {}).update(max_steps=STEPS, report_to=[])
    cfg = make_config(model_dir, output_dir, cache, **sections)
    path.write_text(yaml.safe_dump(cfg.to_dict(), allow_unicode=True), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false")
    return env


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "tunekit", *args]


def accelerate_launch(config_file: str, nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / config_file),
            "--num_processes", str(nproc), "--main_process_port", str(free_port()), "-m", "tunekit", *args]


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=ROOT, env=launch_env(), capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-4000:]}"
    return result


def curve(run_dir: Path, key: str = "loss") -> list[float]:
    """One logged value per step from metrics.jsonl (loss, grad_norm, ...)."""
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r[key] for r in records if key in r]


@pytest.fixture(scope="session")
def reference_run(tiny_model_dir, tmp_path_factory) -> Path:
    """One process, the whole global batch per step: the run every multi-process run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = write_config(tmp / "cfg.yaml", tiny_model_dir, tmp / "run", tmp / "cache",
                       train={"batch_size": GLOBAL_BATCH})
    run([sys.executable, "-m", "tunekit", "train", str(cfg)])
    return tmp / "run"
