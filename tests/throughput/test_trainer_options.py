"""train.group_by_length and train.liger_kernel as build_trainer / training_arguments wire them."""

import importlib.util

import pytest
import torch
from helpers import SHARED, make_config

from tunekit.data.collate import padding_fraction
from tunekit.data.pipeline import prepare_data
from tunekit.data.templates import load_template
from tunekit.errors import ConfigError
from tunekit.model.load import load_tokenizer
from tunekit.train.run import build_model, build_trainer, training_arguments

FIND = importlib.util.find_spec

ALPACA = [{"path": str(SHARED / "data" / "alpaca_en_demo.json"), "max_samples": 96}]


def train_batches(model_dir, out, cache, group_by_length: bool) -> tuple[list[dict], int]:
    cfg = make_config(model_dir, out, cache, data={"datasets": ALPACA, "packing": False, "cutoff_len": 256, "overlength": "truncate"},
                      train={"group_by_length": group_by_length, "batch_size": 8})
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template))
    trainer, _ = build_trainer(cfg, build_model(cfg, tokenizer), tokenizer, data, out)
    return list(trainer.get_train_dataloader()), len(data.train)


def test_group_by_length_batches_samples_of_similar_length(tiny_model_dir, tmp_path, cache_dir):
    grouped, size = train_batches(tiny_model_dir, tmp_path / "grouped", cache_dir, group_by_length=True)
    shuffled, _ = train_batches(tiny_model_dir, tmp_path / "random", cache_dir, group_by_length=False)

    assert sum(len(batch["input_ids"]) for batch in grouped) == size  # every sample, once
    assert padding_fraction(grouped) < 0.7 * padding_fraction(shuffled)


def test_liger_kernel_on_a_cpu_machine_says_it_needs_a_gpu(tiny_model_dir, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = make_config(tiny_model_dir, tmp_path, cache_dir, train={"liger_kernel": True})

    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        training_arguments(cfg, tmp_path, has_eval=False)


def test_liger_kernel_without_the_package_says_how_to_install(tiny_model_dir, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "liger_kernel"
                        else FIND(name, *rest))
    cfg = make_config(tiny_model_dir, tmp_path, cache_dir, train={"liger_kernel": True, "precision": "fp32"})

    with pytest.raises(ConfigError, match="pip install liger-kernel"):
        training_arguments(cfg, tmp_path, has_eval=False)


def test_liger_kernel_off_by_default(tiny_model_dir, tmp_path, cache_dir):
    cfg = make_config(tiny_model_dir, tmp_path, cache_dir)

    assert training_arguments(cfg, tmp_path, has_eval=False).use_liger_kernel is False
