"""The one place tunekit imports `trl.experimental` (ORPO, and CPO for SimPO).

TRL keeps these trainers under `trl.experimental`, which may change in any release; the
project pins TRL to the tested 1.16 series (pyproject `align` extra). Both trainers tokenize
text in `tokenize_row`; the subclasses here build the same row from our ids instead, so
what they train is exactly the template's rendering (tunekit.data.align_data).
"""

from __future__ import annotations

from trl.experimental.cpo import CPOConfig, CPOTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

IGNORE_INDEX = -100


def row_from_ids(feature: dict, model=None) -> dict:
    """The columns tokenize_row would write, from prompt_ids / chosen_ids / rejected_ids."""
    prompt = list(feature["prompt_ids"])
    row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for name in ("chosen", "rejected"):
        completion = list(feature[f"{name}_ids"])
        row[f"{name}_input_ids"] = prompt + completion
        row[f"{name}_attention_mask"] = [1] * (len(prompt) + len(completion))
        row[f"{name}_labels"] = [IGNORE_INDEX] * len(prompt) + completion
    return row


# A plain function, not a bound method: `datasets` hashes the function it maps for the cache
# fingerprint, and a bound method drags in the whole trainer (77 s of pickling for a 151k-token
# vocabulary, measured on one core).


class OurIdsORPOTrainer(ORPOTrainer):
    tokenize_row = staticmethod(row_from_ids)


class OurIdsCPOTrainer(CPOTrainer):
    tokenize_row = staticmethod(row_from_ids)


def orpo():
    return OurIdsORPOTrainer, ORPOConfig


def cpo():
    return OurIdsCPOTrainer, CPOConfig
