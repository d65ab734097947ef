"""train_aligned(cfg, run_dir): the rm / dpo / kto / orpo / simpo / grpo path of `tunekit train`.

Reads top to bottom, like train.run.train: starting point (a model, or an sft run
directory) -> tokenizer and template -> our token ids (data.align_data) -> policy and
reference (train.stages) -> TRL trainer -> run directory, written by train.run.save_run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tunekit.config import Config
from tunekit.data.align_data import prepare_align_data
from tunekit.data.templates import load_template
from tunekit.infer.target import chat_template
from tunekit.model.load import load_model, load_tokenizer
from tunekit.rundir import Run, is_run_dir, read_run
from tunekit.train.callbacks import MetricsLog, NanGuard, plot_metrics
from tunekit.train.distributed import is_main_process, save_model
from tunekit.train.stages import Stage, classifier_model, policy_and_reference, stage_arguments, stage_of

log = logging.getLogger(__name__)
REWARDS_PLOT = "rewards.png"
# label -> metrics.jsonl key (TRL's names); each stage logs some of them
REWARD_SERIES = {"chosen": "rewards/chosen", "rejected": "rewards/rejected", "margin": "rewards/margins",
                 "accuracy": "rewards/accuracies", "KL": "kl", "mean reward (grpo)": "reward",
                 "pair accuracy (rm)": "accuracy", "margin (rm)": "margin"}


def train_aligned(cfg: Config) -> Path:
    from tunekit.train.run import disk_full_message, prepare_run_dir, report_data, resume_checkpoint, save_run

    stage = stage_of(cfg)
    start = starting_run(cfg)
    tokenizer, template = tokenizer_and_template(cfg, start)
    data = prepare_align_data(cfg, template, stage.records, stage.layout)
    report_data(cfg, data)  # bad rows refuse the run (data.skip_bad_rows), before anything is written
    run_dir = prepare_run_dir(cfg)
    model, peft, reference = build_models(cfg, stage, tokenizer, template, start)
    trainer, guard = build_stage_trainer(cfg, stage, model, peft, reference, tokenizer, data, run_dir)
    with disk_full_message(run_dir):
        trainer.train(resume_from_checkpoint=resume_checkpoint(cfg, run_dir))
        if guard.error is not None:
            raise guard.error
        save_stage_model(trainer, stage, run_dir)
        if is_main_process():
            base = start.base_model if start is not None and start.is_adapter else None
            save_run(cfg, trainer, tokenizer, template, data, run_dir, base_model=base)
            plot_metrics(run_dir, REWARD_SERIES, REWARDS_PLOT, "reward")
    return run_dir


def starting_run(cfg: Config) -> Run | None:
    """The sft (or earlier) run directory named by model.name_or_path, if it is one."""
    return read_run(cfg.model.name_or_path) if is_run_dir(cfg.model.name_or_path) else None


def tokenizer_and_template(cfg: Config, start: Run | None):
    """A run's own tokenizer and the exact template it was trained with; else the model's."""
    if start is None:
        tokenizer = load_tokenizer(cfg.model)
        return tokenizer, load_template(tokenizer, cfg.model.template)
    tokenizer = load_tokenizer(cfg.model, path=str(start.path))
    return tokenizer, chat_template(tokenizer, start)


def build_models(cfg: Config, stage: Stage, tokenizer, template, start: Run | None):
    from transformers import set_seed

    set_seed(cfg.train.seed)
    from_adapter = start is not None and start.is_adapter
    if stage.classifier:
        if from_adapter:
            from tunekit.errors import ConfigError

            raise ConfigError("a reward model starts from a complete model: merge the LoRA run first "
                              f"(tunekit merge {start.path} OUT) and set model.name_or_path to OUT")
        model = classifier_model(cfg.model.name_or_path, cfg, tokenizer)
    elif from_adapter:
        model = adapter_model(start, cfg)
    else:
        from tunekit.model.quantize import quantization_config

        model = load_model(cfg.model, tokenizer, quantization=quantization_config(cfg.method, cfg.model))
    if not stage.classifier:  # generation (grpo) stops where training ended a turn
        stops = template.stop_token_ids
        model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return policy_and_reference(cfg, stage, model, from_adapter)


def adapter_model(start: Run, cfg: Config):
    """The run's base with its adapter loaded trainable: training continues that adapter."""
    from peft import PeftModel

    from tunekit.model.multi import load_base

    base, _ = load_base(start, cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    return PeftModel.from_pretrained(base, str(start.path), is_trainable=True)


def build_stage_trainer(cfg: Config, stage: Stage, model, peft, reference, tokenizer, data, run_dir: Path):
    from tunekit.train.run import training_kwargs

    trainer_class, _ = stage.classes()
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "logs")
    args = stage_arguments(cfg, stage, training_kwargs(cfg, run_dir, data.eval is not None))
    guard = NanGuard(cfg.train.precision)
    kwargs = dict(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                  processing_class=tokenizer, callbacks=[MetricsLog(run_dir), guard], peft_config=peft)
    if stage.reference:
        kwargs["ref_model"] = reference
    if cfg.train.stage == "grpo":
        from tunekit.train.rewards import reward_functions

        kwargs["reward_funcs"] = reward_functions(cfg.align.rewards)
    trainer = trainer_class(**kwargs)
    if cfg.train.stage == "grpo":
        trainer.prompt_ids = dict(zip(data.train["prompt"], data.train["prompt_ids"]))
    return trainer, guard


def save_stage_model(trainer, stage: Stage, run_dir: Path) -> None:
    """Weights into the run directory; a LoRA reward model is merged, so that the run directory
    loads with AutoModelForSequenceClassification.from_pretrained as it is."""
    from peft import PeftModel

    if stage.classifier and isinstance(trainer.model, PeftModel):
        if is_main_process():
            trainer.model.merge_and_unload().save_pretrained(str(run_dir))
        return
    save_model(trainer, run_dir)
