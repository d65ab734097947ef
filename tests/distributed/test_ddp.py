"""`tunekit train` under torchrun and accelerate launch: 2 processes on the CPU (gloo) give the 1-process run.

Same seed, same global batch (2 x 4 against 1 x 8): the sharded sampler hands each step the
same 8 samples, the loss is averaged over the trained tokens of all processes, so the loss
curve and the trained adapter match the 1-process run up to float summation order. The
main process alone tokenizes, logs and writes the run directory.
"""

import json

import pytest
from distributed_helpers import (
    GLOBAL_BATCH,
    STEPS,
    accelerate_launch,
    curve,
    run,
    torchrun,
    torchrun_launcher,
    write_config,
)
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
PER_PROCESS = GLOBAL_BATCH // 2


@pytest.fixture(scope="module")
def torchrun_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torchrun")
    runs, cache = tmp / "runs", tmp / "cache"
    cfg = write_config(tmp / "cfg.yaml", tiny_model_dir, runs / "lora", cache, train={"batch_size": PER_PROCESS})
    result = run(torchrun(2, "train", str(cfg)))
    return runs / "lora", cache, result.stderr + result.stdout


def assert_same_training(run_dir, reference):
    for key in ("loss", "grad_norm"):  # grad_norm: the gradient itself, before clipping
        assert curve(run_dir, key) == pytest.approx(curve(reference, key), rel=1e-4), key
    trained = load_file(run_dir / "adapter_model.safetensors")
    expected = load_file(reference / "adapter_model.safetensors")
    assert trained.keys() == expected.keys()
    for name in expected:  # lora_B starts at 0: it is the sum of the updates, so other data would show
        # Adam turns near-zero gradients into full-size steps, so the all-reduce's different summation
        # order may flip a few elements: compare whole tensors, not elements.
        difference = (trained[name] - expected[name]).norm() / expected[name].norm().clamp_min(1e-12)
        assert difference < 1e-2, (name, float(difference))


def test_two_processes_save_one_finished_run_directory(torchrun_run):
    run_dir, _, _ = torchrun_run
    assert [p.name for p in run_dir.parent.iterdir()] == ["lora"]
    meta = json.loads((run_dir / "tunekit.json").read_text(encoding="utf-8"))
    assert meta["steps"] == STEPS
    assert (run_dir / "loss.png").is_file() and (run_dir / "adapter_model.safetensors").is_file()
    assert len(curve(run_dir)) == STEPS  # logged once, not once per process


def test_two_processes_train_like_one_process_with_the_same_global_batch(torchrun_run, reference_run):
    run_dir, _, _ = torchrun_run
    assert_same_training(run_dir, reference_run)


def test_only_the_main_process_tokenizes_and_reports(torchrun_run):
    _, cache, log = torchrun_run
    assert log.count("training samples") == 1 and "training samples (tokenized)" in log  # printed once, by rank 0
    assert log.count("trainable params") == 1
    assert "find_unused_parameters" not in log
    assert [p.name.startswith(".") for p in (cache / "datasets").iterdir()] == [False]  # one entry, no leftovers


def test_accelerate_launch_overwrites_a_run_directory_once(tiny_model_dir, tmp_path, reference_run):
    run_dir = tmp_path / "lora"
    run_dir.mkdir()
    (run_dir / "stale.txt").write_text("from an earlier run")
    cfg = write_config(tmp_path / "cfg.yaml", tiny_model_dir, run_dir, tmp_path / "cache",
                       train={"batch_size": PER_PROCESS, "overwrite": True})
    run(accelerate_launch("configs/accelerate/ddp.yaml", 2, "train", str(cfg)))
    assert not (run_dir / "stale.txt").exists()
    assert json.loads((run_dir / "tunekit.json").read_text(encoding="utf-8"))["steps"] == STEPS
    assert_same_training(run_dir, reference_run)


LEAVE_SCRIPT = """
import torch.distributed as dist
from tunekit.processes import barrier, leave_process_group

barrier()
joined = dist.is_initialized()
leave_process_group()
print(f"joined={joined} left={not dist.is_initialized()}", flush=True)
"""


def test_every_process_leaves_the_process_group_before_exit(tmp_path):
    """gloo's threads must be gone before the interpreter is: else a good run can abort at exit."""
    script = tmp_path / "leave.py"
    script.write_text(LEAVE_SCRIPT, encoding="utf-8")
    result = run([*torchrun_launcher(2), str(script)])
    assert result.stdout.count("joined=True left=True") == 2, result.stdout


def test_the_command_line_leaves_the_process_group_only_after_success(monkeypatch, tmp_path, capsys):
    import tunekit.cli as cli

    left = []
    monkeypatch.setattr(cli, "leave_process_group", lambda: left.append(True))
    assert cli.main(["templates"]) == 0 and left == [True]
    assert cli.main(["train", str(tmp_path / "missing.yaml")]) == 1 and left == [True]  # a failed process waits for no one
    assert "missing.yaml" in capsys.readouterr().err
