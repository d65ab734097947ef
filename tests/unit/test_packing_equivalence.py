"""Packing changes nothing but speed: logits, loss and accumulated gradients match.

Tiny random Qwen2 and Llama models in fp32, attention "eager" and "sdpa". The models are
built with `use_cache=False`, as the Trainer leaves them (it sets `model.config.use_cache
= TrainingArguments.use_cache`, False by default); one test shows why that matters.
"""

import inspect

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model

from tunekit.data.collate import (
    PackedCollator,
    PaddingCollator,
    masks_logits,
    trained_logits_only,
    supports_packing,
)

TINY = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    use_cache=False,
)
CONFIGS = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}
PAD_ID = 0


def build_model(architecture: str, attention: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = CONFIGS[architecture](**TINY)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    return model.float().eval()


@pytest.fixture(
    scope="module",
    params=[(arch, attn) for arch in CONFIGS for attn in ("eager", "sdpa")],
    ids=lambda param: "-".join(param),
)
def model(request):
    return build_model(*request.param)


def make_samples(lengths: list[int], seed: int) -> list[dict]:
    """Random samples: even ones have an untrained prompt, odd ones are trained from the
    first token (plain text), so a packed row has boundaries where a label must be dropped."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for index, length in enumerate(lengths):
        ids = torch.randint(1, TINY["vocab_size"], (length,), generator=generator).tolist()
        prompt = 0 if index % 2 else int(torch.randint(1, length, (1,), generator=generator))
        samples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return samples


def logits_alone(model, sample: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([sample["input_ids"]])).logits[0]


def split_packed_row(row: torch.Tensor, samples: list[dict]) -> list[torch.Tensor]:
    return list(row.split([len(sample["input_ids"]) for sample in samples]))


@pytest.mark.parametrize("return_flash_kwargs", [False, True])
def test_packed_logits_equal_separate_logits(model, return_flash_kwargs):
    samples = make_samples([5, 11, 3, 8], seed=1)
    batch = PackedCollator(return_flash_kwargs=return_flash_kwargs)(samples)

    with torch.no_grad():
        packed = model(**batch).logits[0]

    for sample, inside_row in zip(samples, split_packed_row(packed, samples)):
        assert torch.allclose(inside_row, logits_alone(model, sample), atol=1e-5)


def test_packing_leaks_across_samples_when_model_uses_cache(model):
    # With a cache, transformers 5.x skips the packed-sequence check in create_causal_mask:
    # samples then attend to earlier samples of the row. The Trainer's default avoids it.
    samples = make_samples([6, 9], seed=2)
    batch = PackedCollator()(samples)

    with torch.no_grad():
        packed = model(**batch, use_cache=True).logits[0]

    second = split_packed_row(packed, samples)[1]
    assert not torch.allclose(second, logits_alone(model, samples[1]), atol=1e-3)


def separate_mean_loss(model, samples: list[dict]) -> torch.Tensor:
    """Sum of per-token cross-entropy over every trained token / number of trained tokens."""
    total, count = torch.zeros(()), 0
    for sample in samples:
        labels = torch.tensor(sample["labels"][1:])
        logits = logits_alone(model, sample)[:-1]
        total += torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        count += int((labels != -100).sum())
    return total / count


def test_packed_and_padded_loss_equal_token_weighted_mean(model):
    samples = make_samples([7, 4, 12, 9], seed=3)
    expected = separate_mean_loss(model, samples)

    with torch.no_grad():
        packed = model(**PackedCollator()(samples)).loss
        padded = model(**PaddingCollator(PAD_ID, pad_to_multiple_of=8)(samples)).loss

    assert torch.allclose(packed, expected, rtol=1e-6, atol=1e-6)
    assert torch.allclose(padded, expected, rtol=1e-6, atol=1e-6)


def trainer_passes_loss_kwargs(model) -> bool:
    """Trainer.__init__'s test (trainer.py, "Model introspection"): forward takes **kwargs."""
    if hasattr(model, "accepts_loss_kwargs"):
        return model.accepts_loss_kwargs
    parameters = inspect.signature(model.forward).parameters.values()
    return any(parameter.kind == inspect.Parameter.VAR_KEYWORD for parameter in parameters)


def trainer_num_items_in_batch(micro_batches: list[dict]) -> torch.Tensor:
    """Trainer._get_num_items_in_batch for a causal LM: trained labels over labels[..., 1:]."""
    return sum((batch["labels"][..., 1:] != -100).sum() for batch in micro_batches)


def accumulated_gradients(model, collator, samples: list[dict], micro_batch_size: int) -> dict:
    """First-step gradients as Trainer.training_step accumulates them.

    Each micro-batch loss is the model's own loss given `num_items_in_batch` (the trained
    tokens of the whole accumulated batch); the Trainer then does not divide it by the
    number of accumulation steps, because the model accepts loss kwargs.
    """
    model.zero_grad()
    micro_batches = [
        collator(samples[start : start + micro_batch_size])
        for start in range(0, len(samples), micro_batch_size)
    ]
    num_items_in_batch = trainer_num_items_in_batch(micro_batches)
    for batch in micro_batches:
        model(**batch, num_items_in_batch=num_items_in_batch).loss.backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize(
    "collator",
    [PaddingCollator(PAD_ID), PackedCollator(),
     lambda samples: trained_logits_only(PaddingCollator(PAD_ID)(samples)),
     lambda samples: trained_logits_only(PackedCollator(bounded_rows=True)(samples))],
    ids=["padded", "packed", "padded-trained-logits-only", "bounded-rows-trained-logits-only"],
)
def test_accumulating_eight_micro_batches_equals_one_batch(model, collator):
    samples = make_samples([9, 4, 14, 6, 11, 5, 16, 8], seed=4)
    assert trainer_passes_loss_kwargs(model)
    model.train()
    try:
        padded = PaddingCollator(PAD_ID)
        reference = accumulated_gradients(model, padded, samples, micro_batch_size=8)
        accumulated = accumulated_gradients(model, collator, samples, micro_batch_size=1)
        whole = accumulated_gradients(model, collator, samples, micro_batch_size=8)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()

    assert any(gradient.abs().sum() > 0 for gradient in reference.values())
    for name, gradient in reference.items():
        assert torch.allclose(accumulated[name], gradient, rtol=1e-4, atol=1e-7), name
        assert torch.allclose(whole[name], gradient, rtol=1e-4, atol=1e-7), name


def test_trained_logits_only_projects_trained_positions_and_keeps_the_loss(model):
    samples = make_samples([7, 4, 12, 9], seed=5)
    expected = separate_mean_loss(model, samples)
    batch = trained_logits_only(PaddingCollator(PAD_ID)(samples))
    trained = sum(sum(label != -100 for label in sample["labels"][1:]) for sample in samples)

    with torch.no_grad():
        out = model(**batch)

    assert masks_logits(model)
    assert out.logits.shape == (trained, TINY["vocab_size"])  # one row of logits per trained token
    assert torch.allclose(out.loss, expected, rtol=1e-6, atol=1e-6)


def test_trained_logits_only_is_not_used_with_virtual_tokens():
    from peft import PromptTuningConfig

    prompt_tuned = get_peft_model(build_model("qwen2", "sdpa"), PromptTuningConfig(task_type="CAUSAL_LM",
                                                                                   num_virtual_tokens=4))
    lora = get_peft_model(build_model("qwen2", "sdpa"), LoraConfig(r=2, target_modules=["q_proj"]))
    assert not masks_logits(prompt_tuned) and masks_logits(lora)


def test_supports_packing_for_native_attention(model):
    assert supports_packing(model)


def test_supports_packing_sees_through_peft():
    model = build_model("qwen2", "sdpa")
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))

    assert supports_packing(wrapped)


@pytest.mark.parametrize(
    ("attention", "expected"),
    [("flash_attention_2", True), ("flex_attention", True), ("kernels-community/any", False)],
)
def test_supports_packing_by_attention_implementation(attention, expected):
    model = build_model("llama", "eager")
    model.config._attn_implementation = attention

    assert supports_packing(model) is expected


class RemoteCodeStyleModel(transformers.Qwen2ForCausalLM):
    """Stands for a trust_remote_code model: defined outside transformers.models."""


def test_supports_packing_refuses_models_outside_transformers():
    torch.manual_seed(0)
    model = RemoteCodeStyleModel(transformers.Qwen2Config(**TINY))

    assert not supports_packing(model) and not masks_logits(model)
