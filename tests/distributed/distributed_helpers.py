"""Plain helpers for the multi-process tests: a config on disk, launcher commands, loss curves."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import ROOT, make_config

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


def torchrun_launcher(nproc: int) -> list[str]:
    """torchrun on this machine with `nproc` processes; the program to launch follows."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


def torchrun(nproc: int, *args: str) -> list[str]:
    return [*torchrun_launcher(nproc), "-m", "tunekit", *args]


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
