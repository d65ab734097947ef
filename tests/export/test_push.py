"""tunekit push without a network: the model card and the list of files (the upload itself is untested here)."""

import json
import os
import subprocess
import sys

from tunekit.export.hub import model_card, upload_files
from tunekit.rundir import read_run


def test_card_names_base_method_fingerprint_and_results(tiny_lora_run, tmp_path):
    run = read_run(tiny_lora_run)
    card = model_card(run)
    assert card.startswith("---\nlibrary_name: peft\n")
    for fact in (run.base_model, run.method, run.record.data_fingerprint, f"| steps | {run.record.steps} |"):
        assert fact in card
    assert "## Evaluation" not in card and "## Compared" not in card  # nothing measured yet, nothing claimed


def test_card_carries_eval_metrics_and_compare_report(tiny_lora_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_lora_run, run_dir)
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({"metrics": {"exact_match": 0.8125, "n": 16}}))
    (run_dir / "compare").mkdir()
    (run_dir / "compare" / "report.md").write_text("| target | exact_match |\n|---|---|\n| base | 0.1 |\n")
    card = model_card(read_run(run_dir))
    assert "| exact_match | 0.8125 |" in card and "| n | 16 |" in card
    assert "## Compared with the base model\n\n| target | exact_match |\n|---|---|\n| base | 0.1 |" in card


def test_files_leave_checkpoints_logs_and_results_home(tiny_lora_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_lora_run, run_dir)
    for extra in ("checkpoints/checkpoint-2/optimizer.pt", "logs/events.out", "eval/metrics.json", ".hidden"):
        (run_dir / extra).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / extra).write_text("x")
    files = upload_files(run_dir)
    assert {"adapter_model.safetensors", "adapter_config.json", "tunekit.json", "chat_template.jinja"} <= set(files)
    assert not [f for f in files if f.split("/")[0] in ("checkpoints", "logs", "eval") or f.startswith(".")]
    expected = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()
                      and p.relative_to(run_dir).parts[0] not in ("checkpoints", "logs", "eval", "compare", ".hidden")
                      and p.name != "README.md")  # peft's own stub card: the generated card replaces it
    assert files == expected


def test_dry_run_prints_card_and_files_and_uploads_nothing(tiny_lora_run):
    done = subprocess.run([sys.executable, "-m", "tunekit", "push", str(tiny_lora_run), "me/x", "--dry-run"],
                          capture_output=True, text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "library_name: peft" in done.stdout and "  adapter_model.safetensors" in done.stdout
