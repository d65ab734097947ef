"""Each method and LoRA variant: what becomes trainable, and that two steps move exactly that."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import make_config

from tunekit.errors import ConfigError
from tunekit.model.load import load_tokenizer
from tunekit.train.run import build_model, use_packing


def build(tiny_model_dir, tmp_path, cache_dir, **method):
    cfg = make_config(tiny_model_dir, tmp_path / "run", cache_dir, method={"name": "lora", "lora_r": 4, **method})
    tokenizer = load_tokenizer(cfg.model)
    return cfg, tokenizer, build_model(cfg, tokenizer)


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train_steps(model, tokenizer, steps: int = 2, lr: float = 1e-2) -> dict[str, torch.Tensor]:
    """A few AdamW steps on two short samples; returns the trainable weights from before."""
    before = trainable(model)
    batch = tokenizer(["江宁强明天从苏州来到兰州。", "我们昨天去昆明。"], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        assert math.isfinite(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return before


def assert_all_moved(model, before):
    after = trainable(model)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"trainable but not changed by training: {unchanged}"


def kinds(names) -> set[str]:
    """The kind of each trainable tensor: lora_A, lora_B, lora_magnitude_vector, modules_to_save, ..."""
    known = ("lora_A", "lora_B", "lora_magnitude_vector", "modules_to_save", "prompt_encoder")
    return {next((k for k in known if k in n), n) for n in names}


def test_dora_trains_lora_matrices_and_magnitudes(tiny_model_dir, tmp_path, cache_dir):
    _, tokenizer, model = build(tiny_model_dir, tmp_path, cache_dir, dora=True)
    before = train_steps(model, tokenizer)
    assert kinds(before) == {"lora_A", "lora_B", "lora_magnitude_vector"}
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.lora_magnitude_vector["default"].weight.shape == (q_proj.out_features,)
    assert_all_moved(model, before)


def test_rslora_scales_by_alpha_over_sqrt_r(tiny_model_dir, tmp_path, cache_dir):
    _, tokenizer, model = build(tiny_model_dir, tmp_path, cache_dir, rslora=True, lora_alpha=16)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == pytest.approx(16 / math.sqrt(4))
    before = train_steps(model, tokenizer)
    assert kinds(before) == {"lora_A", "lora_B"}
    assert_all_moved(model, before)


def test_pissa_starts_from_principal_components_and_reloads_identically(tiny_model_dir, tmp_path, cache_dir):
    """PiSSA moves the principal part of W into the adapter; loading the saved adapter on the original
    base must rebuild the same residual (exact SVD), or run directories would not be portable."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, tokenizer, model = build(tiny_model_dir, tmp_path, cache_dir, pissa=True, lora_alpha=4)
    original = load_file(str(tiny_model_dir / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    a, b = q_proj.lora_A["default"].weight, q_proj.lora_B["default"].weight
    assert a.abs().sum() > 0 and b.abs().sum() > 0  # not LoRA's zero B
    residual = q_proj.base_layer.weight
    assert not torch.allclose(residual, original)
    assert torch.allclose(residual + q_proj.scaling["default"] * b @ a, original, atol=1e-5)
    before = train_steps(model, tokenizer)
    assert kinds(before) == {"lora_A", "lora_B"}
    assert_all_moved(model, before)
    ids = tokenizer(["我们昨天去昆明。"], return_tensors="pt")
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(**ids).logits, model(**ids).logits, atol=1e-5)


def test_modules_to_save_trains_the_embeddings_and_keeps_them_tied(tiny_model_dir, tmp_path, cache_dir):
    _, tokenizer, model = build(tiny_model_dir, tmp_path, cache_dir, modules_to_save=["embed_tokens", "lm_head"])
    before = train_steps(model, tokenizer)
    assert kinds(before) == {"lora_A", "lora_B", "modules_to_save"}
    saved = [n for n in before if "modules_to_save" in n]
    assert saved == ["base_model.model.model.embed_tokens.modules_to_save.default.weight"]
    trained = model.get_input_embeddings().modules_to_save["default"].weight
    assert model.get_output_embeddings().weight.data_ptr() == trained.data_ptr()  # tied model: one copy
    assert_all_moved(model, before)


def test_loraplus_gives_lora_b_its_own_learning_rate(tiny_model_dir, tmp_path, cache_dir):
    from tunekit.data.pipeline import prepare_data
    from tunekit.data.templates import load_template
    from tunekit.train.run import build_trainer

    cfg = make_config(tiny_model_dir, tmp_path / "run", cache_dir, method={"name": "lora", "lora_r": 4,
                                                                           "loraplus_lr_ratio": 16.0},
                      train={"max_steps": 1, "lr_scheduler": "constant"})
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tokenizer, load_template(tokenizer, None))
    model = build_model(cfg, tokenizer)
    trainer, _ = build_trainer(cfg, model, tokenizer, data, tmp_path / "run")
    trainer.train()
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            lrs[names[id(p)]] = group["lr"]
    assert {n for n in lrs} == {n for n, p in model.named_parameters() if p.requires_grad}
    assert sorted({lr for n, lr in lrs.items() if "lora_A" in n}) == pytest.approx([1e-3])
    assert sorted({lr for n, lr in lrs.items() if "lora_B" in n}) == pytest.approx([16e-3])


