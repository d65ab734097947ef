"""Blend LoRA runs of one base model into one adapter, with weights.

    mix_runs([("runs/ner", 0.7), ("runs/chat", 0.3)], "runs/blend", combination="cat")
    PeftModel.from_pretrained(base, "runs/blend")   # or: tunekit merge runs/blend --output ...

The combination is peft's `add_weighted_adapter` (see `model.multi.combine`): cat (the
default) is exact, delta = sum of weight x delta, so weights 1, 0 reproduce the first
run; linear, ties, dare_linear, ... as peft defines them. Runs of different base models,
tokenizers or templates, non-LoRA runs (prefix, ptuning, full), DoRA, PiSSA and
modules_to_save runs are refused with a message that names the run.

The output is a run directory like the ones `tunekit train` writes: adapter files,
tokenizer, chat_template.jinja and a tunekit.json (base_model, method lora, template and
config of the first run, plus `mixed_from` [{run, weight}] and `combination`), so merge,
chat and serve read it like any run. It is written to a temporary directory and renamed.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from tunekit.errors import TunekitError
from tunekit.export.atomic import atomic_directory, check_output_dir
from tunekit.model.multi import combine, load_adapters, read_adapter_runs
from tunekit.rundir import TEMPLATE_FILE, Run, RunRecord, write_record

MIXED = "mixed"


def parse_weighted(items: Sequence[str]) -> list[tuple[str, float]]:
    """["runs/a:0.7", "runs/b:0.3"] -> [("runs/a", 0.7), ("runs/b", 0.3)]."""
    pairs = []
    for item in items:
        path, _, text = item.rpartition(":")
        try:
            weight = float(text)
        except ValueError:
            path = ""
        if not path:
            raise TunekitError(f"'{item}' is not RUN_DIR:WEIGHT (e.g. runs/ner:0.7)")
        pairs.append((path, weight))
    return pairs


def mix_runs(weighted: Sequence[tuple[str | Path, float]], output: str | Path, combination: str = "cat",
             density: float | None = None, svd_rank: int | None = None, base: str | None = None,
             overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """Write the weighted combination of the runs' LoRA adapters to `output` (a run directory)."""
    if not weighted:
        raise TunekitError("give at least one RUN_DIR:WEIGHT to mix")
    named = {f"run{i}": path for i, (path, _) in enumerate(weighted)}
    weights = {f"run{i}": weight for i, (_, weight) in enumerate(weighted)}
    infos = read_adapter_runs(named)
    check_output_dir(output, overwrite, inputs=[info.path for info in infos.values()])
    model, tokenizer = load_adapters(named, dtype="auto", base=base, trust_remote_code=trust_remote_code)  # adapters themselves load in fp32
    combine(model, weights, MIXED, combination=combination, density=density, svd_rank=svd_rank)
    with atomic_directory(output, overwrite, inputs=[info.path for info in infos.values()]) as tmp:
        save_adapter(model, MIXED, tmp)
        tokenizer.save_pretrained(str(tmp))
        first = next(iter(infos.values()))
        if (first.path / TEMPLATE_FILE).is_file():
            shutil.copyfile(first.path / TEMPLATE_FILE, tmp / TEMPLATE_FILE)
        write_record(tmp, mixed_record(infos, weights, combination, density, svd_rank, base))
    return Path(output)


def save_adapter(model, name: str, folder: Path) -> None:
    """Adapter `name` as adapter_config.json + adapter_model.safetensors directly in `folder`."""
    scratch = folder / ".adapter"
    model.save_pretrained(str(scratch), selected_adapters=[name])
    for file in (scratch / name).iterdir():
        file.rename(folder / file.name)
    shutil.rmtree(scratch)


def mixed_record(infos: dict[str, Run], weights: dict[str, float], combination: str, density, svd_rank,
                 base: str | None) -> RunRecord:
    """The first run's record (the runs share base and template): template, stops and the system prompt
    they agree on; `origin` says what was mixed and how."""
    first = next(iter(infos.values()))
    systems = {info.system_prompt for info in infos.values()}
    record = first.with_origin(
        mixed_from=[{"run": str(info.path.resolve()), "weight": weights[name], "method": info.method}
                    for name, info in infos.items()],
        combination=combination, density=density, svd_rank=svd_rank)
    record.base_model = str(Path(base).resolve()) if base and Path(base).exists() else base or first.base_model
    record.method = "lora"
    record.system_prompt = systems.pop() if len(systems) == 1 else None
    record.system_prompts = list(dict.fromkeys(s for info in infos.values() for s in info.record.system_prompts))
    return record
