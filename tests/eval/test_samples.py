"""Reading test sets (references optional, bad rows refused) and choosing the task and metrics."""

import json

import pytest
from helpers import NER_TEST, ROOT

from tunekit.config import EvalConfig, from_dict, load_config, validate
from tunekit.errors import ConfigError, DataError
from tunekit.eval.samples import load_eval_samples
from tunekit.eval.tasks import (
    ChoiceTask,
    GenerationTask,
    choose_metrics,
    is_choice_data,
    load_task,
)

CHOICE = ROOT / "tests" / "fixtures" / "choice"


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def ner_rows(count):
    return [json.loads(line) for line in NER_TEST.read_text(encoding="utf-8").splitlines()[:count]]


def test_ner_rows_become_prompt_and_reference_in_file_order():
    samples = load_eval_samples(NER_TEST, max_samples=2)
    rows = ner_rows(2)
    assert [s.reference for s in samples] == [row["answer"] for row in rows]
    [message] = samples[0].messages  # instruct + "\n" + query, as training renders it
    assert message == {"role": "user", "content": f"{rows[0]['instruct']}\n{rows[0]['query']}"}
    assert samples[1].source == f"{NER_TEST}:2"


def test_rows_without_an_answer_are_prompts_without_reference(tmp_path):
    path = write(tmp_path / "mixed.jsonl", [
        {"instruction": "你好", "output": "你好！"},
        {"instruction": "天气如何", "output": ""},
        {"instruction": "再见"},
    ])
    samples = load_eval_samples(path)
    assert [(s.prompt, s.reference) for s in samples] == [("你好", "你好！"), ("天气如何", None), ("再见", None)]


def test_conversation_ending_with_a_user_turn_is_a_prompt_with_its_history(tmp_path):
    path = write(tmp_path / "chat.jsonl", [{"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "name?"}]}])
    [sample] = load_eval_samples(path)
    assert sample.reference is None
    assert [m["role"] for m in sample.messages] == ["system", "user", "assistant", "user"]
    assert sample.prompt == "name?"


def test_plain_text_file_is_one_prompt_per_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("第一个问题\n\nsecond question\n", encoding="utf-8")
    samples = load_eval_samples(path)
    assert [(s.prompt, s.reference, s.source) for s in samples] == [
        ("第一个问题", None, f"{path}:1"), ("second question", None, f"{path}:3")]


def test_empty_test_file_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="has no rows"):
        load_eval_samples(tmp_path / "empty.jsonl")


def test_bad_rows_are_refused_together_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "ok", "output": "fine"}\nnot json\n{"instruction": 3, "output": "x"}\n',
                    encoding="utf-8")
    with pytest.raises(DataError) as error:
        load_eval_samples(path)
    message = str(error.value)
    assert "2 row(s)" in message and f"{path}:2: not valid JSON" in message and f"{path}:3:" in message


def test_metrics_follow_the_references_and_say_why():
    cfg = EvalConfig()
    assert choose_metrics(["张三_人名\n北京_地名", "没有"], cfg)[0] == ["entity"]
    names, reason = choose_metrics(["今天天气很好。", "没有"], cfg)
    assert names == ["exact_match", "bleu-4", "rouge-1", "rouge-2", "rouge-l"] and "free-text" in reason
    assert choose_metrics([None, None], cfg) == ([], "the test set has no references: predictions only, "
                                                     "nothing scored")
    assert choose_metrics(["张三/人名"], EvalConfig(entity_sep="/"))[0] == ["entity"]
    assert choose_metrics(["张三_人名"], EvalConfig(metrics=["rouge-l"])) == (["rouge-l"], "set by eval.metrics")


def test_question_files_are_a_choice_task_and_conversations_a_generation_task():
    assert all(is_choice_data(CHOICE / name) for name in ("ceval", "cmmlu", "mmlu", "json"))
    assert not is_choice_data(NER_TEST)
    assert isinstance(load_task(CHOICE / "ceval", EvalConfig()), ChoiceTask)
    task = load_task(NER_TEST, EvalConfig(max_samples=5))
    assert isinstance(task, GenerationTask) and task.metrics == ["entity"] and len(task.samples) == 5


def test_choice_row_with_a_missing_option_is_refused_with_its_line():
    with pytest.raises(DataError, match=r"law_val.csv:3: option C is empty"):
        load_task(CHOICE / "bad_option", EvalConfig())


def test_generation_metrics_on_a_question_file_are_refused():
    with pytest.raises(ConfigError, match=r"metrics: \[choice\]"):
        load_task(CHOICE / "ceval", EvalConfig(metrics=["exact_match"]))


@pytest.mark.parametrize("section, message", [
    ({"metrics": ["blue"]}, "did you mean 'bleu-4'"),
    ({"metrics": ["choice", "exact_match"]}, "mixes choice"),
    ({"tokenize": "chars"}, "eval.tokenize"),
    ({"max_samples": 0}, "eval.max_samples is 0"),
    ({"during_training": True}, "needs a validation split"),
])
def test_eval_config_contradictions_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        validate(from_dict({"eval": section}))


def test_eval_example_config_loads_with_paths_next_to_it():
    cfg = load_config(ROOT / "configs" / "eval_ner.yaml")
    assert cfg.eval.metrics == ["entity"] and cfg.eval.none_answer == "没有"
    assert load_eval_samples(cfg.eval.test_data, max_samples=1)[0].reference == ner_rows(1)[0]["answer"]


class _Engine:
    """Replies as the engine gives them for a reasoning model: text with <think>, split by the parser."""

    def batch(self, conversations, params, batch_size=16):
        from tunekit.infer.params import Reply
        from tunekit.infer.parsers import DEFAULT_FAMILY

        texts = ["<think>\nThe capital is Paris.\n</think>\n\nParis", "Paris"]
        return [Reply(t, 5, 7, "stop", *_parsed(DEFAULT_FAMILY.parse(t))) for t in texts[: len(conversations)]]


def _parsed(parsed):
    return parsed.content, parsed.reasoning


def test_exact_match_scores_the_answer_without_its_reasoning(tmp_path):
    rows = [{"instruction": "Capital of France?", "output": "Paris"}, {"instruction": "Again?", "output": "Paris"}]
    task = load_task(write(tmp_path / "qa.jsonl", rows), EvalConfig(metrics=["exact_match"]))
    result = task.run(_Engine(), "reasoner", progress=False)
    assert [r["prediction"] for r in result.rows] == ["Paris", "Paris"]
    assert [r["scores"]["exact_match"] for r in result.rows] == [1.0, 1.0]
    assert result.rows[0]["reasoning"] == "The capital is Paris." and "reasoning" not in result.rows[1]
