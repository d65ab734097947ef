"""Generation: prompts per second, tunekit's `Engine.batch` on 32 prompts against one-by-one.

The baseline is the tutorial loop: `apply_chat_template` and `model.generate` per prompt.
tunekit loads the same model directory with `Engine.load` and answers all prompts with
`engine.batch` (left-padded, one generate call per batch of its default size). Both decode
greedily up to the same number of new tokens and stop at end-of-turn; the new tokens each
side produced are recorded. The engine's own one-by-one `engine.chat` is timed too, for
the notes.
"""

from __future__ import annotations

import json
from pathlib import Path

import naive
from common import EVAL_FILE, Clock, Pairs, interleaved, rounded

PROMPTS = 32
MAX_NEW_TOKENS = 32


def conversations() -> list[list[dict]]:
    rows = json.loads(EVAL_FILE.read_text(encoding="utf-8"))[:PROMPTS]
    return [[{"role": "user", "content": r["instruction"] + (f"\n{r['input']}" if r["input"] else "")}]
            for r in rows]


def run(model_dir: Path, repeats: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunekit.infer.engine import Engine
    from tunekit.infer.params import GenerationParams

    prompts = conversations()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    engine = Engine.load(str(model_dir))
    params = GenerationParams(max_new_tokens=MAX_NEW_TOKENS)
    tokens = {}

    def baseline():
        with Clock() as clock, torch.no_grad():
            tokens["baseline"] = sum(naive.generate_one_by_one(model, tokenizer, prompts, MAX_NEW_TOKENS))
        return len(prompts) / clock.seconds

    def batched():
        with Clock() as clock:
            tokens["tunekit"] = sum(reply.completion_tokens for reply in engine.batch(prompts, params))
        return len(prompts) / clock.seconds

    try:
        base, ours = interleaved(repeats, baseline, batched)
        with Clock() as chat:
            chat_tokens = sum(engine.chat(messages, params).completion_tokens for messages in prompts)
    finally:
        engine.close()
    return {"prompts": len(prompts), "max_new_tokens": MAX_NEW_TOKENS,
            "prompts_per_s": Pairs(base, ours).as_dict(), "new_tokens": tokens,
            "engine_chat_one_by_one_prompts_per_s": rounded([len(prompts) / chat.seconds])[0],
            "engine_chat_new_tokens": chat_tokens}
