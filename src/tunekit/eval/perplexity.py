"""The forgetting probe: a model's perplexity on held-out general text.

    text, name = heldout_text()                  # the small general set tunekit ships, or heldout_text(FILE)
    result = perplexity(model, tokenizer, text)  # {"perplexity", "tokens", "nll"}

The text is tokenized once (no special tokens) and cut to `max_tokens`, then scored in
windows of `block_size` tokens that start every `stride` tokens. A window predicts the
tokens that no earlier window predicted, except its own first token (which has no
context), using the window's earlier tokens as context; no token is scored twice.
stride == block_size (the default) gives plain blocks, fast, whose first tokens are not
scored; a smaller stride a sliding window: more context per token, slower.
perplexity = exp(sum of the scored tokens' negative log-likelihoods / scored tokens).

Perplexities of two models are comparable when they share a tokenizer (a base model and
its fine-tunes do); `tokens` is reported so that a difference is visible.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from tunekit.config import DatasetSpec
from tunekit.errors import DataError, TunekitError

HELDOUT = Path(__file__).resolve().parents[1] / "assets" / "corpus" / "general_heldout.txt"
DEFAULT_BLOCK = 512
DEFAULT_MAX_TOKENS = 16384


def heldout_text(path: str | Path | None = None) -> tuple[str, str]:
    """(text, name) of a held-out set: a .txt file as is, other dataset files through their text column."""
    path = Path(path) if path else HELDOUT
    if not path.exists():
        raise DataError(f"held-out text {path} not found: give a .txt file, or a JSON/JSONL/CSV/Parquet file "
                        "with a text column")
    if path.is_file() and path.suffix.lower() == ".txt":
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        from tunekit.data.formats import load_one

        loaded = load_one(DatasetSpec(path=str(path)), "pt")
        text = "\n\n".join(record.text for record in loaded.records)
    if not text.strip():
        raise DataError(f"held-out text {path} is empty: give a file with some general text")
    return text, path.name


def windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over n_tokens; no token is scored twice."""
    spans, scored_until = [], 0
    for begin in range(0, max(n_tokens - 1, 0), stride):
        end = min(begin + block_size, n_tokens)
        first = max(scored_until, begin + 1)
        if end > first:
            spans.append((begin, end, first))
            scored_until = end
        if end == n_tokens:
            break
    return spans


def _context_length(model) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(config, "max_position_embeddings", 0) or DEFAULT_BLOCK)


@torch.inference_mode()
def _window_nll(model, ids: torch.Tensor, spans: list[tuple[int, int, int]]) -> float:
    """Summed negative log-likelihood of the scored tokens of windows of equal length."""
    batch = torch.stack([ids[begin:end] for begin, end, _ in spans]).to(model.device)
    logits = model(input_ids=batch).logits.float()
    total = 0.0
    for row, (begin, end, first) in enumerate(spans):
        predicted = logits[row, first - begin - 1: end - begin - 1]
        total += F.cross_entropy(predicted, batch[row, first - begin: end - begin], reduction="sum").item()
    return total


def perplexity(model, tokenizer, text: str, block_size: int | None = None, stride: int | None = None,
               max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int = 4) -> dict:
    """{"perplexity", "tokens" (scored), "nll" (mean per token)} of the model on text."""
    block = min(block_size or DEFAULT_BLOCK, _context_length(model))
    stride = stride or block
    if not 0 < stride <= block:
        raise TunekitError(f"perplexity stride {stride} must be between 1 and the block size {block}")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"][:max_tokens]
    ids = torch.tensor(ids, dtype=torch.long)
    if len(ids) < 2:
        raise DataError("the held-out text has fewer than 2 tokens: give a longer text")
    spans = windows(len(ids), block, stride)
    by_length: dict[int, list] = {}
    for span in spans:
        by_length.setdefault(span[1] - span[0], []).append(span)
    was_training = model.training
    model.eval()
    try:
        nll = sum(_window_nll(model, ids, group[i: i + batch_size])
                  for group in by_length.values() for i in range(0, len(group), batch_size))
    finally:
        model.train(was_training)
    scored = sum(end - first for _, end, first in spans)
    return {"perplexity": math.exp(nll / scored), "tokens": scored, "nll": nll / scored}
