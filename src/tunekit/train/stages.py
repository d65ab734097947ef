"""Preference and RL stages on TRL's trainers: rm, dpo, kto, orpo, simpo, grpo (train.stage).

    trainer, guard, data, template, start = build_stage(cfg, run_dir)   # called by train.run.train

One table says, per stage, which TRL trainer and config class it uses, which records it
reads (pairs, unpaired rows, prompts), and which options it takes from the `align` section.
No loss is written here: TRL computes every loss. What tunekit adds is the data: TRL gets
token ids rendered by our template (tunekit.data.align_data) and the small subclasses
below make each trainer use them as they are instead of tokenizing text on its own.

Reference model (dpo, kto; grpo when align.beta > 0):
  * LoRA / QLoRA: TRL wraps the base with our LoRA config and computes the reference with
    the adapter disabled: no second copy of the model.
  * full / freeze: a frozen copy of the starting model (one more model in memory: its
    parameter bytes, without gradients or optimizer state); the size is logged.
  * Starting from an sft run directory (model.name_or_path: runs/sft): a full run is a
    complete model and is loaded as one. A LoRA run keeps its adapter, which goes on
    training (so the run stays one adapter on the original base, and merge / chat / serve
    read it as usual); the reference is TRL's frozen copy of that adapter ("ref", the size
    of the adapter only), i.e. the sft policy itself.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, KTOConfig, KTOTrainer, RewardConfig, RewardTrainer

from tunekit.config import LORA_METHODS, AlignConfig, Config
from tunekit.errors import ConfigError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- trainers that take our ids as they are


class OurIdsDPOTrainer(DPOTrainer):
    """prompt_ids / chosen_ids / rejected_ids are TRL's own tokenized columns: nothing to redo."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


class OurIdsKTOTrainer(KTOTrainer):
    """prompt_ids / completion_ids / label as given; the KL completions built as TRL builds them."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not self.calculate_KL:
            return dataset

        def rotate(batch):
            batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
            return batch

        return dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)


class OurIdsGRPOTrainer(GRPOTrainer):
    """Prompts are our rendered text; their ids are the template's, looked up, never re-tokenized."""

    prompt_ids: dict[str, list[int]] = {}

    def _tokenize_prompts(self, prompts: list):
        missing = [p for p in prompts if p not in self.prompt_ids]
        if missing:
            raise KeyError(f"prompt not rendered by tunekit's template: {missing[0][:80]!r}")
        return [list(self.prompt_ids[p]) for p in prompts], None, {}


# ---------------------------------------------------------------- the stage table


@dataclass(frozen=True)
class Stage:
    classes: Callable[[], tuple[type, type]]  # () -> (trainer class, config class); experimental ones lazily
    records: str  # pairs | unpaired | prompts (tunekit.data.preferences)
    options: Callable[[AlignConfig], dict]  # the stage's keys of its TRL config
    layout: str = "prompt"  # pairs: prompt + completions apart, or "joined" (reward model)
    reference: bool = False  # needs a reference model (for full / freeze: a frozen copy)
    classifier: bool = False  # a sequence-classification head (reward model)


def _experimental(name: str):
    def classes():
        from tunekit.train import trl_experimental

        return getattr(trl_experimental, name)()
    return classes


def _loss(a: AlignConfig, default: str) -> str:
    return a.loss_type or default


STAGES: dict[str, Stage] = {
    "rm": Stage(lambda: (RewardTrainer, RewardConfig), "pairs", lambda a: {}, layout="joined", classifier=True),
    "dpo": Stage(lambda: (OurIdsDPOTrainer, DPOConfig), "pairs", reference=True,
                 options=lambda a: {"beta": a.beta, "loss_type": _loss(a, "sigmoid").replace(" ", "").split(","),
                                    "label_smoothing": a.label_smoothing}),
    "kto": Stage(lambda: (OurIdsKTOTrainer, KTOConfig), "unpaired", reference=True,
                 options=lambda a: {"beta": a.beta, "loss_type": _loss(a, "kto"),
                                    "train_sampling_strategy": "sequential"}),  # TRL: KL pairs are batch neighbours
    "orpo": Stage(_experimental("orpo"), "pairs", lambda a: {"beta": a.beta}),
    "simpo": Stage(_experimental("cpo"), "pairs",
                   lambda a: {"loss_type": "simpo", "cpo_alpha": 0.0, "beta": a.beta, "simpo_gamma": a.simpo_gamma,
                              "label_smoothing": a.label_smoothing}),
    "grpo": Stage(lambda: (OurIdsGRPOTrainer, GRPOConfig), "prompts",
                  lambda a: {"beta": a.beta, "num_generations": a.num_generations,
                             "max_completion_length": a.max_new_tokens, "temperature": a.temperature}),
}


def stage_of(cfg: Config) -> Stage:
    return STAGES[cfg.train.stage]


def stage_arguments(cfg: Config, stage: Stage, base: dict):
    """The stage's TRL config: our TrainingArguments keys, its length limits, its align options."""
    _, config_class = stage.classes()
    extra = stage.options(cfg.align)
    if stage.records != "prompts":
        extra["max_length"] = cfg.data.cutoff_len
    try:
        return config_class(**{**base, **extra})
    except ValueError as exc:
        raise ConfigError(f"stage {cfg.train.stage}: {exc} (check the align section)") from None


# ---------------------------------------------------------------- models


def policy_and_reference(cfg: Config, stage: Stage, model, from_adapter: bool):
    """(model for the trainer, peft_config or None, reference model or None); see the module docstring."""
    from tunekit.model.adapters import apply_method, lora_config

    if from_adapter:
        if cfg.method.name not in LORA_METHODS:
            raise ConfigError(f"model.name_or_path is a LoRA run but method.name is '{cfg.method.name}': continue "
                              "its adapter with method.name: lora, or merge it first (tunekit merge) and train "
                              "the merged model")
        return model, None, None
    if cfg.method.name in LORA_METHODS:
        from tunekit.model.adapters import prepare_kbit
        from tunekit.model.quantize import is_quantized

        if is_quantized(model):
            prepare_kbit(model)
        peft = lora_config(model, cfg.method)
        if stage.classifier:
            peft.task_type, peft.modules_to_save = "SEQ_CLS", ["score"]
        return model, peft, None
    needs_reference = stage.reference or (cfg.train.stage == "grpo" and cfg.align.beta > 0)
    reference = frozen_copy(model) if needs_reference and cfg.train.stage != "grpo" else None
    return apply_method(model, cfg.method, cfg.train.gradient_checkpointing), None, reference


def frozen_copy(model):
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    size = sum(p.numel() * p.element_size() for p in reference.parameters())
    log.info("reference model: a frozen copy of the starting model, %.1f MB more memory (no gradients or "
             "optimizer state); LoRA avoids it by disabling the adapter", size / 2**20)
    return reference


def classifier_model(path: str, cfg: Config, tokenizer):
    """A one-score sequence-classification model on the base (the reward model)."""
    from transformers import AutoModelForSequenceClassification

    from tunekit.dtypes import torch_dtype

    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch_dtype(cfg.model.dtype), trust_remote_code=cfg.model.trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model

