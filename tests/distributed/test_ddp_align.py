"""A preference stage under torchrun: DPO on 2 CPU processes (gloo) trains like 1 process.

Same seed and global batch (2 x 4 against 1 x 8): each step sees the same 8 pairs, TRL's DPO
loss is a mean over pairs and the gradients are averaged across processes, so the loss, the
reward margins and the trained adapter match the 1-process run up to float summation order.
"""

import sys

import pytest
from distributed_helpers import GLOBAL_BATCH, curve, run, torchrun
from helpers import ROOT
from test_ddp import assert_same_training

pytestmark = pytest.mark.slow
STEPS = 3


def dpo_args(model_dir, output_dir, batch_size: int, *more: str) -> list[str]:
    return ["train", str(ROOT / "configs" / "dpo.yaml"), f"model.name_or_path={model_dir}",
            f"train.output_dir={output_dir}", f"train.max_steps={STEPS}", f"train.batch_size={batch_size}",
            "train.logging_steps=1", "train.report_to=[]", "train.learning_rate=1e-2", *more]


def test_dpo_on_two_processes_trains_like_one(tiny_model_dir, tmp_path):
    run([sys.executable, "-m", "tunekit", *dpo_args(tiny_model_dir, tmp_path / "one", GLOBAL_BATCH)])
    run(torchrun(2, *dpo_args(tiny_model_dir, tmp_path / "two", GLOBAL_BATCH // 2)))
    assert len(curve(tmp_path / "two")) == STEPS  # logged once, not once per process
    assert_same_training(tmp_path / "two", tmp_path / "one")
    margins = curve(tmp_path / "one", "rewards/margins")
    assert curve(tmp_path / "two", "rewards/margins") == pytest.approx(margins, rel=1e-3, abs=1e-5)
