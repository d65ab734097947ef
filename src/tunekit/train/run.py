"""train(config): tokenizer -> template -> data -> model -> method -> Trainer -> run directory.

Reads top to bottom. Everything the run needs later (template, stop tokens, base model)
is written into the run directory, tunekit.json last, so merge / chat / serve / eval
never ask the user to repeat it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from tunekit.config import ALIGN_STAGES, Config, validate_for_training
from tunekit.data.check import problem_report, problems_file, refuse_bad_rows
from tunekit.data.collate import collator_for, supports_packing
from tunekit.data.pipeline import prepare_data
from tunekit.data.templates import load_template
from tunekit.dtypes import resolve_name
from tunekit.errors import ConfigError, TunekitError, is_disk_full
from tunekit.model.adapters import apply_method, is_prompt_method, loraplus_optimizer, trainable_summary
from tunekit.model.load import load_model, load_tokenizer
from tunekit.model.packed_attention import use_packed_attention
from tunekit.model.quantize import quantization_config
from tunekit.rundir import (
    CHECKPOINTS, LOGS_DIR, TEMPLATE_FILE, RunRecord, TemplateRecord, system_prompts_of, unfinish, versions,
    write_record,
)
from tunekit.train.callbacks import MetricsLog, NanGuard, plot_loss
from tunekit.train.checkpoints import CheckpointMarker, last_complete_checkpoint, remove_incomplete
from tunekit.train.distributed import barrier, check_launch, is_main_process, save_model, use_cpu

log = logging.getLogger(__name__)


def train(cfg: Config) -> Path:
    validate_for_training(cfg)
    check_launch(cfg)
    check_run_dir(cfg)
    if cfg.train.stage in ALIGN_STAGES:  # rm, dpo, kto, orpo, simpo, grpo: on TRL's trainers
        from tunekit.train.align_run import train_aligned

        return train_aligned(cfg)
    tokenizer = load_tokenizer(cfg.model)
    template = (load_template(tokenizer, cfg.model.template, cfg.model.template_options)
                if cfg.train.stage == "sft" else None)
    data = prepare_data(cfg, tokenizer, template, trained_samples=_trained_samples(cfg, Path(cfg.train.output_dir)))
    report_data(cfg, data)  # bad rows refuse the run here, before anything is written under output_dir
    run_dir = prepare_run_dir(cfg)
    model = build_model(cfg, tokenizer)
    if is_main_process():
        log.info(trainable_summary(model))
    trainer, guard = build_trainer(cfg, model, tokenizer, data, run_dir)
    with disk_full_message(run_dir):
        trainer.train(resume_from_checkpoint=resume_checkpoint(cfg, run_dir))
        if guard.error is not None:
            raise guard.error
        save_model(trainer, run_dir)  # every process: ZeRO-3 / FSDP shards are gathered to rank 0
        if is_main_process():
            save_run(cfg, trainer, tokenizer, template, data, run_dir)
    return run_dir


def report_data(cfg: Config, data) -> None:
    """Main process: the sample counts and the bad rows, reported as `data check` does; then refuse bad rows."""
    main = is_main_process()
    listing = problems_file(cfg, data, write=main)
    if main:
        log.info("data: %s training samples%s (%s)", "streamed" if cfg.data.streaming else len(data.train),
                 f", {len(data.eval)} eval"
                 if data.eval is not None else "", "cache hit" if data.cache_hit else "tokenized")
        if data.problems:
            log.warning(problem_report(data.problems, listing))
    refuse_bad_rows(data.problems, listing, cfg.data.skip_bad_rows)
    if main and data.problems:
        log.warning("training without these %d rows (data.skip_bad_rows is true)", len(data.problems))


@contextmanager
def disk_full_message(run_dir: Path):
    """A full disk while training or saving: one message naming the checkpoint a resume would continue from."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        folder = run_dir / CHECKPOINTS
        if is_main_process():
            remove_incomplete(folder)
        last = last_complete_checkpoint(folder)
        kept = f"the last complete checkpoint is {last}" if last else "no complete checkpoint was saved yet"
        raise TunekitError(f"disk full while writing {run_dir} ({exc.filename or 'a checkpoint'}): {kept}; "
                           "free some space and run again with train.resume=true") from None


