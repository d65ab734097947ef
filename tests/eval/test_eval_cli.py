"""`tunekit eval`: predictions.jsonl + metrics.json from a target or a config; bad input says what to fix."""

import json

from helpers import NER_TEST, ROOT

from tunekit.cli import main

CHOICE = ROOT / "tests" / "fixtures" / "choice"


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_eval_writes_scored_predictions_and_metrics(tuned_run, word_type_task, tmp_path, capsys):
    code = main(["eval", str(tuned_run), "--data", str(word_type_task[1]), "--max-new-tokens", "8",
                 "--heldout", "--heldout-tokens", "512", "--output", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "metrics: exact_match, bleu-4, rouge-1, rouge-2, rouge-l (chosen from the data: free-text" in out
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    assert len(rows) == 20 and rows[0]["prompt"].endswith("是人名还是地名？") and rows[0]["reference"] == "人名"
    assert set(rows[0]["scores"]) == {"exact_match", "bleu-4", "rouge-1", "rouge-2", "rouge-l"}
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    expected = 100 * sum(r["scores"]["exact_match"] for r in rows) / len(rows)
    assert metrics["scores"]["exact_match"] == expected and metrics["headline"] == "exact_match"
    assert metrics["scored_rows"] == 20 and metrics["perplexity"]["tokens"] == 511
    assert f"predictions: {tmp_path / 'predictions.jsonl'}" in out


def test_test_file_without_references_is_predicted_not_scored(tuned_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("北京是人名还是地名？\n李雷是人名还是地名？\n", encoding="utf-8")
    code = main(["eval", str(tuned_run), "--data", str(prompts), "--max-new-tokens", "8", "-o", str(tmp_path / "out"),
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "no references: predictions written, nothing scored" in out
    rows = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert [(r["reference"], r["scores"]) for r in rows] == [(None, None), (None, None)]
    assert all(r["prediction"] for r in rows)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["summary"] is None and metrics["scores"] == {} and metrics["scored_rows"] == 0


def test_config_mode_evaluates_the_configs_run_into_its_report_dir(tuned_run, word_type_task, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(f"train:\n  output_dir: {tuned_run}\neval:\n  test_data: {word_type_task[1]}\n"
                      f"  metrics: [exact_match]\n  max_samples: 4\n  max_new_tokens: 8\n"
                      f"  report_dir: {tmp_path / 'report'}\n", encoding="utf-8")
    assert main(["eval", str(config), "--quiet"]) == 0
    assert "metrics: exact_match (set by eval.metrics)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["rows"] == 4 and list(metrics["scores"]) == ["exact_match"]
    assert metrics["target"] == str(tuned_run) and "run directory (full, 40 steps)" in metrics["description"]


def test_multiple_choice_folder_is_scored_by_option_letters(tiny_model_dir, tmp_path, capsys):
    code = main(["eval", str(tiny_model_dir), "--data", str(CHOICE / "cmmlu"), "--shots", "1", "-o", str(tmp_path),
                 "--quiet"])
    assert code == 0 and "choice accuracy, 1-shot" in capsys.readouterr().out
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    assert all(r["prediction"] in r["option_logprobs"] and r["reference"] in "ABCD" for r in rows)
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    correct = sum(r["prediction"] == r["reference"] for r in rows)
    assert metrics["summary"]["accuracy"] == correct / len(rows)
    assert metrics["scores"] == {"accuracy": 100 * correct / len(rows)}


def test_bad_input_exits_1_with_what_to_fix(tuned_run, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    assert main(["eval", str(tuned_run), "--data", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path)]) == 1
    assert "error: test set" in capsys.readouterr().err
    assert main(["eval", str(tuned_run), "--data", str(CHOICE / "bad_option"), "-o", str(tmp_path)]) == 1
    assert "law_val.csv:3: option C is empty; fill it in or delete the row" in capsys.readouterr().err
    assert main(["eval", str(tuned_run), "-o", str(tmp_path)]) == 1
    assert "no test set: give --data FILE" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_lora_run_on_entity_lines_is_scored_by_micro_entity_f1(tiny_lora_run, tmp_path, capsys):
    code = main(["eval", str(tiny_lora_run), "--data", str(NER_TEST), "--max-samples", "3", "--max-new-tokens", "8",
                 "-o", str(tmp_path), "--quiet"])
    assert code == 0
    assert "metrics: entity (chosen from the data: every reference is `entity_type` lines or '没有'" in \
        capsys.readouterr().out
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    summary = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["summary"]["entity"]
    totals = {key: sum(r["scores"]["entity"][key] for r in rows) for key in ("tp", "predicted", "gold")}
    gold_lines = sum(len([x for x in r["reference"].splitlines() if x != "没有"]) for r in rows)
    assert {key: summary[key] for key in totals} == totals and totals["gold"] == gold_lines
