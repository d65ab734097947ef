"""The stages learn on a tiny model: DPO acquires a preference the base lacks, GRPO raises its reward.

DPO: answers are an animal (chosen) or another two-token word (rejected), so the random base
ranks a pair by chance (~50%). After DPO (with the chosen answers' NLL term, RPO: loss_type
sigmoid,sft) held-out pairs are ranked right >= 90% of the time and greedy answers to held-out
prompts are animals >= 80% of the time. GRPO: a verifiable format reward (lowercase letters
and spaces only) rises by >= 0.3 from the first to the last fifth of the steps, fixed seeds.
"""

from __future__ import annotations

import json

import pytest
import torch
from align_helpers import ANIMALS, TOPICS

from tunekit.config import DatasetSpec, load_config
from tunekit.data.align_data import build_dataset
from tunekit.eval.preference import preference_scores
from tunekit.infer.target import chat_template
from tunekit.model.multi import load_adapters
from tunekit.rundir import read_run
from tunekit.train.run import train


def _config(tmp_path, model_dir, data, stage, *more):
    return load_config(None, [f"model.name_or_path={model_dir}", f"data.path={data}", "data.cutoff_len=48",
                              f"train.stage={stage}", f"train.output_dir={tmp_path / stage}", "train.report_to=[]",
                              "train.logging_steps=1", "train.seed=0", *more])


@pytest.mark.slow
def test_dpo_learns_a_preference_the_base_lacks(learned_dpo):
    run, cfg, test_file = learned_dpo
    model, tokenizer = load_adapters([run], dtype="fp32")
    template = chat_template(tokenizer, read_run(run))
    held_out, _, _ = build_dataset(cfg, [DatasetSpec(str(test_file))], template, "pairs")
    tuned = preference_scores(model, held_out)
    with model.disable_adapter():
        base = preference_scores(model, held_out)
    assert 0.2 <= base.accuracy <= 0.8, f"the base should not hold the preference already: {base.accuracy}"
    assert tuned.accuracy >= 0.9 and tuned.implicit_accuracy >= 0.9, tuned.record()

    follows = 0
    for topic in TOPICS[20:]:
        ids = template.encode_prompt([{"role": "user", "content": f"Name one thing about the {topic}."}])
        out = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False,
                             eos_token_id=template.stop_token_ids, pad_token_id=tokenizer.pad_token_id)
        follows += tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip() in ANIMALS
    assert follows / len(TOPICS[20:]) >= 0.8


@pytest.mark.slow
def test_grpo_raises_a_verifiable_reward(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"Write a word about the number {i}."} for i in range(40)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(tmp_path, tiny_model_dir, tmp_path / "prompts.jsonl", "grpo", "train.max_steps=30",
                  "train.batch_size=16", "train.learning_rate=1e-2", "train.lr_scheduler=constant", "method.name=full",
                  "align.rewards=['format:[a-z ]+']", "align.num_generations=8", "align.max_new_tokens=3",
                  "align.beta=0.0")
    run = train(cfg)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in records if "reward" in r]
    assert len(rewards) == 30
    fifth = len(rewards) // 5
    first, last = sum(rewards[:fifth]) / fifth, sum(rewards[-fifth:]) / fifth
    assert last - first >= 0.3, f"mean reward {first:.2f} -> {last:.2f}: {rewards}"
