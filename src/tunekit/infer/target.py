"""What the user points the engine at, resolved into what to load.

    target = resolve_target("runs/ner-lora")       # a run directory (LoRA or full)
    target = resolve_target("merged/ner")          # a merged / plain model directory
    target = resolve_target("Qwen/Qwen2.5-0.5B-Instruct")   # a hub id
    target = resolve_target("runs/ner-lora", base=True)   # its base model, asked as the run is

A LoRA run directory names its base model in tunekit.json; the adapter is the run
directory itself. `base=True` loads the run's base model without the adapter (or the full
run's starting weights) but keeps the run's template, stop tokens and system prompt: the
same prompts, adapter off. The chat template is the one the run was trained with
(chat_template.jinja), else the tokenizer's own. Stop tokens are decided in one place,
`stop_token_ids`: the end-of-turn tokens the run recorded (the ones it trained as labels),
or for a plain model the template's end-of-turn token; plus the model's own eos from its
generation config, since a model that emits it has ended its answer in any case.
Remote code runs only when the caller passes trust_remote_code=True (the command's
`--trust-remote-code`); a run directory never switches it on.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from tunekit.data.templates import ChatTemplate, resolve_template_source
from tunekit.errors import TunekitError
from tunekit.infer.parsers import family_named
from tunekit.rundir import ADAPTER_FILE, MODEL_CONFIG, Run, is_run_dir, read_run, unfinished_hint

log = logging.getLogger(__name__)


@dataclass
class Target:
    name: str  # shown to users and served as the model id
    model_path: str  # full weights: a run directory (full / freeze), a model directory or a hub id
    tokenizer_path: str
    adapter_path: Path | None  # the run's own adapter (LoRA-style run directory)
    run: Run | None
    trust_remote_code: bool


def resolve_target(target: str, trust_remote_code: bool = False, base: bool = False) -> Target:
    path = Path(target)
    trust = bool(trust_remote_code)
    if is_run_dir(path):
        run = read_run(path)
        name = path.resolve().name
        if base:
            return Target(f"{name} (base)", run.base_model, str(path), None, run, trust)
        model_path = run.base_model if run.is_adapter else str(path)
        return Target(name, model_path, str(path), path if run.is_adapter else None, run, trust)
    if base:
        raise TunekitError(f"{target} is not a run directory, so it has no base model to compare with")
    if (path / ADAPTER_FILE).is_file():
        raise TunekitError(f"{target} is a bare adapter without tunekit.json, so its base model is unknown: "
                           "give the base model as TARGET and this folder with --adapter")
    if path.exists() and not (path / MODEL_CONFIG).is_file():
        raise TunekitError(f"{target} is neither a run directory (no tunekit.json) nor a model directory "
                           f"(no {MODEL_CONFIG}){unfinished_hint(path)}")
    name = path.resolve().name if path.exists() else target
    return Target(name, target, target, None, None, trust)


def chat_template(tokenizer, run: Run | None) -> ChatTemplate:
    """The run's template with the end-of-turn text, template switches and tool-call format it
    trained with, or the model's own template; probed once at load for linear prompt building
    (ChatTemplate.closes_history), so that the first request does not pay for it."""
    if run is None:
        name, source = resolve_template_source(None, tokenizer)
        template = ChatTemplate(tokenizer, source, name)
    else:
        recorded = run.record.template
        options = recorded.options if recorded else None
        template = ChatTemplate(tokenizer, run.template_source(tokenizer), run.path.name, run.eot_text, options)
        if recorded:
            template.family = family_named(recorded.tool_format)
    template.closes_history()
    return template


def stop_token_ids(template: ChatTemplate, run: Run | None, generation_config=None) -> list[int]:
    """The tokens that end an answer: the run's recorded end-of-turn, else the template's; plus eos."""
    ids = list(run.stop_token_ids) if run is not None and run.stop_token_ids else list(template.stop_token_ids)
    eos = getattr(generation_config, "eos_token_id", None)
    for token in eos if isinstance(eos, list) else [eos]:
        if token is not None and token not in ids:
            ids.append(int(token))
    return ids


def unique_name(label: str, taken: set[str]) -> str:
    """`label`, or label-2, label-3 ... when taken; the rule for every name a user sees in a list."""
    name, n = label, 1
    while name in taken:
        n += 1
        name = f"{label}-{n}"
    return name


def adapter_name(path: Path, taken: set[str]) -> str:
    """A unique, loadable name for an adapter run: its folder name with only [A-Za-z0-9_-], suffixed
    with -run when torch modules already use the word (a run in `train/`, `eval/` or `half/`)."""
    import torch

    base = re.sub(r"[^A-Za-z0-9_-]", "_", path.resolve().name) or "adapter"
    if hasattr(torch.nn.Module, base) or base == "__base__":
        base = f"{base}-run"
    return unique_name(base, taken)


def read_adapter_run(path: Path, model_path: str) -> Run:
    """An extra adapter: a LoRA-style run directory; warn when it was trained on another model."""
    run = read_run(path)
    if not run.is_adapter:
        raise TunekitError(f"--adapter {path} is a '{run.method}' run, a complete model: give it as TARGET instead")
    if Path(run.base_model).resolve() != Path(model_path).resolve() and run.base_model != model_path:
        log.warning("adapter %s was trained on %s and is now applied to %s: answers may differ from training",
                    path, run.base_model, model_path)
    return run
