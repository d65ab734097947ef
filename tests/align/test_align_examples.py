"""Every stage's example config trains from the CLI, logs its metrics, and leaves a run directory
that the rest of tunekit reads: adapters load and merge, the reward model loads with
AutoModelForSequenceClassification, scores pairs in `tunekit eval` and rewards GRPO, and DPO
starts from an sft run directory."""

from __future__ import annotations

import json
import math

import pytest
import torch
from align_helpers import ALIGN_EXAMPLES, CONFIGS, STAGE_METRICS, tiny_overrides
from safetensors.torch import load_file

from tunekit.cli import main


def metrics_of(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", ALIGN_EXAMPLES)
def test_example_config_trains_and_logs_its_stage_metrics(align_example, name):
    run = align_example(name)
    meta = json.loads((run / "tunekit.json").read_text())
    assert meta["stage"] == name and meta["steps"] == 2
    assert meta["template"]["stop_token_ids"] and (run / "chat_template.jinja").is_file()
    assert (run / "rewards.png").stat().st_size > 0 and (run / "loss.png").is_file()
    logged = metrics_of(run)
    for key in STAGE_METRICS[name]:
        values = [r[key] for r in logged if key in r]
        assert values and all(math.isfinite(v) for v in values), f"{name}: {key} missing from metrics.jsonl"
    if name in ("rm", "grpo"):  # rm: merged (below); grpo: a group rewarded alike has no gradient (test_learns)
        return
    weights = load_file(run / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b), "LoRA B starts at zero: training must move it"


def test_reward_model_run_loads_as_a_classifier_and_eval_gives_pairwise_accuracy(align_example, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = align_example("rm")
    model = AutoModelForSequenceClassification.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    assert not (run / "adapter_config.json").exists() and model.config.num_labels == 1

    data = CONFIGS / "data" / "pairs_sharegpt.json"
    assert main(["eval", str(run), "--data", str(data), "--output", str(tmp_path), "--quiet"]) == 0
    assert "preference_accuracy:" in capsys.readouterr().out
    record = json.loads((tmp_path / "metrics.json").read_text())
    rows = json.loads(data.read_text())
    wins = 0
    for row in rows:  # independently: the conversation rendered by the tokenizer's template, scored
        scores = []
        for side in ("chosen", "rejected"):
            messages = [{"role": "user", "content": row["conversations"][0]["value"]},
                        {"role": "assistant", "content": row[side]["value"]}]
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            text = text[: text.rindex("<|im_end|>") + len("<|im_end|>")]
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                scores.append(model(input_ids=ids).logits[0, 0].item())
        wins += scores[0] > scores[1]
    assert record["pairs"] == len(rows) and record["preference_accuracy"] == pytest.approx(wins / len(rows))


def test_grpo_takes_a_reward_model_run_as_its_reward(align_example, tiny_model_dir, tmp_path):
    rm = align_example("rm")
    out = tmp_path / "grpo-rm"
    code = main(["train", str(CONFIGS / "grpo.yaml"), *tiny_overrides(tiny_model_dir, out), f"align.rewards=[{rm}]"])
    assert code == 0
    values = [r[f"rewards/rm:{rm.name}/mean"] for r in metrics_of(out) if f"rewards/rm:{rm.name}/mean" in r]
    assert len(values) == 2 and all(math.isfinite(v) for v in values)


def test_dpo_continues_an_sft_lora_run_and_the_result_merges(tiny_lora_run, tiny_model_dir, tmp_path, capsys):
    from tunekit.export.merge import merge_run

    out = tmp_path / "dpo-from-sft"
    overrides = tiny_overrides(tiny_model_dir, out)
    overrides[0] = f"model.name_or_path={tiny_lora_run}"
    assert main(["train", str(CONFIGS / "dpo.yaml"), *overrides]) == 0
    meta = json.loads((out / "tunekit.json").read_text())
    assert meta["base_model"] == json.loads((tiny_lora_run / "tunekit.json").read_text())["base_model"]
    sft, dpo = load_file(tiny_lora_run / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert sft.keys() == dpo.keys() and any(not torch.equal(sft[k], dpo[k]) for k in sft)  # the same adapter, moved
    merged = merge_run(out, tmp_path / "merged")
    assert (merged.output / "model.safetensors").is_file()


def test_full_fine_tuning_dpo_uses_a_frozen_reference_copy(tiny_model_dir, tmp_path, caplog):
    import logging

    out = tmp_path / "dpo-full"
    with caplog.at_level(logging.INFO, logger="tunekit.train.stages"):
        code = main(["train", str(CONFIGS / "dpo.yaml"), *tiny_overrides(tiny_model_dir, out), "method.name=full",
                     "train.learning_rate=1e-3"])
    assert code == 0 and (out / "model.safetensors").is_file()
    assert "frozen copy of the starting model" in caplog.text
    rewards = [r["rewards/margins"] for r in metrics_of(out) if "rewards/margins" in r]
    assert rewards[0] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy still equals its reference
