"""The baseline: the usual tutorial recipe, written out here so the bench measures against it.

- preprocessing: the JSON read into a `datasets.Dataset`, then `.map` one example at a
  time: the prompt rendered with `apply_chat_template(add_generation_prompt=True)` and
  tokenized, the answer plus eos tokenized, labels -100 over the prompt; no cache;
- training: the same Hugging Face Trainer and hyperparameters as tunekit, batches padded
  to their longest sample by `DataCollatorForSeq2Seq`, no packing;
- generation: `model.generate` on one prompt at a time.

It produces the same token ids as tunekit for the same rows (tunekit's render also ends
with the newline after the end-of-turn token, one untrained token more per sample).
"""

from __future__ import annotations

import json
from pathlib import Path

from common import BATCH_SIZE, CUTOFF_LEN, LEARNING_RATE, SEED


def preprocess(files: list[Path], tokenizer, cutoff_len: int = CUTOFF_LEN):
    from datasets import Dataset

    rows = [row for path in files for row in json.loads(Path(path).read_text(encoding="utf-8"))]
    dataset = Dataset.from_list(rows)

    def tokenize(example: dict) -> dict:
        user = example["instruction"] + (f"\n{example['input']}" if example["input"] else "")
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                               add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(example["output"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        input_ids = (prompt_ids + answer_ids)[:cutoff_len]
        labels = ([-100] * len(prompt_ids) + answer_ids)[:cutoff_len]
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}

    return dataset.map(tokenize, remove_columns=dataset.column_names)


def trainer(model_dir: Path, tokenizer, dataset, output_dir: Path, max_steps: int):
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE, lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", seed=SEED, data_seed=SEED, logging_steps=max_steps + 1,
        save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    return Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)


def generate_one_by_one(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int) -> list[int]:
    """Greedy answers, one prompt at a time; the number of new tokens of each."""
    import torch

    produced = []
    for messages in conversations:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                            return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        produced.append(out.shape[1] - ids["input_ids"].shape[1])
    return produced
