"""PackedCollator(bounded_rows=True): rows no wider than the longest sample, same logits and loss.

The layout build_trainer uses for eager / sdpa attention. Tiny random Qwen2 and Llama models
in fp32 with use_cache=False, as the Trainer leaves them.
"""

import pytest
import torch

from helpers import tiny_causal_lm as build_model
from helpers import tiny_samples as make_samples
from tunekit.data.collate import (
    PackedCollator,
    PaddingCollator,
    collator_for,
    fill_rows,
)

LENGTHS = [5, 11, 3, 8, 2, 6]  # longest 11: rows [11], [8, 3], [6, 5], [2] by first fit, longest first


@pytest.fixture(scope="module", params=[(a, i) for a in ("qwen2", "llama") for i in ("eager", "sdpa")], ids="-".join)
def model(request):
    return build_model(*request.param)


def test_fill_rows_first_fit_longest_first():
    assert fill_rows(LENGTHS, 11) == [[1], [3, 2], [5, 0], [4]]
    assert fill_rows([4, 4, 4], 12) == [[0, 1, 2]]


def test_rows_are_as_wide_as_the_longest_sample_with_an_unlabelled_pad_tail():
    samples = make_samples(LENGTHS, seed=1)
    batch = PackedCollator(bounded_rows=True)(samples)

    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].shape == (4, 11)
    # row 1 holds samples 3 (8 tokens) and 2 (3 tokens); row 3 holds sample 4 (2 tokens) and 9 pad positions
    assert batch["input_ids"][1].tolist() == samples[3]["input_ids"] + samples[2]["input_ids"]
    assert batch["position_ids"][1].tolist() == list(range(8)) + list(range(3))
    assert batch["position_ids"][3].tolist() == list(range(11))  # the tail continues the last sample
    assert batch["input_ids"][3, 2:].tolist() == [0] * 9
    assert batch["labels"][3, 2:].tolist() == [-100] * 9
    assert batch["labels"][1, 8] == -100  # a sample's first token is never a target


def test_each_sample_inside_a_row_has_its_logits_alone(model):
    samples = make_samples(LENGTHS, seed=2)
    batch = PackedCollator(bounded_rows=True)(samples)
    with torch.no_grad():
        packed = model(**batch).logits
    by_ids = {tuple(s["input_ids"]): s for s in samples}

    seen = 0
    for r, row in enumerate(fill_rows(LENGTHS, max(LENGTHS))):
        start = 0
        for i in row:
            ids = samples[i]["input_ids"]
            assert batch["input_ids"][r, start: start + len(ids)].tolist() == ids
            with torch.no_grad():
                alone = model(input_ids=torch.tensor([ids])).logits[0]
            assert torch.allclose(packed[r, start: start + len(ids)], alone, atol=1e-5)
            start += len(ids)
            seen += 1
    assert seen == len(by_ids)


def test_loss_equals_the_padded_loss(model):
    samples = make_samples(LENGTHS, seed=3)
    with torch.no_grad():
        bounded = model(**PackedCollator(bounded_rows=True)(samples)).loss
        padded = model(**PaddingCollator(pad_token_id=0)(samples)).loss

    assert torch.allclose(bounded, padded, rtol=1e-6, atol=1e-6)


def test_flash_kwargs_and_bounded_rows_exclude_each_other():
    with pytest.raises(ValueError, match="one or the other"):
        PackedCollator(return_flash_kwargs=True, bounded_rows=True)


@pytest.mark.parametrize(("attention", "packing", "expected"), [
    ("sdpa", True, ("packed", True, False)),
    ("eager", True, ("packed", True, False)),
    ("flash_attention_2", True, ("packed", False, True)),
    ("sdpa_varlen", True, ("packed", False, False)),
    ("sdpa", False, ("padded", None, None)),
])
def test_collator_for_picks_the_layout_of_the_attention(attention, packing, expected):
    model = build_model("llama", "eager")
    model.config._attn_implementation = attention

    collator = collator_for(model, packing, pad_token_id=0)

    kind, bounded, flash = expected
    if kind == "padded":
        assert isinstance(collator, PaddingCollator)
    else:
        assert isinstance(collator, PackedCollator)
        assert (collator.bounded_rows, collator.return_flash_kwargs) == (bounded, flash)
