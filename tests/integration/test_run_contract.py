"""The run directory as one contract: what a run was trained with is what every front end asks with.

- the fixed system prompt of a run (a dataset's `system:`) is recorded, used by chat, eval and
  compare when a conversation brings none, shown, and overridable;
- `compare base RUN` asks the base with the run's template and system prompt, adapter off;
- merge and mix carry the same record;
- a record never switches on remote code; records of schema 1 still read;
- a run in a folder named like a torch attribute (train, eval, half) can be chatted with.
"""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import CONFIGS_DIR, make_config

from tunekit.cli import main
from tunekit.infer.engine import BASE, Engine
from tunekit.infer.params import GenerationParams
from tunekit.rundir import META_FILE, SCHEMA_VERSION, read_run
from tunekit.train.run import train

SYSTEM = "你是小橘，一只慵懒又嘴甜的橘猫，说话常带“喵”。"
ROLEPLAY = CONFIGS_DIR / "data" / "roleplay.jsonl"
GREEDY = GenerationParams(max_new_tokens=12)


@pytest.fixture(scope="module")
def roleplay_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("contract") / "roleplay"
    cfg = make_config(tiny_model_dir, out, tmp_path_factory.mktemp("cache"),
                      data={"datasets": [{"path": str(ROLEPLAY), "system": SYSTEM}], "cutoff_len": 128},
                      train={"max_steps": 6, "learning_rate": 5e-3})
    return train(cfg)


def questions() -> list[list[dict]]:
    rows = [json.loads(line) for line in ROLEPLAY.read_text(encoding="utf-8").splitlines()]
    return [[m for m in row["messages"] if m["role"] == "user"][:1] for row in rows[:4]]


def test_the_record_holds_the_system_prompt_and_template(roleplay_run):
    run = read_run(roleplay_run)
    assert run.record.schema == SCHEMA_VERSION
    assert run.system_prompt == SYSTEM and run.record.system_prompts == [SYSTEM]
    assert run.record.template.stop_token_ids and run.record.template.eot_text == "<|im_end|>"


def test_chat_asks_with_the_run_s_system_prompt_unless_overridden(roleplay_run):
    with Engine.load(str(roleplay_run)) as engine:
        template = engine.template
        question = questions()[0]
        assert engine.system_prompt() == SYSTEM
        with_system = template.encode_prompt([{"role": "system", "content": SYSTEM}, *question])
        assert engine.encode(question) == with_system
        other = [{"role": "system", "content": "You are terse."}, *question]
        assert engine.encode(other) == template.encode_prompt(other)


def test_eval_and_compare_answer_as_chat_does(roleplay_run, tmp_path):
    with Engine.load(str(roleplay_run)) as engine:
        chat_answers = [engine.chat(q, GREEDY).text for q in questions()]
    common = ["--data", str(ROLEPLAY), "--max-samples", "4", "--max-new-tokens", "12", "--quiet"]
    assert main(["eval", str(roleplay_run), *common, "-o", str(tmp_path / "default")]) == 0
    assert main(["eval", str(roleplay_run), *common, "--system", SYSTEM, "-o", str(tmp_path / "explicit")]) == 0
    assert main(["compare", "base", str(roleplay_run), *common, "--no-heldout", "-o", str(tmp_path / "cmp")]) == 0
    default = read_predictions(tmp_path / "default" / "predictions.jsonl")
    assert default == read_predictions(tmp_path / "explicit" / "predictions.jsonl")
    assert default == read_predictions(tmp_path / "cmp" / "predictions" / f"{roleplay_run.name}.jsonl")
    assert default == chat_answers
    metrics = json.loads((tmp_path / "cmp" / "metrics.json").read_text(encoding="utf-8"))
    assert [t["system_prompt"] for t in metrics["targets"]] == [SYSTEM, SYSTEM]
    assert SYSTEM in (tmp_path / "cmp" / "report.md").read_text(encoding="utf-8")


