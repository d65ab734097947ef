"""What the user points the engine at, resolved into what to load.

    target = resolve_target("runs/ner-lora")       # a run directory (LoRA or full)
    target = resolve_target("merged/ner")          # a merged / plain model directory
    target = resolve_target("Qwen/Qwen2.5-0.5B-Instruct")   # a hub id

A LoRA run directory names its base model in tunekit.json; the adapter is the run
directory itself. The chat template is the one the run was trained with
(chat_template.jinja), else the tokenizer's own. Stop tokens are decided in one place,
`stop_token_ids`: the end-of-turn tokens the run recorded (the ones it trained as labels),
or for a plain model the template's end-of-turn token; plus the model's own eos from its
generation config, since a model that emits it has ended its answer in any case.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from tunekit.data.templates import ChatTemplate, load_run_template
from tunekit.errors import TunekitError
from tunekit.rundir import ADAPTER_FILE, RunInfo, is_run_dir, read_run

log = logging.getLogger(__name__)


@dataclass
class Target:
    name: str  # shown to users and served as the model id
    model_path: str  # full weights: a run directory (full / freeze), a model directory or a hub id
    tokenizer_path: str
    adapter_path: Path | None  # the run's own adapter (LoRA-style run directory)
    run: RunInfo | None
    trust_remote_code: bool


def resolve_target(target: str, trust_remote_code: bool | None = None) -> Target:
    path = Path(target)
    if is_run_dir(path):
        run = read_run(path)
        trust = run.trust_remote_code if trust_remote_code is None else trust_remote_code
        model_path = run.base_model if run.is_adapter else str(path)
        return Target(path.resolve().name, model_path, str(path), path if run.is_adapter else None, run, trust)
    if (path / ADAPTER_FILE).is_file():
        raise TunekitError(f"{target} is a bare adapter without tunekit.json, so its base model is unknown: "
                           "give the base model as TARGET and this folder with --adapter")
    if path.exists() and not (path / "config.json").is_file():
        hint = " (training did not finish: resume it with train.resume=true)" if (path / "checkpoints").is_dir() else ""
        raise TunekitError(f"{target} is neither a run directory (no tunekit.json) nor a model directory "
                           f"(no config.json){hint}")
    name = path.resolve().name if path.exists() else target
    return Target(name, target, target, None, None, bool(trust_remote_code))


def chat_template(folder: str, tokenizer, run: RunInfo | None) -> ChatTemplate:
    """The run's template (with the end-of-turn text it trained), or the model's own."""
    return load_run_template(folder, tokenizer, run.eot_text if run else None)


def stop_token_ids(template: ChatTemplate, run: RunInfo | None, generation_config=None) -> list[int]:
    """The tokens that end an answer: the run's recorded end-of-turn, else the template's; plus eos."""
    ids = list(run.stop_token_ids) if run is not None and run.stop_token_ids else list(template.stop_token_ids)
    eos = getattr(generation_config, "eos_token_id", None)
    for token in eos if isinstance(eos, list) else [eos]:
        if token is not None and token not in ids:
            ids.append(int(token))
    return ids


def adapter_name(path: Path, taken: set[str]) -> str:
    """A unique name for an adapter run: its folder name, made safe (-2, -3 ... when taken)."""
    base = re.sub(r"[^A-Za-z0-9_-]", "_", path.resolve().name) or "adapter"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def read_adapter_run(path: Path, model_path: str) -> RunInfo:
    """An extra adapter: a LoRA-style run directory; warn when it was trained on another model."""
    run = read_run(path)
    if not run.is_adapter:
        raise TunekitError(f"--adapter {path} is a '{run.method}' run, a complete model: give it as TARGET instead")
    if Path(run.base_model).resolve() != Path(model_path).resolve() and run.base_model != model_path:
        log.warning("adapter %s was trained on %s and is now applied to %s: answers may differ from training",
                    path, run.base_model, model_path)
    return run
