"""Left padding for generation and next-token scoring, in one place.

    input_ids, attention_mask = left_padded([[5, 6, 7], [8]], pad_id=0, device=model.device)

Prompts of different lengths are padded on the left, so every row's next token comes right
after its own last token; the mask hides the padding. Position ids, where a model takes
them, are `attention_mask.cumsum(-1) - 1` clamped at 0 (see `positions`).
"""

from __future__ import annotations

import torch


def left_padded(prompts: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return input_ids, mask


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
