"""`tunekit demo --tiny` end to end at a smoke size (the real-model recipe is `make demo`)."""

import json

from tunekit.cli import main


def test_demo_writes_a_normal_run_and_a_before_after_table(tmp_path, capsys):
    assert main(["demo", "--tiny", "--workdir", str(tmp_path), "--steps", "3", "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "| held-out exact match | before | after |" in out and "| 4 samples |" in out
    assert out.count("        base:  ") == 4 and out.count("tuned: ") == 4  # answers side by side
    result = json.loads((tmp_path / "demo_result.json").read_text(encoding="utf-8"))
    assert result["samples"] == 4 and 0.0 <= result["exact_match_after"] <= 1.0
    meta = json.loads((tmp_path / "run" / "tunekit.json").read_text(encoding="utf-8"))
    assert meta["method"] == "full" and meta["steps"] == 3
    assert meta["template"]["eot_text"] == "<|im_end|>"
