"""Collators: turn tokenized samples `{"input_ids", "labels"}` into model batches.

Labels arrive unshifted (the model shifts them) with -100 where nothing is trained.

`PaddingCollator` right-pads every sample to the longest in the batch and returns an
`attention_mask`. `PackedCollator` is padding-free: it concatenates the batch into one
row `[1, total]` with `position_ids` that restart at 0 for every sample and no
attention mask, and sets the first label of every sample to -100 so that the last token
of one sample is never trained to predict the first token of the next. Both give the
same loss over the same trained tokens; tests/unit/test_packing_equivalence.py checks it.

`PackedCollator(bounded_rows=True)` packs the batch into rows no wider than its longest
sample (first fit, longest first) instead of one row, and right-pads each row to that
width: the pad positions continue the last sample's position ids, so causal attention
keeps every real token blind to them, and their labels are -100. This is the layout for
eager / sdpa attention, whose packed mask costs width^2 per row: one row of the whole
batch would cost more attention than padding does, while rows as wide as the longest
sample cost no more per row than pad-to-longest and there are fewer of them. Training
switches a transformers model on sdpa to `sdpa_varlen` (model/packed_attention.py), which
runs each sample of one packed row on its own: no padding and no cross-sample attention
at all, so such a model gets the one-row layout. `with_sample_bounds(batch)` adds, at
forward time, the `cu_seq_lens_*` that tell it where each sample starts (read from the
position ids, which restart at 0 for every sample).
`collator_for(model, packing, pad_token_id)` picks the collator for a model.

`trained_logits_only(batch)` adds, at forward time (train/trainer.py), `logits_to_keep`, a
boolean mask of the positions whose next label is trained, and `shift_labels`, those labels.
transformers 5.x models that slice hidden states with `slice_logits_to_keep` then project
onto the vocabulary only there (prompt, history and pad positions never reach the LM head
or the softmax), and their loss function takes the targets as given; the loss and the
gradients are the same. With a 49k-250k vocabulary the head is a fifth of the model's
compute and its fp32 logits the largest tensor of a step. It is added to the batch the
model gets, not by the collator: accelerate slices a dispatched batch along its first
dimension, which the flat `shift_labels` does not have.

When packing is safe (transformers 5.x, read in masking_utils.py and
modeling_flash_attention_utils.py):

- eager, sdpa, flex_attention: `create_causal_mask` calls `find_packed_sequence_indices`
  on `position_ids` and builds a block-diagonal causal mask, but only when the forward
  gets `attention_mask=None` AND no cache. A model whose `config.use_cache` is True
  builds an empty DynamicCache in forward, the packed check is skipped and samples
  attend across boundaries. The Trainer sets `model.config.use_cache =
  TrainingArguments.use_cache` (False by default); outside the Trainer pass
  `use_cache=False`. A new sample is wherever a position id is not the previous one
  plus 1, so restarting at 0 always marks it. The mask is per row; sdpa then materialises
  a [rows, 1, total, total] mask (no flash kernel), so packing saves the pad tokens'
  compute but attention still costs total^2.
- flash_attention_2/3/4: varlen attention from `cu_seq_lens_*`/`max_length_*` when given
  (`PackedCollator(return_flash_kwargs=True)`), otherwise derived from `position_ids`,
  which only happens for a single row without attention mask and needs every sample to
  start at the same (minimum) position id, 0 here.
- Anything else (remote-code models such as ChatGLM or Baichuan build their own masks,
  custom kernels) is treated as unsafe.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

import torch

from tunekit.data.templates import IGNORE_INDEX
from tunekit.errors import ConfigError

# sdpa run once per sample of a packed row (model/packed_attention.py registers it under this name).
PER_SAMPLE_SDPA = "sdpa_varlen"
# Attention implementations that keep packed samples apart given position_ids alone.
PACKING_SAFE_ATTENTION = frozenset(
    {"eager", "sdpa", PER_SAMPLE_SDPA, "flex_attention"}
    | {"flash_attention_2", "flash_attention_3", "flash_attention_4"}
)
# Only models implemented in transformers itself build their masks with masking_utils.
TRANSFORMERS_MODEL_MODULE = "transformers.models."


class PaddingCollator:
    """Right-pads a batch to its longest sample (optionally rounded up to a multiple)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ConfigError(
                f"pad_to_multiple_of must be a positive integer or unset, got {pad_to_multiple_of}."
            )
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        samples = [_sample_tensors(feature) for feature in _non_empty(features)]
        width = self._padded_width(max(len(ids) for ids, _ in samples))
        input_ids = torch.full((len(samples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        attention_mask = torch.zeros_like(input_ids)
        for row, (ids, sample_labels) in enumerate(samples):
            input_ids[row, : len(ids)] = ids
            labels[row, : len(ids)] = sample_labels
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _padded_width(self, longest: int) -> int:
        multiple = self.pad_to_multiple_of or 1
        return -(-longest // multiple) * multiple


class PackedCollator:
    """Concatenates a batch into one row with per-sample position_ids (padding-free).

    With `bounded_rows` it fills several rows no wider than the longest sample instead, the
    tail of each shorter row padded with token id 0, label -100 and position ids that
    continue its last sample (see the module docstring).

    With `return_flash_kwargs` it also returns `cu_seq_lens_q/k` (int32 cumulative sample
    lengths) and `max_length_q/k` (int), the varlen kwargs transformers' flash-attention
    path reads (same names as `DataCollatorWithFlattening`); other attention
    implementations ignore them.
    """

    def __init__(self, return_flash_kwargs: bool = False, bounded_rows: bool = False):
        if return_flash_kwargs and bounded_rows:
            raise ValueError("return_flash_kwargs describes one packed row; bounded_rows makes several: "
                             "use one or the other")
        self.return_flash_kwargs = return_flash_kwargs
        self.bounded_rows = bounded_rows

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor | int]:
        samples = [_sample_tensors(feature) for feature in _non_empty(features)]
        lengths = [len(ids) for ids, _ in samples]
        rows = fill_rows(lengths, max(lengths)) if self.bounded_rows else [list(range(len(samples)))]
        width = max(sum(lengths[i] for i in row) for row in rows)
        input_ids = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        position_ids = torch.arange(width).repeat(len(rows), 1)  # the pad tail continues the last sample
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                ids, sample_labels = samples[i]
                end = start + len(ids)
                input_ids[r, start:end] = ids
                labels[r, start + 1: end] = sample_labels[1:]
                position_ids[r, start:] = torch.arange(width - start)
                start = end
        batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        if self.return_flash_kwargs:
            batch.update(_flash_kwargs(lengths))
        return batch


def trained_logits_only(batch: dict) -> dict:
    """The batch asking the model for logits at trained positions only (see above)."""
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # position t is trained to predict label t+1
    return dict(batch, logits_to_keep=keep, shift_labels=labels[:, 1:][keep[:, :-1]])


def with_sample_bounds(batch: dict) -> dict:
    """One packed row with the varlen kwargs of its samples, read from where its position ids
    restart at 0; any other batch as it is."""
    positions = batch.get("position_ids")
    if positions is None or positions.shape[0] != 1 or "cu_seq_lens_q" in batch:
        return batch
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        return batch
    edges = [*starts, positions.shape[1]]
    return dict(batch, **_flash_kwargs([end - start for start, end in zip(edges, edges[1:])]))


def fill_rows(lengths: list[int], width: int) -> list[list[int]]:
    """Sample indices per row: first fit, longest first, no row longer than `width` tokens."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if r is None:
            rows.append([])
            free.append(width)
            r = len(rows) - 1
        rows[r].append(i)
        free[r] -= lengths[i]
    return rows


def _flash_kwargs(lengths: list[int]) -> dict[str, torch.Tensor | int]:
    """Varlen kwargs of transformers' `_flash_attention_forward` for samples of these lengths."""
    cu_seq_lens = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    longest = max(lengths)
    return {
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def _non_empty(features: Sequence[dict]) -> Sequence[dict]:
    if not features:
        raise ValueError("Cannot collate an empty batch.")
    return features


def _sample_tensors(feature: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A sample's input_ids and labels as int64 tensors of equal length."""
    ids = torch.as_tensor(feature["input_ids"], dtype=torch.long)
    labels = torch.as_tensor(feature["labels"], dtype=torch.long)
    if ids.shape != labels.shape or ids.dim() != 1:
        raise ValueError(
            f"A sample needs 1-D input_ids and labels of equal length, got {tuple(ids.shape)} "
            f"and {tuple(labels.shape)}."
        )
    return ids, labels


def supports_packing(model) -> bool:
    """True when `model` keeps PackedCollator's samples apart (see the module docstring).

    That is: a model implemented in transformers (not remote code), possibly wrapped by
    peft, whose attention implementation is in PACKING_SAFE_ATTENTION. It still needs
    `use_cache=False` at forward time, which the Trainer's default TrainingArguments give.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    is_native = type(base).__module__.startswith(TRANSFORMERS_MODEL_MODULE)
    return is_native and attention_implementation(model) in PACKING_SAFE_ATTENTION


def collator_for(model, packing: bool, pad_token_id: int):
    """The collator for `model`: one packed row under attention whose cost is per sample (flash
    attention, with its varlen kwargs; sdpa_varlen, given them at forward time), bounded
    packed rows under eager / sdpa, otherwise pad-to-longest."""
    if not packing:
        return PaddingCollator(pad_token_id, pad_to_multiple_of=8)
    if attention_implementation(model).startswith("flash_attention"):
        return PackedCollator(return_flash_kwargs=True)
    if attention_implementation(model) == PER_SAMPLE_SDPA:
        return PackedCollator()
    return PackedCollator(bounded_rows=True)


def masks_logits(model) -> bool:
    """True when `model` takes a boolean `logits_to_keep` and `shift_labels` (trained_logits_only):
    a transformers model whose forward slices with `slice_logits_to_keep`, with no virtual
    tokens in front of the input (prompt-tuning methods lengthen the sequence)."""
    if getattr(getattr(model, "peft_config", {}).get("default"), "is_prompt_learning", False):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    module = sys.modules.get(type(base).__module__)
    native = type(base).__module__.startswith(TRANSFORMERS_MODEL_MODULE)
    return native and module is not None and hasattr(module, "slice_logits_to_keep")


def attention_implementation(model) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "_attn_implementation", None) or ""


def padding_fraction(batches: Iterable[dict]) -> float:
    """Fraction of all positions in `batches` that are padding, read from `attention_mask`.

    Packed batches carry no attention mask and count as 0.0: right for one packed row; the
    pad tail of bounded rows is not counted (count real tokens from the features instead).
    """
    padded = total = 0
    for batch in batches:
        total += batch["input_ids"].numel()
        if "attention_mask" in batch:
            padded += int((batch["attention_mask"] == 0).sum())
    return padded / total if total else 0.0
