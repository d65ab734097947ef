"""PaddingCollator and PackedCollator: exact shapes, masks, position ids and labels."""

import pytest
import torch
from transformers import DataCollatorWithFlattening

from tunekit.data.collate import PackedCollator, PaddingCollator, padding_fraction
from tunekit.errors import ConfigError

SAMPLES = [
    {"input_ids": [11, 12, 13], "labels": [-100, 12, 13]},
    {"input_ids": [21, 22, 23, 24, 25], "labels": [-100, -100, -100, 24, 25]},
    {"input_ids": [31, 32], "labels": [31, 32]},
]


def test_padding_collator_pads_right_to_longest():
    batch = PaddingCollator(pad_token_id=0)(SAMPLES)

    assert batch["input_ids"].tolist() == [
        [11, 12, 13, 0, 0],
        [21, 22, 23, 24, 25],
        [31, 32, 0, 0, 0],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [
        [-100, 12, 13, -100, -100],
        [-100, -100, -100, 24, 25],
        [31, 32, -100, -100, -100],
    ]
    assert {tensor.dtype for tensor in batch.values()} == {torch.long}


def test_padding_collator_rounds_width_up_to_multiple():
    batch = PaddingCollator(pad_token_id=7, pad_to_multiple_of=8)(SAMPLES)

    assert batch["input_ids"].shape == (3, 8)
    assert batch["input_ids"][2].tolist() == [31, 32, 7, 7, 7, 7, 7, 7]
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 5, 2]
    assert batch["labels"][1, 5:].tolist() == [-100, -100, -100]


def test_padding_collator_keeps_exact_multiple():
    batch = PaddingCollator(pad_token_id=0, pad_to_multiple_of=5)(SAMPLES)

    assert batch["input_ids"].shape == (3, 5)


def test_padding_collator_refuses_bad_multiple():
    with pytest.raises(ConfigError, match="pad_to_multiple_of"):
        PaddingCollator(pad_token_id=0, pad_to_multiple_of=0)


def test_packed_collator_restarts_positions_and_masks_boundaries():
    batch = PackedCollator()(SAMPLES)

    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[11, 12, 13, 21, 22, 23, 24, 25, 31, 32]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 4, 0, 1]]
    # The first label of every sample is -100: nothing predicts across a boundary.
    assert batch["labels"].tolist() == [[-100, 12, 13, -100, -100, -100, 24, 25, -100, 32]]
    assert {tensor.dtype for tensor in batch.values()} == {torch.long}


def test_packed_collator_leaves_features_unchanged():
    features = [{"input_ids": [1, 2], "labels": [1, 2]}]

    PackedCollator()(features)

    assert features == [{"input_ids": [1, 2], "labels": [1, 2]}]


def test_packed_collator_flash_kwargs():
    batch = PackedCollator(return_flash_kwargs=True)(SAMPLES)

    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 8, 10]
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["cu_seq_lens_k"].tolist() == [0, 3, 8, 10]
    assert batch["max_length_q"] == batch["max_length_k"] == 5


def test_packed_collator_matches_transformers_flattening_collator():
    ours = PackedCollator(return_flash_kwargs=True)(SAMPLES)
    theirs = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(SAMPLES, return_tensors="pt")

    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        if torch.is_tensor(value):
            assert torch.equal(ours[key], value), key
            assert ours[key].dtype == value.dtype, key
        else:
            assert ours[key] == value, key


def test_packed_collator_accepts_tensor_features():
    features = [{"input_ids": torch.tensor([5, 6]), "labels": torch.tensor([5, 6])}]

    assert PackedCollator()(features)["labels"].tolist() == [[-100, 6]]


@pytest.mark.parametrize("collator", [PaddingCollator(pad_token_id=0), PackedCollator()])
def test_collators_refuse_misaligned_labels(collator):
    with pytest.raises(ValueError, match="equal length"):
        collator([{"input_ids": [1, 2, 3], "labels": [1, 2]}])


@pytest.mark.parametrize("collator", [PaddingCollator(pad_token_id=0), PackedCollator()])
def test_collators_refuse_empty_batch(collator):
    with pytest.raises(ValueError, match="empty batch"):
        collator([])


def test_padding_fraction_counts_pad_positions():
    padded = PaddingCollator(pad_token_id=0, pad_to_multiple_of=8)(SAMPLES)  # 10 real of 24
    packed = PackedCollator()(SAMPLES)  # 10 real of 10

    assert padding_fraction([padded]) == pytest.approx(14 / 24)
    assert padding_fraction([packed]) == 0.0
    assert padding_fraction([padded, packed]) == pytest.approx(14 / 34)
    assert padding_fraction([]) == 0.0
