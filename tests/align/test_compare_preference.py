"""`tunekit compare base DPO_RUN --data PAIRS`: the report shows the preference accuracy on held-out
pairs before and after, DPO's implicit reward against the base, and (with --reward-model) a reward
model's score of every target's answers, beside the forgetting probe; the numbers are eval's."""

from __future__ import annotations

import json
import math

import pytest
from align_helpers import TOPICS

from tunekit.cli import main


@pytest.fixture(scope="module")
def dpo_report(learned_dpo, align_example, tmp_path_factory):
    run, _, test_file = learned_dpo
    out = tmp_path_factory.mktemp("compare-dpo")
    code = main(["compare", "base", str(run), "--data", str(test_file), "--max-new-tokens", "4",
                 "--heldout-tokens", "512", "--reward-model", str(align_example("rm")), "--output", str(out),
                 "--quiet"])
    assert code == 0
    return out, json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_compare_reports_preference_accuracy_before_and_after_dpo(dpo_report, learned_dpo):
    out, record = dpo_report
    run = learned_dpo[0]
    base, tuned = record["preference"]["base"], record["preference"][run.name]
    assert base["pairs"] == tuned["pairs"] == 10
    assert 0.2 <= base["preference_accuracy"] <= 0.8 and "implicit_reward_accuracy" not in base
    assert tuned["preference_accuracy"] >= 0.9 and tuned["implicit_reward_accuracy"] >= 0.9
    assert tuned["implicit_reward_margin"] > 0
    assert record["forgetting"][run.name]["perplexity"] > 1  # the probe is still there, beside it
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert (f"preference accuracy {100 * base['preference_accuracy']:.1f}% → "
            f"{100 * tuned['preference_accuracy']:.1f}%, implicit-reward accuracy "
            f"{100 * tuned['implicit_reward_accuracy']:.1f}% (10 held-out pairs)") in markdown
    assert "## Preference: held-out pairs of" in markdown
    assert f"| **{run.name}** | 10 | {100 * tuned['preference_accuracy']:.1f}% |" in markdown
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Preference: held-out pairs of" in html and "<h2>Reward model" in html


@pytest.mark.slow
def test_compare_and_eval_measure_the_same_implicit_reward(dpo_report, learned_dpo, tmp_path):
    """For a LoRA run, compare's reference (the base target) is eval's (the adapter disabled)."""
    run, _, test_file = learned_dpo
    assert main(["eval", str(run), "--data", str(test_file), "--output", str(tmp_path), "--quiet"]) == 0
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    compared = dpo_report[1]["preference"][run.name]
    for key in ("preference_accuracy", "implicit_reward_accuracy"):
        assert compared[key] == evaluated[key]
    assert compared["implicit_reward_margin"] == pytest.approx(evaluated["implicit_reward_margin"], abs=1e-4)


@pytest.mark.slow
def test_compare_scores_every_answer_with_the_reward_model(dpo_report, learned_dpo):
    out, record = dpo_report
    for label in ("base", learned_dpo[0].name):
        rows = [json.loads(line) for line in (out / "predictions" / f"{label}.jsonl").read_text().splitlines()]
        assert len(rows) == 10 and all(math.isfinite(r["reward_score"]) for r in rows)
        mean = sum(r["reward_score"] for r in rows) / len(rows)
        assert record["reward_model_scores"][label] == pytest.approx(mean)
    assert "reward-model score" in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_eval_scores_every_answer_with_the_reward_model(learned_dpo, align_example, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": f"Name one thing about the {t}."}) + "\n"
                               for t in TOPICS[20:]))
    out = tmp_path / "out"
    assert main(["eval", str(learned_dpo[0]), "--data", str(prompts), "--reward-model", str(align_example("rm")),
                 "--max-new-tokens", "4", "--output", str(out), "--quiet"]) == 0
    assert "reward model" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    record = json.loads((out / "metrics.json").read_text())
    assert len(rows) == 10 and all(math.isfinite(r["reward_score"]) for r in rows)
    assert record["reward_model_score"] == pytest.approx(sum(r["reward_score"] for r in rows) / len(rows))
    # pairs are ranked, not answered: nothing for the reward model to score
    code = main(["eval", str(learned_dpo[0]), "--data", str(learned_dpo[2]), "--reward-model",
                 str(align_example("rm")), "--output", str(tmp_path / "pairs")])
    err = capsys.readouterr().err
    assert code == 1 and "ranked, not answered" in err and "Traceback" not in err


def test_pairs_that_are_not_pairs_are_refused_before_any_model_loads(tiny_lora_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
    code = main(["compare", "base", str(tiny_lora_run), "--data", str(prompts), "--pairs", str(prompts),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "holds no preference pairs" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_reward_model_that_is_not_one_is_refused_before_any_answer(tiny_lora_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
    for command in ("eval", "compare"):
        targets = [str(tiny_lora_run)] if command == "eval" else ["base", str(tiny_lora_run)]
        code = main([command, *targets, "--data", str(prompts), "--reward-model", str(tiny_lora_run),
                     "--output", str(tmp_path / command)])
        err = capsys.readouterr().err
        assert code == 1 and "is a 'sft' run, not a reward model" in err and "Traceback" not in err
        assert not (tmp_path / command).exists()
