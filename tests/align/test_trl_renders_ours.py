"""What TRL trains is exactly our rendering: the batches its trainers build equal an independent
reading of `apply_chat_template` on real tokenizers and templates, each completion ending with
the end-of-turn token, and no second rendering anywhere.

The expectation is computed here, not by tunekit: the conversation (prompt + one answer)
rendered by the tokenizer's apply_chat_template, cut after the answer's end-of-turn (or the
end-of-turn appended where the template leaves it out), then tokenized as one text.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer
from real_artifacts import TEMPLATES, real_tokenizer_dir

from tunekit.config import load_config
from tunekit.data.align_data import prepare_align_data
from tunekit.train.align_run import build_models, build_stage_trainer, starting_run, tokenizer_and_template
from tunekit.train.stages import stage_of

PROMPTS = [[{"role": "user", "content": "What is 2 + 2?"}],
           [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}],
           [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Say yes."}],
           [{"role": "user", "content": "你好，今天天气怎么样？"}]]
CHOSEN = ["4", "Blue.", "Yes.", "今天天气很好。"]
REJECTED = ["Five, I think", "I will not.", "No", "不知道"]
PAIRS = [("qwen2.5-instruct", "chatml.jinja", "<|im_end|>"), ("llama3-instruct", "llama3_2.jinja", "<|eot_id|>"),
         ("qwen3", "qwen3.jinja", "<|im_end|>")]
REWRITES_HISTORY: set[str] = set()  # issue 12: each turn is trained under its own inference prompt


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    """real_model(tokenizer name) -> a 1-layer random qwen2 with that real tokenizer's vocabulary."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    made = {}

    def make(name: str):
        if name not in made:
            tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir(name))
            torch.manual_seed(0)
            config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
            out = tmp_path_factory.mktemp("real-models") / name
            Qwen2ForCausalLM(config).save_pretrained(out)
            tokenizer.save_pretrained(out)
            made[name] = out
        return made[name]

    return make


def expected_ids(tokenizer, source: str, messages: list[dict], eot: str) -> list[int]:
    text = tokenizer.apply_chat_template(messages, chat_template=source, tokenize=False)
    answer_at = text.rindex(messages[-1]["content"]) + len(messages[-1]["content"])
    end = text.find(eot, answer_at)
    text = text[: end + len(eot)] if end >= 0 else text + eot
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def first_batch(tmp_path, model_dir, template: str, stage: str, rows: list[dict]):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = load_config(None, [f"model.name_or_path={model_dir}", f"model.template={TEMPLATES / template}",
                             f"data.path={path}", f"train.stage={stage}", f"train.output_dir={tmp_path / 'run'}",
                             f"train.batch_size={len(rows)}", "train.report_to=[]", "data.cutoff_len=256",
                             "align.rewards=[exact_match]", f"align.num_generations={len(rows)}"])
    stage_ = stage_of(cfg)
    start = starting_run(cfg)
    tokenizer, tpl = tokenizer_and_template(cfg, start)
    data = prepare_align_data(cfg, tpl, stage_.records, stage_.layout)
    model, peft, reference = build_models(cfg, stage_, tokenizer, tpl, start)
    trainer, _ = build_stage_trainer(cfg, stage_, model, peft, reference, tokenizer, data, tmp_path / "run")
    trainer.tunekit_problems = data.problems
    return trainer, tokenizer


def _rows(mask_key, batch, i):
    keep = batch["attention_mask"][i].bool()
    return batch["input_ids"][i][keep].tolist(), batch[mask_key][i][keep].bool()


def pairs_rows() -> list[dict]:
    return [{"messages": p, "chosen": c, "rejected": r} for p, c, r in zip(PROMPTS, CHOSEN, REJECTED)]


