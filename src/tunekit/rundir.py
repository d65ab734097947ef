"""The run directory: every file name of a run, and its record (tunekit.json), in one place.

    run_dir/
      adapter_model.safetensors + adapter_config.json   (LoRA-style methods; PeftModel loads it)
      model.safetensors + config.json                   (full / freeze; merged models)
      tokenizer files, chat_template.jinja              (the exact template trained with)
      tunekit.json                                      (the RunRecord below, written last)
      metrics.jsonl, loss.png, logs/ (tensorboard), checkpoints/checkpoint-N/

    write_record(run_dir, RunRecord(base_model=..., template=TemplateRecord(...), ...))
    run = read_run(run_dir)          # Run(path, record); run.template(tokenizer) -> ChatTemplate

train, merge and mix write a run only through `write_record`; the engine, eval, compare and
the multi-adapter code read it only through `read_run`. tunekit.json is written last: a
folder without it is not a finished run. Records written before the schema had a version
(schema 1) still read. The record never decides whether a model's own code runs: that is
the choice of the person running a command, each time (`--trust-remote-code`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import metadata
from pathlib import Path

from tunekit.errors import TunekitError

# -- file names -----------------------------------------------------------------------------
META_FILE = "tunekit.json"
TEMPLATE_FILE = "chat_template.jinja"
ADAPTER_FILE = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "config.json"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
LOGS_DIR = "logs"
CHECKPOINTS = "checkpoints"

SCHEMA_VERSION = 2
VERSIONED = ("tunekit", "torch", "transformers", "peft", "datasets", "accelerate", "trl")


def versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
    os.replace(tmp, path)


# -- the record -----------------------------------------------------------------------------
@dataclass
class TemplateRecord:
    name: str
    eot_text: str  # the text closing every trained answer
    stop_token_ids: list[int]  # generation stops on any of them
    tool_format: str = "hermes"  # how calls are written and parsed back (infer/parsers.py FAMILIES)
    tool_calls: str = "template"  # "template": its own tool branch writes them; "text": the family's text form
    options: dict = field(default_factory=dict)  # template switches trained with, e.g. enable_thinking


@dataclass
class RunRecord:
    """What tunekit.json holds. `system_prompt` is the one the run was trained with (a dataset's
    `system:`), which front ends use when a conversation brings none; `system_prompts` lists
    every dataset-level one."""

    base_model: str
    stage: str = "sft"
    method: str = "lora"
    template: TemplateRecord | None = None
    system_prompt: str | None = None
    system_prompts: list[str] = field(default_factory=list)
    generation: dict = field(default_factory=dict)  # GenerationParams defaults: max_new_tokens, temperature...
    data_fingerprint: str = ""
    data_stats: dict = field(default_factory=dict)
    steps: int | None = None
    final_loss: float | None = None
    versions: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # the training config as run (model.trust_remote_code is not honoured)
    origin: dict = field(default_factory=dict)  # merge / mix: what it was made from
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        data = dict(data)
        if data.get("schema", 1) > SCHEMA_VERSION:
            raise TunekitError(f"{META_FILE} has schema {data['schema']}, newer than this tunekit "
                               f"({SCHEMA_VERSION}): upgrade tunekit")
        if data.get("schema", 1) == 1:
            data = _from_schema_1(data)
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        if isinstance(record.template, dict):
            record.template = TemplateRecord(**record.template)
        return record


def _from_schema_1(data: dict) -> dict:
    """tunekit.json before the schema had a version: the system prompt lived only in the config."""
    systems = [d.get("system") for d in data.get("config", {}).get("data", {}).get("datasets", [])
               if isinstance(d, dict) and d.get("system")]
    origin = {k: data.pop(k) for k in ("merged_from", "merged_dtype", "mixed") if k in data}
    return {**data, "system_prompts": systems, "system_prompt": systems[0] if len(set(systems)) == 1 else None,
            "origin": origin, "schema": SCHEMA_VERSION}


def system_prompts_of(datasets: list) -> list[str]:
    """The dataset-level system prompts of a data config (DatasetSpec or dict), in order, distinct."""
    found = [d.get("system") if isinstance(d, dict) else getattr(d, "system", None) for d in datasets]
    return list(dict.fromkeys(s for s in found if s))


def write_record(folder: Path, record: RunRecord) -> None:
    """tunekit.json, atomically: the last file a run, merge or mix writes."""
    write_json_atomic(Path(folder) / META_FILE, record.to_dict())


def unfinish(folder: Path) -> None:
    """A run being (re)trained is not finished."""
    (Path(folder) / META_FILE).unlink(missing_ok=True)


# -- reading --------------------------------------------------------------------------------
@dataclass
class Run:
    path: Path
    record: RunRecord

    @property
    def base_model(self) -> str:
        return self.record.base_model

    @property
    def method(self) -> str:
        return self.record.method

    @property
    def is_adapter(self) -> bool:
        return (self.path / ADAPTER_FILE).is_file()

    @property
    def stop_token_ids(self) -> list[int]:
        return list(self.record.template.stop_token_ids) if self.record.template else []

    @property
    def eot_text(self) -> str | None:
        return self.record.template.eot_text if self.record.template else None

    @property
    def system_prompt(self) -> str | None:
        return self.record.system_prompt

    def template_source(self, tokenizer) -> str:
        path = self.path / TEMPLATE_FILE
        source = path.read_text(encoding="utf-8") if path.is_file() else tokenizer.chat_template
        if not source:
            raise TunekitError(f"{self.path} has no {TEMPLATE_FILE} and its tokenizer no chat template")
        return source

    def with_origin(self, **origin) -> RunRecord:
        """This run's record for a model made from it (merge, mix): same template, stops and system prompt."""
        return replace(self.record, origin={**self.record.origin, **origin}, versions=versions())


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def unfinished_hint(path: Path) -> str:
    return " (training did not finish: resume it with train.resume=true)" if (path / CHECKPOINTS).is_dir() else ""


def read_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise TunekitError(f"{path} is not a directory: give a run directory written by `tunekit train`")
    if not is_run_dir(path):
        raise TunekitError(f"{path} is not a finished tunekit run: it has no {META_FILE}{unfinished_hint(path)}")
    try:
        data = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        return Run(path, RunRecord.from_dict(data))
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise TunekitError(f"{path / META_FILE} is damaged ({exc}); re-run training or restore the file") from None