def check_run_dir(cfg: Config) -> None:
    """Before any slow work: an occupied output_dir needs train.resume or train.overwrite."""
    run_dir = Path(cfg.train.output_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not (cfg.train.overwrite or cfg.train.resume):
        raise ConfigError(f"train.output_dir {run_dir} already exists and is not empty: set train.resume=true "
                          "to continue its last checkpoint, train.overwrite=true to replace it, or choose "
                          "another train.output_dir")


def prepare_run_dir(cfg: Config) -> Path:
    """Every process checks; then only the main one replaces or creates the folder while the others wait."""
    check_run_dir(cfg)
    run_dir = Path(cfg.train.output_dir)
    occupied = run_dir.exists() and any(run_dir.iterdir())
    barrier()  # all have looked before anything changes
    if is_main_process():
        if occupied and cfg.train.overwrite:
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        unfinish(run_dir)
    barrier()  # the others see the finished folder, never a half-deleted one
    return run_dir


def build_model(cfg: Config, tokenizer):
    from transformers import set_seed

    set_seed(cfg.train.seed)  # new weights (LoRA, prefix) start the same in every run and every process
    model = load_model(cfg.model, tokenizer, quantization=quantization_config(cfg.method, cfg.model))
    return apply_method(model, cfg.method, gradient_checkpointing=cfg.train.gradient_checkpointing)


def use_packing(cfg: Config, model) -> bool:
    if cfg.train.stage != "sft" or is_prompt_method(cfg.method.name):  # virtual tokens would join samples
        return False
    if cfg.data.packing is None:
        return supports_packing(model)
    if cfg.data.packing and not supports_packing(model):
        raise ConfigError("data.packing is true but this model's attention implementation cannot keep packed "
                          "samples apart; use model.attn_implementation: sdpa (or flash_attention_2 on GPU), or "
                          "set data.packing: false")
    return cfg.data.packing


def build_trainer(cfg: Config, model, tokenizer, data, run_dir: Path):
    from tunekit.train.trainer import TunekitTrainer

    packing = use_packing(cfg, model)
    if packing:
        use_packed_attention(model)  # sdpa -> sdpa_varlen: one packed row, attention per sample
    collator = collator_for(model, packing, tokenizer.pad_token_id)
    guard = NanGuard(cfg.train.precision)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / LOGS_DIR)
    args = training_arguments(cfg, run_dir, data.eval is not None)
    callbacks = [MetricsLog(run_dir), guard, CheckpointMarker(run_dir / CHECKPOINTS, cfg.train.save_total_limit)]
    trainer = TunekitTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                             data_collator=collator, callbacks=callbacks,
                             optimizer_cls_and_kwargs=loraplus_optimizer(cfg.method, args))
    if cfg.eval.during_training and data.eval is not None:
        from tunekit.train.eval_callback import GenerationMetrics

        trainer.add_callback(GenerationMetrics.for_run(cfg, trainer, tokenizer, data.eval))
    return trainer, guard


def training_arguments(cfg: Config, run_dir: Path, has_eval: bool):
    from transformers import TrainingArguments

    return TrainingArguments(**training_kwargs(cfg, run_dir, has_eval), label_names=["labels"])


