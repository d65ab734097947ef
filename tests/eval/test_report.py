"""The comparison report from hand-made results: differences, forgetting, escaping, self-containment."""

import json
import re
from types import SimpleNamespace

import pytest

from tunekit.errors import TunekitError
from tunekit.eval.compare import (
    Comparison,
    comparison_record,
    resolve_targets,
    write_comparison,
)
from tunekit.eval.predict import Evaluation
from tunekit.eval.tasks import TaskResult, flat_scores, row_score


def entity_summary(tp, predicted, gold):
    p, r = tp / predicted, tp / gold
    return {"entity": {"precision": p, "recall": r, "f1": 2 * p * r / (p + r), "tp": tp, "predicted": predicted,
                       "gold": gold, "per_type": {}}}


def evaluation(label, summary, predictions, ppl):
    rows = [{"prompt": "找出 <b>实体</b> | 句子", "reference": "张三_人名\n北京_地名", "prediction": text,
             "scores": {"entity": {"f1": f1}}} for text, f1 in predictions]
    result = TaskResult(rows, summary, flat_scores(summary), "entity_f1")
    return Evaluation(label, f"/models/{label}", "model directory", None, result,
                      {"perplexity": ppl, "tokens": 1000, "nll": 0.0, "text": "general_heldout.txt"}, 1.0)


@pytest.fixture
def comparison():
    task = SimpleNamespace(kind="generation", metrics=["entity"], reason="chosen from the data")
    base = evaluation("base", entity_summary(1, 4, 4), [("<script>x</script>", 0.0)], 20.0)
    tuned = evaluation("tuned", entity_summary(3, 4, 4), [("张三_人名\n北京_地名", 1.0)], 25.0)
    return Comparison("ner_test.jsonl", task, [base, tuned], "general_heldout.txt")


def test_scores_are_percentages_and_differences_are_from_the_first_target(comparison):
    assert comparison.evaluations[1].result.scores == pytest.approx(
        {"entity_precision": 75.0, "entity_recall": 75.0, "entity_f1": 75.0})
    assert comparison.differences() == {"tuned": pytest.approx(
        {"entity_precision": 50.0, "entity_recall": 50.0, "entity_f1": 50.0})}
    forgetting = comparison.forgetting()
    assert forgetting["base"]["relative_change"] == 0.0
    assert forgetting["tuned"] == pytest.approx({"perplexity": 25.0, "change": 5.0, "relative_change": 0.25})


def test_row_score_reads_the_task_metric_of_each_metric_kind():
    assert row_score({"scores": {"entity": {"f1": 0.5}}}, "entity_f1") == 50.0
    assert row_score({"scores": {"exact_match": 1.0, "bleu-4": 12.5}}, "exact_match") == 100.0
    assert row_score({"scores": {"exact_match": 1.0, "bleu-4": 12.5}}, "bleu-4") == 12.5
    assert row_score({"scores": {"correct": 0.0}}, "accuracy") == 0.0
    assert row_score({"scores": None}, "entity_f1") is None


def test_written_report_has_every_section_and_metrics_json(comparison, tmp_path):
    paths = write_comparison(tmp_path, comparison)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert "- tuned vs base: entity_f1 25.00 → 75.00 (+50.00); held-out perplexity 20.00 → 25.00 (+25.0%)" in markdown
    assert "| **entity_f1** (task) | 25.00 | 75.00 | +50.00 |" in markdown
    assert "| **tuned** | 25.00 | 1000 | +5.00 (+25.0%) |" in markdown
    assert "![metrics](metrics.png)" in markdown and paths["chart"].stat().st_size > 1000
    # one table row per prompt: escaped pipe and HTML, newlines as <br>, the per-answer score
    row = next(line for line in markdown.splitlines() if line.startswith("| 1 |"))
    assert row == ("| 1 | 找出 &lt;b&gt;实体&lt;/b&gt; \\| 句子 | 张三_人名<br>北京_地名 | "
                   "&lt;script&gt;x&lt;/script&gt;<br>*0* | 张三_人名<br>北京_地名<br>*100* |")
    record = json.loads(paths["metrics"].read_text(encoding="utf-8"))
    assert record["forgetting"]["tuned"]["relative_change"] == pytest.approx(0.25)
    assert [t["label"] for t in record["targets"]] == ["base", "tuned"]
    assert (tmp_path / "predictions" / "tuned.jsonl").read_text(encoding="utf-8").count("\n") == 1


def test_html_page_is_self_contained_and_escaped(comparison, tmp_path):
    page = write_comparison(tmp_path, comparison)["html"].read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == [page.split('src="')[1].split('"')[0]]
    assert page.split('src="')[1].startswith("data:image/png;base64,")
    assert '<td class="num better">+50.00</td>' in page  # a higher score is better
    assert '<td class="num worse">+5.00 (+25.0%)</td>' in page  # a higher perplexity is worse
    assert comparison_record(comparison)["headline"] == "entity_f1"


def test_targets_get_unique_labels_and_base_needs_a_run(tiny_lora_run, tiny_model_dir):
    pairs = resolve_targets(["base", str(tiny_lora_run), str(tiny_lora_run)])
    assert pairs[0] == ("base", str(tiny_lora_run), True)  # the run itself, asked as its base
    assert [label for label, _, _ in pairs[1:]] == [tiny_lora_run.name, f"{tiny_lora_run.name}-2"]
    assert [as_base for _, _, as_base in pairs[1:]] == [False, False]
    with pytest.raises(TunekitError, match="'base' means the base model of a run directory"):
        resolve_targets(["base", str(tiny_model_dir)])
    with pytest.raises(TunekitError, match="at least two targets"):
        resolve_targets([str(tiny_model_dir)])


def test_predict_only_comparison_has_answers_and_perplexity_but_no_scores(tmp_path):
    task = SimpleNamespace(kind="generation", metrics=[], reason="the test set has no references")
    rows = [{"prompt": "你好", "reference": None, "prediction": "", "scores": None}]
    evaluations = [Evaluation(label, f"/m/{label}", "model directory", None, TaskResult(rows, None),
                              {"perplexity": ppl, "tokens": 10, "nll": 0.0, "text": "t.txt"}, 1.0)
                   for label, ppl in (("base", 10.0), ("tuned", 8.0))]
    paths = write_comparison(tmp_path, Comparison("p.txt", task, evaluations, "t.txt"))
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert "## Metrics" not in markdown and "| **tuned** | 8.00 | 10 | -2.00 (-20.0%) |" in markdown
    assert "- tuned vs base: held-out perplexity 10.00 → 8.00 (-20.0%)" in markdown
    assert "| 1 | 你好 | — | (empty) | (empty) |" in markdown
    assert paths["chart"].exists()
