"""Plain helpers for the preference / GRPO tests: example configs made tiny, the metric keys of each stage."""

from helpers import ROOT

CONFIGS = ROOT / "configs"
ALIGN_EXAMPLES = ("rm", "dpo", "kto", "orpo", "simpo", "grpo")

# What each stage logs into metrics.jsonl (TRL's names): the evidence that it trained what it says.
STAGE_METRICS = {
    "rm": ("accuracy", "margin", "mean_reward"),
    "dpo": ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"),
    "kto": ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins"),
    "orpo": ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"),
    "simpo": ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"),
    "grpo": ("reward", "kl", "completions/mean_length"),
}


def tiny_overrides(model_dir, output_dir) -> list[str]:
    """An example config on our tiny model: 2 steps of 4 rows (grpo: 4 completions of one prompt)."""
    return [f"model.name_or_path={model_dir}", f"train.output_dir={output_dir}", "train.max_steps=2",
            "train.batch_size=4", "train.grad_accum=1", "train.logging_steps=1", "train.report_to=[]",
            "data.cutoff_len=96"]


# The preference the tiny base lacks (tests/align/test_learns.py): "Name one thing about the <topic>."
# answered with an animal (chosen) or another two-token word (rejected).
ANIMALS = ["dog", "cat", "bird", "fish", "cow", "lion"]  # two tokens each in the tiny tokenizer
OTHERS = ["green", "black", "pink", "gold", "dark", "bear"]  # two tokens each too
TOPICS = ["river", "mountain", "city", "music", "garden", "winter", "ocean", "forest", "history", "science",
          "market", "school", "football", "language", "island", "village", "engine", "castle", "summer", "bridge",
          "train", "coffee", "moon", "paper", "king", "war", "game", "film", "book", "road"]


def animal_pairs(topics, rng) -> list[dict]:
    return [{"conversations": [{"from": "human", "value": f"Name one thing about the {t}."}],
             "chosen": {"from": "gpt", "value": rng.choice(ANIMALS)},
             "rejected": {"from": "gpt", "value": rng.choice(OTHERS)}} for t in topics]
