"""The Trainer tunekit's SFT and pretraining runs use: transformers' own, asking the model for
logits at trained positions only where the model can (data/collate.py, `trained_logits_only`),
and telling `sdpa_varlen` attention where the samples of a packed row start
(`with_sample_bounds`, model/packed_attention.py).

Everything else (the loop, accumulation, checkpoints, DDP / DeepSpeed) is transformers' Trainer.
The batch is changed at forward time rather than in the collator, so that accelerate can still
slice a dispatched batch along its first dimension.
"""

from __future__ import annotations

from transformers import Trainer

from tunekit.data.collate import (
    PER_SAMPLE_SDPA,
    attention_implementation,
    masks_logits,
    trained_logits_only,
    with_sample_bounds,
)


class TunekitTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logits_at_trained_positions = masks_logits(self.model)
        self.attention_per_sample = attention_implementation(self.model) == PER_SAMPLE_SDPA

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self.attention_per_sample:
            inputs = with_sample_bounds(inputs)
        if self.logits_at_trained_positions and "labels" in inputs:
            inputs = trained_logits_only(inputs)
        return super().compute_loss(model, inputs, *args, **kwargs)