@pytest.mark.parametrize("bits, quant_type, compute", [(4, "fp4", "bf16"), (8, "nf4", "auto")])
def test_qlora_freezes_quantized_base_and_trains_lora_on_cpu(tiny_model_dir, tmp_path, cache_dir, bits, quant_type,
                                                              compute):
    _, tokenizer, model = build(tiny_model_dir, tmp_path, cache_dir, name="qlora", bits=bits, quant_type=quant_type,
                                compute_dtype=compute)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert type(q_proj).__name__ == ("Linear4bit" if bits == 4 else "Linear8bitLt")
    assert q_proj.weight.dtype == (torch.uint8 if bits == 4 else torch.int8)
    if bits == 4:
        assert q_proj.weight.quant_type == quant_type and q_proj.compute_dtype == torch.bfloat16
    unquantized = [p for n, p in model.named_parameters() if p.dtype.is_floating_point and "lora_" not in n]
    assert unquantized and all(p.dtype == torch.float32 for p in unquantized)  # k-bit preparation upcast them
    before = train_steps(model, tokenizer)
    assert kinds(before) == {"lora_A", "lora_B"}
    assert_all_moved(model, before)


@pytest.mark.parametrize("method", [{"name": "prefix", "prefix_projection": True}, {"name": "ptuning"}])
def test_prompt_methods_train_only_the_prompt_encoder_and_never_pack(tiny_model_dir, tmp_path, cache_dir, method):
    cfg, tokenizer, model = build(tiny_model_dir, tmp_path, cache_dir, num_virtual_tokens=4,
                                  encoder_hidden_size=32, **method)
    before = train_steps(model, tokenizer)
    assert kinds(before) == {"prompt_encoder"}
    assert_all_moved(model, before)
    assert use_packing(cfg, model) is False


@pytest.mark.parametrize("method, message", [
    ({"name": "prefix", "dora": True}, "method.dora applies to LoRA"),
    ({"name": "full", "loraplus_lr_ratio": 16.0}, "method.loraplus_lr_ratio applies to LoRA"),
    ({"name": "ptuning", "modules_to_save": ["lm_head"]}, "method.modules_to_save applies to LoRA"),
    ({"name": "qlora", "pissa": True}, "cannot be done faithfully on 4/8-bit"),
    ({"name": "lora", "loraplus_lr_ratio": 0.0}, "ratio > 0"),
    ({"name": "qlora", "compute_dtype": "fp8"}, "method.compute_dtype is 'fp8'"),
])
def test_contradicting_method_keys_are_refused(tiny_model_dir, tmp_path, cache_dir, method, message):
    with pytest.raises(ConfigError, match=message):
        make_config(tiny_model_dir, tmp_path, cache_dir, method=method)


def test_packing_with_a_prompt_method_is_refused(tiny_model_dir, tmp_path, cache_dir):
    with pytest.raises(ConfigError, match="set data.packing: false"):
        make_config(tiny_model_dir, tmp_path, cache_dir, method={"name": "prefix"}, data={"packing": True})
