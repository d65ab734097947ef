"""One optimizer step through tunekit's own Trainer setup: batch 8 x 1 equals batch 1 x 8.

build_trainer wires the collator (padded or packed rows), the sampler and the loss
normalisation: the Trainer hands the model the number of trained tokens of the whole
accumulated batch, so every micro-batch's loss is a share of one token-weighted mean. With
plain SGD, no clipping and a constant rate the parameter change is -lr x gradient, so equal
changes mean equal first-step gradients. Eight samples and eight samples per step: whatever
order the sampler draws, the step holds the same samples.
"""

import pytest
import torch
from helpers import NER_TRAIN, make_config

from tunekit.data.pipeline import prepare_data
from tunekit.data.templates import load_template
from tunekit.model.load import load_tokenizer
from tunekit.train.run import build_model, build_trainer

SGD_ONE_STEP = {"max_steps": 1, "optim": "sgd", "lr_scheduler": "constant", "max_grad_norm": 0.0,
                "learning_rate": 1.0, "weight_decay": 0.0, "logging_steps": 1}


def one_step_change(model_dir, out, cache, batch_size: int, grad_accum: int, packing: bool) -> dict:
    cfg = make_config(model_dir, out / f"{batch_size}x{grad_accum}-{'packed' if packing else 'padded'}", cache,
                      data={"datasets": [{"path": str(NER_TRAIN), "max_samples": 8}], "packing": packing},
                      method={"name": "full"},
                      train=dict(SGD_ONE_STEP, batch_size=batch_size, grad_accum=grad_accum))
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template))
    assert len(data.train) == 8
    model = build_model(cfg, tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer, guard = build_trainer(cfg, model, tokenizer, data, out)
    trainer.train()
    assert guard.error is None and trainer.state.global_step == 1
    return {name: p.detach() - before[name] for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory, cache_dir):
    return one_step_change(tiny_model_dir, tmp_path_factory.mktemp("accum"), cache_dir, 8, 1, packing=False)


def test_reference_step_moves_every_parameter(reference):
    assert all(change.abs().sum() > 0 for change in reference.values())


@pytest.mark.parametrize(("batch_size", "grad_accum", "packing"),
                         [(1, 8, False), (8, 1, True), (1, 8, True), (2, 4, True)],
                         ids=["padded-1x8", "packed-8x1", "packed-1x8", "packed-2x4"])
def test_one_step_is_the_same_however_the_batch_is_split(reference, tiny_model_dir, tmp_path, cache_dir,
                                                         batch_size, grad_accum, packing):
    change = one_step_change(tiny_model_dir, tmp_path, cache_dir, batch_size, grad_accum, packing)

    for name, expected in reference.items():
        assert torch.allclose(change[name], expected, rtol=1e-4, atol=1e-6), name
