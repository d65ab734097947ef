"""`sdpa_varlen`: sdpa attention that runs each sample of a packed row on its own.

A packed row (PackedCollator's one row with `cu_seq_lens_q`) under plain sdpa gets a
block-diagonal [T, T] mask: attention costs T^2 for the whole row, most of it on blocks
that are masked out, and the explicit mask keeps sdpa off its fused causal kernel. Flash
attention's varlen kernel avoids both, but it is CUDA only. This implementation does
the same on any device with torch's own sdpa: for a single packed row whose
`cu_seq_lens_q` cover it exactly, it calls transformers' `sdpa_attention_forward` once
per sample with `is_causal=True` and no mask (each sample attends to itself only, at the
cost of its own length squared), and concatenates the outputs. Anything else (padded
batches, generation with a cache) goes to `sdpa_attention_forward` unchanged, with the
mask sdpa would get: the implementation registers sdpa's mask function under its name.

transformers never writes `_attn_implementation` into a saved config.json, so a model
trained with it saves and loads as an ordinary sdpa model. `use_packed_attention(model)`
switches a transformers model that uses sdpa over to it; tests/throughput/test_packed_attention.py
checks logits and gradients equal plain sdpa on the same packed row.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from tunekit.data.collate import PER_SAMPLE_SDPA as NAME


def sdpa_varlen_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """Per-sample causal sdpa over a packed row; plain sdpa otherwise (see the module docstring)."""
    bounds = _sample_bounds(query, kwargs.get("cu_seq_lens_q"))
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k != "is_causal"}
    outputs = [sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                      None, is_causal=True, **kwargs)[0]
               for start, end in bounds]
    return torch.cat(outputs, dim=1), None


def _sample_bounds(query: torch.Tensor, cu_seq_lens: torch.Tensor | None) -> list[tuple[int, int]] | None:
    """(start, end) of each sample when `cu_seq_lens` describes exactly this one packed row."""
    if cu_seq_lens is None or query.shape[0] != 1:
        return None
    edges = cu_seq_lens.tolist()
    if edges[0] != 0 or edges[-1] != query.shape[2]:
        return None
    return [(start, end) for start, end in zip(edges, edges[1:]) if end > start]


def register() -> None:
    """Make `sdpa_varlen` a known attention implementation (idempotent)."""
    AttentionInterface.register(NAME, sdpa_varlen_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_packed_attention(model) -> bool:
    """Switch `model` (peft-wrapped or not) from sdpa to sdpa_varlen; False when it does not use sdpa."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    base.set_attn_implementation(NAME)
    return True