@pytest.mark.parametrize("name,template,eot", PAIRS, ids=[f"{n}-{t}" for n, t, _ in PAIRS])
def test_dpo_batches_are_our_rendering_of_apply_chat_template(tmp_path, real_model, name, template, eot):
    trainer, tokenizer = first_batch(tmp_path, real_model(name), template, "dpo", pairs_rows())
    source = (TEMPLATES / template).read_text(encoding="utf-8")
    batch = next(iter(trainer.get_train_dataloader()))
    kept = [i for i, p in enumerate(PROMPTS) if template not in REWRITES_HISTORY or len(p) < 3]
    assert [p.line for p in trainer.tunekit_problems] == [i + 1 for i in range(len(PROMPTS)) if i not in kept]
    assert all("rewrites history" in p.message for p in trainer.tunekit_problems)
    got = {}
    for i in range(2 * len(kept)):
        ids, completion = _rows("completion_mask", batch, i)
        got[tuple(ids)] = tokenizer.decode(torch.tensor(ids)[completion])
    for k in kept:
        for answer in (CHOSEN[k], REJECTED[k]):
            want = tuple(expected_ids(tokenizer, source, PROMPTS[k] + [{"role": "assistant", "content": answer}], eot))
            assert want in got, f"{answer!r}: TRL's sequence differs from apply_chat_template's"
            # the completion is what the template writes after the generation prompt, to the end-of-turn
            # (Qwen3: an empty <think></think> block, then the answer)
            prompt = tokenizer.apply_chat_template(PROMPTS[k], chat_template=source, tokenize=False,
                                                   add_generation_prompt=True)
            full = tokenizer.decode(torch.tensor(want))
            assert full.startswith(prompt) and full.endswith(answer + eot)
            assert got[want] == full[len(prompt):]


def test_reward_orpo_and_kto_batches_are_our_rendering(tmp_path, tiny_model_dir):
    """On the tiny tokenizer: TRL's ORPO hashes the tokenizer for its dataset cache, minutes for a real one."""
    template, eot = "chatml.jinja", "<|im_end|>"
    source = (TEMPLATES / template).read_text(encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    want = {tuple(expected_ids(tokenizer, source, p + [{"role": "assistant", "content": a}], eot))
            for p, c, r in zip(PROMPTS, CHOSEN, REJECTED) for a in (c, r)}

    trainer, _ = first_batch(tmp_path / "rm", tiny_model_dir, template, "rm", pairs_rows())
    batch = next(iter(trainer.get_train_dataloader()))
    assert {tuple(_rows("attention_mask", batch, i)[0]) for i in range(2 * len(PROMPTS))} == want

    trainer, _ = first_batch(tmp_path / "orpo", tiny_model_dir, template, "orpo", pairs_rows())
    batch = next(iter(trainer.get_train_dataloader()))
    for side in ("chosen", "rejected"):
        for ids, mask, labels in zip(batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"],
                                     batch[f"{side}_labels"]):
            ids, labels = ids[mask.bool()].tolist(), labels[mask.bool()]
            assert tuple(ids) in want and labels[-1].item() == ids[-1]  # trained through the end-of-turn

    kto_rows = [{"messages": p, "completion": c, "label": True} for p, c in zip(PROMPTS, CHOSEN)]
    trainer, _ = first_batch(tmp_path / "kto", tiny_model_dir, template, "kto", kto_rows)
    batch = next(iter(trainer.get_train_dataloader()))
    assert {tuple(_rows("completion_mask", batch, i)[0]) for i in range(len(PROMPTS))} <= want


def test_grpo_generates_from_our_prompt_ids(tmp_path, real_model):
    name, template, eot = PAIRS[0]
    rows = [{"messages": p, "answer": c} for p, c in zip(PROMPTS, CHOSEN)]
    trainer, tokenizer = first_batch(tmp_path, real_model(name), template, "grpo", rows)
    source = (TEMPLATES / template).read_text(encoding="utf-8")
    texts = list(trainer.train_dataset["prompt"])
    ids, _, _ = trainer._tokenize_prompts(texts)  # what TRL's generation step calls
    for prompt_text, prompt_ids in zip(texts, ids):
        messages = json.loads(trainer.train_dataset[texts.index(prompt_text)]["messages"])
        want = tokenizer.apply_chat_template(messages, chat_template=source, add_generation_prompt=True,
                                             tokenize=False)
        assert prompt_ids == tokenizer(want, add_special_tokens=False)["input_ids"]
    assert trainer.eos_token_ids[-1] == tokenizer.convert_tokens_to_ids(eot)  # generation stops at end-of-turn
