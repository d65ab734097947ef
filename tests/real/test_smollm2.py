"""SmolLM2-135M-Instruct end to end: import, template, LoRA, merge, chat, compare — on real weights.

Fixtures (tests/real/conftest.py): `smollm2_dir` (the imported GGUF), `smollm2_lora_run` (20
LoRA steps on the demo's NER task). Budget: the whole tier in about 3 minutes on 2 cores.
"""

from __future__ import annotations

import json

import pytest
import torch

from helpers import NER_TEST
from tunekit.config import EvalConfig
from tunekit.data.records import Conversation
from tunekit.data.templates import IGNORE_INDEX, load_template

pytestmark = pytest.mark.slow

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
IM_END = 2  # <|im_end|> in SmolLM2's vocabulary


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def gguf_vocabulary() -> list[str]:
    """The token strings as the GGUF file stores them (its metadata, not the tokenizer built from it)."""
    from transformers.integrations.gguf.reader import read_gguf_metadata

    from tunekit.demo import smollm2_gguf

    metadata, _ = read_gguf_metadata(str(smollm2_gguf()), ("tokenizer.ggml.tokens",))
    return metadata["tokenizer.ggml.tokens"]


def test_import_writes_a_plain_fp32_model_that_stops_at_im_end(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert generation["eos_token_id"] == IM_END and generation["pad_token_id"] == IM_END
    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / "chat_template.jinja").is_file()


def test_token_ids_follow_the_files_vocabulary_and_split_digits_one_by_one(tokenizer):
    vocab = gguf_vocabulary()
    ids = {text: tokenizer(text, add_special_tokens=False)["input_ids"] for text in
           ["12345", "In 2024, 7 cats", "Hello, world!", "<|im_start|>user\n"]}
    assert ids["12345"] == [vocab.index(d) for d in "12345"]
    assert [vocab[i] for i in ids["In 2024, 7 cats"]] == ["In", "Ġ", "2", "0", "2", "4", ",", "Ġ", "7", "Ġcats"]
    assert [vocab[i] for i in ids["Hello, world!"]] == ["Hello", ",", "Ġworld", "!"]
    assert ids["<|im_start|>user\n"] == [vocab.index("<|im_start|>"), vocab.index("user"), vocab.index("Ċ")]
    assert vocab[IM_END] == "<|im_end|>" and tokenizer.eos_token_id == IM_END


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "找出句中的人名和地名\n李雷去了北京。"}, {"role": "assistant", "content": "李雷_人名\n北京_地名"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
     {"role": "assistant", "content": "6, of course."}],
], ids=["ner", "system-multi-turn"])
def test_template_ids_equal_apply_chat_template_and_labels_are_the_answers(tokenizer, messages):
    template = load_template(tokenizer, None)
    encoded = template.encode(Conversation(messages))
    assert encoded.input_ids == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    expected = []  # each answer, tokenized alone, then <|im_end|>: SmolLM2 writes answers right after "assistant\n"
    for m in messages:
        if m["role"] == "assistant":
            expected += tokenizer(m["content"], add_special_tokens=False)["input_ids"] + [IM_END]
    assert [t for t in encoded.labels if t != IGNORE_INDEX] == expected


def test_plain_transformers_generate_answers_and_stops_at_im_end(smollm2_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    prompt = tokenizer.apply_chat_template(CAPITAL, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=40, do_sample=False)[0, prompt["input_ids"].shape[1]:]
    assert out[-1].item() == IM_END and len(out) < 40  # generation_config.eos_token_id stopped it
    assert "Paris" in tokenizer.decode(out, skip_special_tokens=True)


def test_chat_engine_stops_at_im_end(smollm2_dir):
    from tunekit.infer.engine import Engine, GenerationParams

    with Engine.load(str(smollm2_dir)) as engine:
        assert engine.template.stop_token_ids == [IM_END]
        reply = engine.chat(CAPITAL, GenerationParams(max_new_tokens=40))
    assert reply.finish_reason == "stop" and reply.completion_tokens < 40
    assert "Paris" in reply.text and "<|im_end|>" not in reply.text and "<|im_start|>" not in reply.text


def test_short_lora_run_lowers_the_loss(smollm2_lora_run):
    losses = [r["loss"] for r in map(json.loads, (smollm2_lora_run / "metrics.jsonl").read_text().splitlines())
              if "loss" in r]
    assert len(losses) >= 4
    assert sum(losses[-2:]) / 2 < 0.5 * sum(losses[:2]) / 2, losses


def test_merged_logits_equal_base_plus_adapter(smollm2_dir, smollm2_lora_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunekit.export.merge import merge_run

    merge_run(smollm2_lora_run, tmp_path / "merged")
    ids = torch.tensor([[1, 9690, 198, 19556, 28, 905, 17, 2, 198, 34, 32, 34, 36]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(smollm2_dir)
        plain = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(smollm2_lora_run))(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(ids).logits
    assert (tuned - plain).abs().max() > 1e-2  # the adapter changes the model
    torch.testing.assert_close(merged, tuned, atol=2e-4, rtol=1e-4)


def test_compare_shows_the_task_metric_rising(smollm2_lora_run):
    from tunekit.eval.compare import compare
    from tunekit.eval.perplexity import heldout_text
    from tunekit.eval.tasks import load_task

    task = load_task(str(NER_TEST), EvalConfig(max_samples=8, max_new_tokens=24, predict_batch_size=8))
    comparison = compare(["base", str(smollm2_lora_run)], task, str(NER_TEST), heldout_text(), heldout_tokens=256,
                         progress=False)
    base, tuned = (e.result for e in comparison.evaluations)
    headline = comparison.headline
    assert tuned.scores[headline] >= base.scores[headline] + 25, (headline, base.scores, tuned.scores)
    probe = comparison.forgetting()  # perplexity on general text, 256 tokens: both scored, the base is the reference
    base_label, tuned_label = (e.label for e in comparison.evaluations)
    assert probe[base_label]["relative_change"] == 0 and 1 < probe[tuned_label]["perplexity"] < 1000
