"""Crash matrix: kill -9 and a full disk at each write tunekit makes, then the next command must work.

| write            | kill -9 (a subprocess killed mid-write)     | full disk (ENOSPC from the write itself)   |
|------------------|---------------------------------------------|--------------------------------------------|
| checkpoint       | torn trainer_state.json -> resume from the  | clear message naming the last complete     |
|                  | previous complete checkpoint, steps 1, 2    | checkpoint; the torn one removed; resume   |
| metrics.jsonl    | torn last line -> resume repairs it, plot   | clear message; resume completes            |
|                  | and tunekit.json written, no repeated steps |                                            |
| cache shard      | hidden temp file -> removed by the next     | clear message; no temp file left, no       |
|                  | run, which finishes the entry               | finished entry                             |
| merge output     | nothing under the final name; merge again   | clear message; nothing under the final     |
|                  | succeeds                                    | name, no temp folder left                  |

Plus the definition of a complete checkpoint on hand-made folders (torn, unmarked, half-deleted).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import NER_TRAIN, ROOT
from reliability_helpers import hidden_leftovers, run_cli

DRIVER = Path(__file__).with_name("crash_driver.py")
KILLED = -signal.SIGKILL


def write_config(folder: Path, model_dir: Path, cache: Path, **train) -> Path:
    raw = {"model": {"name_or_path": str(model_dir)},
           "data": {"datasets": [{"path": str(NER_TRAIN), "max_samples": 32}], "cutoff_len": 64,
                    "cache_dir": str(cache)},
           "method": {"name": "lora", "lora_r": 4},
           "train": {"output_dir": str(folder / "run"), "max_steps": 2, "batch_size": 4, "logging_steps": 1,
                     "save_steps": 1, "save_total_limit": 2, "learning_rate": 1e-3, "report_to": [], **train}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def crash(point: str, *argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(DRIVER), point, *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=600)


def steps(run: Path) -> list[int]:
    from tunekit.train.callbacks import read_metrics

    return [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def assert_resumes_to_the_end(config: Path, capsys) -> Path:
    code, out, err = run_cli(["train", config, "train.resume=true"], capsys)
    assert code == 0, err
    run = Path(yaml.safe_load(config.read_text())["train"]["output_dir"])
    assert steps(run) == [1, 2]  # each step once, in order: nothing repeated or backwards
    assert json.loads((run / "tunekit.json").read_text())["steps"] == 2
    assert (run / "loss.png").is_file()
    return run


# -- kill -9 -------------------------------------------------------------------------------------
def test_kill_during_checkpoint_save_resumes_from_the_previous_complete_one(tmp_path, tiny_model_dir, capsys):
    from tunekit.train.checkpoints import last_complete_checkpoint

    config = write_config(tmp_path, tiny_model_dir, tmp_path / "cache")
    result = crash("checkpoint", "train", config)
    assert result.returncode == KILLED, result.stderr
    checkpoints = tmp_path / "run" / "checkpoints"
    torn = checkpoints / "checkpoint-2" / "trainer_state.json"
    with pytest.raises(ValueError):
        json.loads(torn.read_text())  # the crash really tore it
    assert last_complete_checkpoint(checkpoints) == checkpoints / "checkpoint-1"
    assert_resumes_to_the_end(config, capsys)


def test_kill_while_appending_metrics_leaves_a_tail_the_resume_repairs(tmp_path, tiny_model_dir, capsys):
    config = write_config(tmp_path, tiny_model_dir, tmp_path / "cache")
    result = crash("metrics", "train", config)
    assert result.returncode == KILLED, result.stderr
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    with pytest.raises(ValueError):
        json.loads(lines[-1])  # the last line is torn
    assert_resumes_to_the_end(config, capsys)


def test_kill_while_writing_a_cache_shard_leaves_a_temp_file_the_next_run_removes(tmp_path, tiny_model_dir,
                                                                                  capsys):
    cache = tmp_path / "cache"
    config = write_config(tmp_path, tiny_model_dir, cache)
    result = crash("cache", "data", "tokenize", config, "data.num_proc=1")
    assert result.returncode == KILLED, result.stderr
    entries = cache / "datasets"
    assert [p.name.startswith(".tmp-") for p in hidden_leftovers(entries)] == [True]  # a torn temporary
    assert not list(entries.glob("*/done.json"))
    code, out, err = run_cli(["data", "tokenize", config, "data.num_proc=1"], capsys)
    assert code == 0 and "tokenized: 32 samples" in out, err
    assert hidden_leftovers(entries) == [] and len(list(entries.glob("*/done.json"))) == 1


def test_kill_during_merge_leaves_nothing_under_the_output_name(tmp_path, tiny_lora_run, capsys):
    output = tmp_path / "merged"
    result = crash("merge", "merge", tiny_lora_run, "--output", output)
    assert result.returncode == KILLED, result.stderr
    assert not output.exists()
    assert [p.name.split(".partial-")[0] for p in tmp_path.iterdir()] == [".merged"]  # the unfinished one
    code, out, err = run_cli(["merge", tiny_lora_run, "--output", output], capsys)
    assert code == 0, err
    assert (output / "config.json").is_file() and list(output.glob("*.safetensors"))


# -- full disk -----------------------------------------------------------------------------------
def test_full_disk_during_checkpoint_save_names_the_last_complete_checkpoint(tmp_path, tiny_model_dir, capsys,
                                                                            monkeypatch):
    import torch

    config = write_config(tmp_path, tiny_model_dir, tmp_path / "cache")
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: disk_full() if "checkpoint-2" in str(f)
                        else real_save(obj, f, *a, **k))
    code, out, err = run_cli(["train", config], capsys)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert code == 1 and "Traceback" not in err
    assert "error: disk full while writing" in err and \
        f"the last complete checkpoint is {checkpoints / 'checkpoint-1'}" in err and "train.resume=true" in err
    assert not (checkpoints / "checkpoint-2").exists()  # the torn one is gone, its space freed
    assert not (tmp_path / "run" / "tunekit.json").exists()
    monkeypatch.setattr(torch, "save", real_save)
    assert_resumes_to_the_end(config, capsys)


def test_full_disk_while_appending_metrics_is_one_message_and_resumable(tmp_path, tiny_model_dir, capsys,
                                                                       monkeypatch):
    config = write_config(tmp_path, tiny_model_dir, tmp_path / "cache")
    real_open = Path.open

    def open_(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and "a" in mode and self.exists() and steps(self.parent):
            disk_full()
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    code, out, err = run_cli(["train", config], capsys)
    assert code == 1 and "error: disk full while writing" in err and "checkpoint-1" in err, err
    monkeypatch.setattr(Path, "open", real_open)
    assert_resumes_to_the_end(config, capsys)


def test_full_disk_during_a_cache_write_leaves_no_finished_entry_and_no_temp(tmp_path, tiny_model_dir, capsys,
                                                                            monkeypatch):
    import pyarrow as pa

    cache = tmp_path / "cache"
    config = write_config(tmp_path, tiny_model_dir, cache)
    monkeypatch.setattr(pa, "OSFile", disk_full)  # the shard's Arrow file
    for command in (["data", "check", config, "data.num_proc=1"], ["train", config, "data.num_proc=1"]):
        code, out, err = run_cli(command, capsys)
        assert code == 1 and "error: disk full while writing the tokenized data" in err, err
        assert "data.cache_dir" in err and "Traceback" not in err
        assert hidden_leftovers(cache) == [] and not list(cache.glob("datasets/*/done.json"))
    assert not (tmp_path / "run").exists()


def test_full_disk_during_merge_leaves_nothing(tmp_path, tiny_lora_run, capsys, monkeypatch):
    import transformers.modeling_utils

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", disk_full)  # the weights' write
    code, out, err = run_cli(["merge", tiny_lora_run, "--output", tmp_path / "merged"], capsys)
    assert code == 1 and "error: disk full while writing" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


# -- what "complete" means -----------------------------------------------------------------------
@pytest.fixture
def complete_checkpoint(tmp_path) -> Path:
    from tunekit.train.checkpoints import mark_complete

    folder = tmp_path / "checkpoints" / "checkpoint-6"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"w" * 100)
    (folder / "optimizer.pt").write_bytes(b"o" * 50)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 6}))
    mark_complete(folder)
    return folder


@pytest.mark.parametrize("damage,complete", [
    (lambda c: None, True),
    (lambda c: (c / "tunekit-complete.json").unlink(), False),  # killed before the marker
    (lambda c: (c / "trainer_state.json").write_text('{"global_st'), False),  # torn after marking
    (lambda c: (c / "optimizer.pt").unlink(), False),  # half-deleted by rotation
    (lambda c: (c / "adapter_model.safetensors").write_bytes(b"w" * 10), False),  # truncated weights
    (lambda c: (c / "tunekit-complete.json").write_text("{"), False),  # torn marker
], ids=["whole", "no-marker", "torn-state", "half-deleted", "truncated-weights", "torn-marker"])
def test_complete_checkpoint_definition(complete_checkpoint, damage, complete):
    from tunekit.train.checkpoints import is_complete, last_complete_checkpoint

    older = complete_checkpoint.parent / "checkpoint-3"
    older.mkdir()
    damage(complete_checkpoint)
    assert is_complete(complete_checkpoint) is complete
    assert last_complete_checkpoint(complete_checkpoint.parent) == (complete_checkpoint if complete else None)


def test_rotation_keeps_the_newest_complete_and_drops_older_torn_ones(tmp_path):
    from tunekit.train.checkpoints import checkpoints, mark_complete, rotate

    folder = tmp_path / "checkpoints"
    for step in (2, 4, 6, 8):
        ckpt = folder / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
        if step != 4:
            mark_complete(ckpt)
    (folder / "checkpoint-8" / "trainer_state.json").write_text("{")  # torn: not counted as kept
    rotate(folder, keep=1)
    assert [p.name for p in checkpoints(folder)] == ["checkpoint-6", "checkpoint-8"]