def training_kwargs(cfg: Config, run_dir: Path, has_eval: bool) -> dict:
    """The keys of TrainingArguments every stage shares (TRL's configs extend TrainingArguments)."""
    t = cfg.train
    precision = _precision(t.precision, cfg.model.dtype)
    eval_strategy = "no" if not has_eval else ("steps" if t.eval_steps else "epoch")
    return dict(
        output_dir=str(run_dir / CHECKPOINTS), num_train_epochs=t.num_epochs, max_steps=t.max_steps,
        learning_rate=t.learning_rate, per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        warmup_steps=t.warmup_steps, lr_scheduler_type=t.lr_scheduler, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, optim=t.optim, bf16=precision == "bf16", fp16=precision == "fp16",
        logging_steps=t.logging_steps, logging_nan_inf_filter=False, save_steps=t.save_steps,
        save_total_limit=None, eval_strategy=eval_strategy, eval_steps=t.eval_steps,  # CheckpointMarker rotates
        seed=t.seed, data_seed=t.seed, report_to=t.report_to or "none", remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        torch_compile=t.torch_compile, use_liger_kernel=_liger(t.liger_kernel), deepspeed=t.deepspeed,
        dataloader_num_workers=t.dataloader_workers, ignore_data_skip=cfg.data.streaming,  # the stream skips
        ddp_find_unused_parameters=False,  # every method uses all its trainable weights in each forward
        save_strategy="steps", disable_tqdm=False, use_cpu=use_cpu(),
    )


def _liger(enabled: bool) -> bool:
    """train.liger_kernel: Liger's Triton kernels need a CUDA GPU and the liger-kernel package."""
    if not enabled:
        return False
    if not torch.cuda.is_available():
        raise ConfigError("train.liger_kernel needs a CUDA GPU (Liger's kernels are written in Triton); "
                          "set train.liger_kernel: false on this machine")
    if importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError("train.liger_kernel is true but the liger-kernel package is not installed: "
                          "pip install liger-kernel, or set train.liger_kernel: false")
    return True


def _precision(precision: str, model_dtype: str) -> str:
    if precision == "auto":
        return resolve_name(model_dtype)
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        raise ConfigError(f"train.precision {precision} needs a GPU; on the CPU use fp32 (or auto)")
    return precision


def _trained_samples(cfg: Config, run_dir: Path) -> int:
    """Streaming mode: how many samples of its stream each process trained on before the checkpoint resumed."""
    checkpoint = resume_checkpoint(cfg, run_dir) if cfg.data.streaming else None
    if checkpoint is None:
        return 0
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return state["global_step"] * cfg.train.batch_size * cfg.train.grad_accum


def resume_checkpoint(cfg: Config, run_dir: Path) -> str | None:
    if not cfg.train.resume:
        return None
    checkpoint = last_complete_checkpoint(run_dir / CHECKPOINTS)
    if checkpoint is None and is_main_process():
        log.warning("train.resume is set but %s holds no complete checkpoint: starting from step 0",
                    run_dir / CHECKPOINTS)
    return str(checkpoint) if checkpoint else None


def save_run(cfg: Config, trainer, tokenizer, template, data, run_dir: Path, base_model: str | None = None) -> None:
    """Main process, after save_model wrote the weights: tokenizer and template; tunekit.json last.
    base_model: what the weights apply to, when not model.name_or_path (an adapter continued from a run)."""
    if template is not None:
        tokenizer.chat_template = template.source
        (run_dir / TEMPLATE_FILE).write_text(template.source, encoding="utf-8")
    tokenizer.save_pretrained(str(run_dir))
    plot_loss(run_dir)
    systems = system_prompts_of(cfg.data.datasets)
    write_record(run_dir, RunRecord(
        base_model=_absolute_if_local(base_model or cfg.model.name_or_path), stage=cfg.train.stage,
        method=cfg.method.name,
        template=TemplateRecord(**template.describe()) if template else None,
        system_prompt=systems[0] if len(systems) == 1 else None, system_prompts=systems,
        generation=_generation_defaults(trainer.model), data_fingerprint=data.fingerprint,
        data_stats=data.stats, steps=trainer.state.global_step, final_loss=_last_loss(trainer),
        versions=versions(), config=cfg.to_dict()))


def _generation_defaults(model) -> dict:
    """The base model's own sampling defaults, for reference (front ends decode greedily unless asked)."""
    config = getattr(model, "generation_config", None)
    keys = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
    return {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None} if config else {}


def _last_loss(trainer) -> float | None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses[-1] if losses else None


def _absolute_if_local(name: str) -> str:
    return str(Path(name).resolve()) if Path(name).exists() else name

