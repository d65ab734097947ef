"""Merge a LoRA / DoRA run into its base model: a complete model directory for plain transformers.

    result = merge_run("runs/ner", "models/ner-merged", dtype="auto")
    AutoModelForCausalLM.from_pretrained("models/ner-merged")   # nothing else needed

The base model comes from the run's tunekit.json (`base=` when it moved). The output
holds safetensors shards, the run's tokenizer with the chat template it was trained with
(also as chat_template.jinja), a generation_config.json whose eos_token_id is the run's
end-of-turn token(s) and whose pad_token_id is the tokenizer's, and a tunekit.json:
the run's own, plus `merged_from` (the run directory) and `merged_dtype`. Like a full
run's, that tunekit.json keeps `base_model` = the model the adapter was trained on (its
provenance) and `method` = the run's method; what tells readers the folder is a complete
model is that it has no adapter_config.json (`Run.is_adapter` is False).

A QLoRA run is merged into the base loaded in 16/32 bits, never into quantized weights.
full / freeze runs are already complete models; prefix / ptuning runs have nothing that
could become weights: both are refused with a message that says so. Everything is written
to a temporary directory and renamed at the end (`export.atomic`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tunekit.config import PROMPT_METHODS
from tunekit.errors import TunekitError
from tunekit.export.atomic import atomic_directory, check_output_dir
from tunekit.model.multi import load_base
from tunekit.dtypes import name_of
from tunekit.rundir import TEMPLATE_FILE, Run, read_run, write_record

log = logging.getLogger(__name__)
MAX_SHARD_SIZE = "4GB"


@dataclass
class MergeResult:
    output: Path
    dtype: torch.dtype
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. QLoRA merged in 16 bits)


def merge_run(run_dir: str | Path, output: str | Path, dtype: str = "auto", base: str | None = None,
              overwrite: bool = False, max_shard_size: str = MAX_SHARD_SIZE,
              trust_remote_code: bool = False) -> MergeResult:
    """Write base + adapter merged into `output`; dtype auto | bf16 | fp16 | fp32 (auto: the base's own)."""
    run = read_run(run_dir)
    check_mergeable(run)
    check_output_dir(output, overwrite, inputs=[run.path])
    model, tokenizer = merge_in_memory(run, dtype, base, trust_remote_code)
    notes = [f"merged in {name_of(model.dtype)} from {run.path}"]
    if run.method == "qlora":
        notes.append("qlora run: merged into the base loaded in full precision "
                     f"({name_of(model.dtype)}), not into its quantized weights; outputs "
                     "differ slightly from the quantized model you trained with")
    with atomic_directory(output, overwrite, inputs=[run.path]) as tmp:
        write_model_dir(tmp, run, model, tokenizer, max_shard_size)
    return MergeResult(Path(output), model.dtype, notes)


def check_mergeable(run: Run) -> None:
    if run.method in PROMPT_METHODS:
        raise TunekitError(f"{run.path} is a '{run.method}' run: its virtual tokens are inputs, not weights, so "
                           "it cannot be merged into the model; use it as is (PeftModel.from_pretrained, tunekit "
                           "chat/serve with the run directory)")
    if not run.is_adapter:
        raise TunekitError(f"nothing to merge: {run.path} is a '{run.method}' run, already a complete model "
                           "directory; load it with AutoModelForCausalLM.from_pretrained")


def merge_in_memory(run: Run, dtype: str = "auto", base: str | None = None, trust_remote_code: bool = False):
    """(merged transformers model, tokenizer): the adapter folded into an unquantized base."""
    from peft import PeftModel

    model, tokenizer = load_base(run, dtype, base, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(model, str(run.path))
    return model.merge_and_unload(safe_merge=True), tokenizer


def write_model_dir(folder: Path, run: Run, model, tokenizer, max_shard_size: str = MAX_SHARD_SIZE) -> None:
    """Weights, tokenizer, template, generation config and tunekit.json of a merged model."""
    model.generation_config = generation_config(model, run, tokenizer)
    model.save_pretrained(str(folder), max_shard_size=max_shard_size)
    template = run.path / TEMPLATE_FILE
    if template.is_file():
        tokenizer.chat_template = template.read_text(encoding="utf-8")
        tokenizer.save_pretrained(str(folder))
        shutil.copyfile(template, folder / TEMPLATE_FILE)
    else:
        tokenizer.save_pretrained(str(folder))
    write_record(folder, run.with_origin(merged_from=str(run.path.resolve()), merged_dtype=name_of(model.dtype)))


def generation_config(model, run: Run, tokenizer):
    """The base's generation config with the run's stop tokens as eos and the tokenizer's pad token."""
    config = model.generation_config
    if run.stop_token_ids:
        config.eos_token_id = run.stop_token_ids if len(run.stop_token_ids) > 1 else run.stop_token_ids[0]
    if tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    return config
