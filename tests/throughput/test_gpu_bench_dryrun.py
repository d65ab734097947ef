"""bench/gpu_train.py keeps working: its CPU dry run (tiny shape) trains every side and method."""

import json
import subprocess
import sys

from helpers import ROOT


def test_gpu_bench_dry_run_trains_every_side_on_the_same_tokens(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_train.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["shape"] == "tiny" and results["device"] == "cpu"
    assert set(results["methods"]) == {"full", "lora"}
    for sides in results["methods"].values():
        assert set(sides) == {"tunekit_packed", "tunekit_padded", "trl_padding_free"}
        # the same samples per step on every side: the same loss-bearing tokens, each measured
        assert len({side["loss_tokens"] for side in sides.values()}) == 1
        assert all(side["tokens_per_s"] > 0 and side["steps_timed"] == 2 for side in sides.values())
        # packing never pads more than pad-to-longest; TRL's padding-free row has no padding
        assert sides["tunekit_packed"]["padding"] <= sides["tunekit_padded"]["padding"]
        assert sides["trl_padding_free"]["padding"] == 0
    # LoRA freezes the base: fewer FLOPs per token (4 per frozen parameter instead of 6)
    full, lora = results["methods"]["full"]["tunekit_packed"], results["methods"]["lora"]["tunekit_packed"]
    assert lora["flop_per_s"] / lora["real_tokens_per_s"] < full["flop_per_s"] / full["real_tokens_per_s"]
    assert "| lora | trl padding free |" in done.stdout
