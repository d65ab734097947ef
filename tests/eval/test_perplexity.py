"""The forgetting probe: windows score every token once; perplexity equals exp(mean NLL)."""

import json
import math

import pytest
import torch

from tunekit.errors import DataError
from tunekit.eval.perplexity import HELDOUT, heldout_text, perplexity, windows


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("n, block, stride", [(10, 4, 4), (10, 4, 3), (10, 4, 1), (100, 16, 7), (3, 8, 8)])
def test_windows_never_score_a_token_twice(n, block, stride):
    spans = windows(n, block, stride)
    scored = [t for _, end, first in spans for t in range(first, end)]
    assert len(scored) == len(set(scored))
    assert all(end - begin <= block and begin < first for begin, end, first in spans)
    if stride < block:  # a sliding window scores every token after the first
        assert sorted(scored) == list(range(1, n))


def test_blocks_skip_only_each_block_start():
    assert windows(10, 4, 4) == [(0, 4, 1), (4, 8, 5), (8, 10, 9)]


def test_one_block_perplexity_is_exp_of_the_model_loss(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    text, _ = heldout_text()
    result = perplexity(model, tokenizer, text, block_size=64, max_tokens=64)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"][:64]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert result["tokens"] == 63
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)


def test_sliding_window_scores_every_token_and_batching_does_not_change_it(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    text, _ = heldout_text()
    one_by_one = perplexity(model, tokenizer, text, block_size=40, stride=10, max_tokens=100, batch_size=1)
    batched = perplexity(model, tokenizer, text, block_size=40, stride=10, max_tokens=100, batch_size=3)
    blocks = perplexity(model, tokenizer, text, block_size=40, max_tokens=100)
    assert one_by_one["tokens"] == 99 and blocks["tokens"] == 97  # blocks skip the first token of each block
    assert batched["nll"] == pytest.approx(one_by_one["nll"], rel=1e-5)


def test_shipped_heldout_text_and_other_files(tmp_path):
    text, name = heldout_text()
    assert name == HELDOUT.name and len(text) > 10_000
    path = tmp_path / "general.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["one document", "another one"]), encoding="utf-8")
    assert heldout_text(path) == ("one document\n\nanother one", "general.jsonl")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        heldout_text(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="not found"):
        heldout_text(tmp_path / "missing.txt")
