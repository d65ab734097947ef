"""Plain helpers for the adapter tests: the example configs and how to make them tiny."""

from helpers import CONFIGS_DIR as CONFIGS
from helpers import NER_TRAIN

EXAMPLES = ("qlora4", "qlora8", "dora", "prefix", "ptuning")


def example_overrides(model_dir, output_dir, cache) -> list[str]:
    """Make an example config tiny: our model, 2 steps of 2 samples, the session's data cache."""
    return [f"model.name_or_path={model_dir}", f"train.output_dir={output_dir}", "train.max_steps=2",
            "train.batch_size=2", "train.grad_accum=1", "train.learning_rate=0.02", "train.logging_steps=1",
            "train.report_to=[]", f"data.cache_dir={cache}", "data.cutoff_len=96",
            f"data.datasets=[{{path: '{NER_TRAIN}', max_samples: 64}}]"]