def read_predictions(path) -> list[str]:
    return [json.loads(line)["prediction"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_base_of_a_run_is_asked_with_the_run_s_template_adapter_off(roleplay_run):
    with Engine.load(str(roleplay_run), base=True) as base, Engine.load(str(roleplay_run)) as tuned:
        question = questions()[0]
        assert base.encode(question) == tuned.encode(question)
        assert base.system_prompt() == SYSTEM and base.adapter_names == []
        with tuned.backend._adapter(None):  # the tuned engine with its adapter off is the base
            ids = tuned.encode(question)
            import torch

            expected = tuned.model(torch.tensor([ids])).logits[0, -1]
        got = base.model(torch.tensor([ids])).logits[0, -1]
        assert torch.allclose(got, expected, atol=1e-5)


def test_merge_and_mix_carry_the_record(roleplay_run, tmp_path):
    assert main(["merge", str(roleplay_run), "-o", str(tmp_path / "merged")]) == 0
    assert main(["mix", f"{roleplay_run}:1.0", "-o", str(tmp_path / "mixed")]) == 0
    trained = read_run(roleplay_run).record
    for made in ("merged", "mixed"):
        record = read_run(tmp_path / made).record
        assert (record.template, record.system_prompt) == (trained.template, SYSTEM), made
        assert record.origin
        with Engine.load(str(tmp_path / made)) as engine:
            assert engine.system_prompt() == SYSTEM


def test_a_record_never_switches_on_remote_code(roleplay_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(roleplay_run, copy)
    data = json.loads((copy / META_FILE).read_text(encoding="utf-8"))
    data["config"]["model"]["trust_remote_code"] = True
    (copy / META_FILE).write_text(json.dumps(data), encoding="utf-8")
    from tunekit.infer.target import resolve_target

    assert resolve_target(str(copy)).trust_remote_code is False
    assert resolve_target(str(copy), trust_remote_code=True).trust_remote_code is True


def test_a_schema_1_record_still_reads(roleplay_run, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(roleplay_run, copy)
    data = json.loads((copy / META_FILE).read_text(encoding="utf-8"))
    for key in ("schema", "system_prompt", "system_prompts", "generation", "origin"):
        data.pop(key)
    (copy / META_FILE).write_text(json.dumps(data), encoding="utf-8")
    run = read_run(copy)
    assert run.system_prompt == SYSTEM and run.stop_token_ids == read_run(roleplay_run).stop_token_ids


@pytest.mark.parametrize("folder", ["train", "eval", "half"])
def test_a_run_named_like_a_torch_attribute_chats(roleplay_run, tmp_path, folder):
    copy = tmp_path / folder
    shutil.copytree(roleplay_run, copy)
    with Engine.load(str(copy)) as engine:
        assert engine.default_adapter != BASE and engine.default_adapter not in ("train", "eval", "half")
        assert engine.chat(questions()[0], GREEDY).completion_tokens > 0


@pytest.fixture(scope="module")
def glm_run(remote_code_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("glm") / "run"
    return train(make_config(remote_code_model, out, tmp_path_factory.mktemp("cache"),
                             model={"trust_remote_code": True, "template": "chatml"},
                             method={"lora_target": ["query_key_value"]}))


def test_a_remote_code_model_that_trains_also_chats_evaluates_and_merges(glm_run, tmp_path, capsys):
    with pytest.raises(Exception, match="trust-remote-code|trust_remote_code"):
        Engine.load(str(glm_run))  # the run's own config does not switch it on
    with Engine.load(str(glm_run), trust_remote_code=True) as engine:
        reply = engine.chat([{"role": "user", "content": "张伟在北京"}], GREEDY)
        assert reply.completion_tokens > 0
    data = ["--data", str(ROLEPLAY), "--max-samples", "2", "--max-new-tokens", "4", "--quiet"]
    assert main(["eval", str(glm_run), *data, "--trust-remote-code", "-o", str(tmp_path / "eval")]) == 0
    assert main(["merge", str(glm_run), "-o", str(tmp_path / "merged"), "--trust-remote-code"]) == 0
    with Engine.load(str(tmp_path / "merged"), trust_remote_code=True) as merged:
        assert merged.chat([{"role": "user", "content": "张伟在北京"}], GREEDY).text == reply.text
    assert main(["chat", str(glm_run)]) == 1
    assert "--trust-remote-code" in capsys.readouterr().err
