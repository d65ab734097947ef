"""sdpa_varlen (model/packed_attention.py): one packed row, attention per sample.

On the same packed row it must give the logits, loss and gradients of plain sdpa with its
block-diagonal mask; anything that is not a described packed row (padded batches) must go
through plain sdpa unchanged; training switches to it and saves an ordinary sdpa config.
"""

import json

import pytest
import torch

from helpers import make_config
from helpers import tiny_causal_lm as build_model
from helpers import tiny_samples as make_samples
from tunekit.data.collate import PackedCollator, PaddingCollator, with_sample_bounds
from tunekit.model.packed_attention import NAME, use_packed_attention

LENGTHS = [5, 11, 3, 8, 2, 6]


def forward_backward(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch, use_cache=False)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_per_sample_attention_equals_the_masked_packed_row(architecture):
    model = build_model(architecture, "sdpa")
    batch = with_sample_bounds(PackedCollator()(make_samples(LENGTHS, seed=3)))
    plain_row = {k: v for k, v in batch.items() if not k.startswith(("cu_", "max_"))}
    masked, masked_grads = forward_backward(model, plain_row)

    assert use_packed_attention(model)
    assert model.config._attn_implementation == NAME
    calls = []
    hook = model.model.layers[0].self_attn.register_forward_hook(lambda *args: calls.append(1))
    per_sample, grads = forward_backward(model, batch)
    hook.remove()

    assert calls
    torch.testing.assert_close(per_sample.logits, masked.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_sample.loss, masked.loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == masked_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], masked_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_samples_really_are_kept_apart():
    """Changing one sample leaves the logits of the others as they were."""
    model = build_model("llama", "sdpa")
    use_packed_attention(model)
    samples = make_samples(LENGTHS, seed=4)
    changed = [dict(s) for s in samples]
    changed[0] = dict(changed[0], input_ids=[(i + 7) % 120 + 1 for i in changed[0]["input_ids"]])
    with torch.no_grad():
        before = model(**with_sample_bounds(PackedCollator()(samples)), use_cache=False).logits
        after = model(**with_sample_bounds(PackedCollator()(changed)), use_cache=False).logits
    first = LENGTHS[0]
    assert not torch.allclose(before[0, :first], after[0, :first])
    torch.testing.assert_close(before[0, first:], after[0, first:], rtol=0, atol=0)


def test_sample_bounds_come_from_position_ids_of_one_row_only():
    packed = with_sample_bounds(PackedCollator()(make_samples(LENGTHS, seed=5)))
    expected = [0]
    for length in LENGTHS:
        expected.append(expected[-1] + length)
    assert packed["cu_seq_lens_q"].tolist() == expected
    assert packed["max_length_q"] == max(LENGTHS)
    rows = PackedCollator(bounded_rows=True)(make_samples(LENGTHS, seed=5))
    assert "cu_seq_lens_q" not in with_sample_bounds(rows)  # several rows: left to the mask


def test_a_padded_batch_goes_through_plain_sdpa():
    model = build_model("llama", "sdpa")
    batch = PaddingCollator(pad_token_id=0)(make_samples(LENGTHS, seed=6))
    with torch.no_grad():
        plain = model(**batch, use_cache=False).logits
        use_packed_attention(model)
        varlen = model(**batch, use_cache=False).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(varlen[real], plain[real], rtol=0, atol=0)


def test_only_an_sdpa_model_is_switched():
    model = build_model("llama", "eager")
    assert not use_packed_attention(model)
    assert model.config._attn_implementation == "eager"


def test_training_uses_it_and_saves_an_ordinary_config(tiny_model_dir, tmp_path):
    from tunekit.data.pipeline import prepare_data
    from tunekit.data.templates import load_template
    from tunekit.model.load import load_tokenizer
    from tunekit.train.run import build_model as build_run_model
    from tunekit.train.run import build_trainer

    cfg = make_config(tiny_model_dir, tmp_path / "run", tmp_path / "cache", train={"max_steps": 2, "batch_size": 4},
                      model={"attn_implementation": "sdpa"})
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template))
    model = build_run_model(cfg, tokenizer)
    trainer, _ = build_trainer(cfg, model, tokenizer, data, tmp_path / "run")
    seen = []
    hook = model.get_base_model().model.layers[0].self_attn.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs.get("cu_seq_lens_q")), with_kwargs=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    hook.remove()

    assert model.get_base_model().config._attn_implementation == NAME
    assert seen and all(bounds is not None for bounds in seen)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    model.get_base_model().save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert NAME not in json.dumps(saved)
