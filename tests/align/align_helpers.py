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
