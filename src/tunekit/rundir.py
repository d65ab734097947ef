"""The run directory: what a training run leaves behind, and how later commands read it.

    run_dir/
      adapter_model.safetensors + adapter_config.json   (LoRA-style methods; PeftModel loads it)
      model.safetensors + config.json                   (full / freeze)
      tokenizer files, chat_template.jinja              (the exact template trained with)
      tunekit.json                                      (base model, method, template, stop tokens,
                                                         data fingerprint, versions, config)
      metrics.jsonl, loss.png, logs/ (tensorboard), checkpoints/checkpoint-N/

tunekit.json is written last: a folder without it is not a finished run.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tunekit.errors import TunekitError

META_FILE = "tunekit.json"
ADAPTER_FILE = "adapter_config.json"
VERSIONED = ("tunekit", "torch", "transformers", "peft", "datasets", "accelerate")


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


@dataclass
class RunInfo:
    path: Path
    meta: dict

    @property
    def base_model(self) -> str:
        return self.meta["base_model"]

    @property
    def method(self) -> str:
        return self.meta["method"]

    @property
    def is_adapter(self) -> bool:
        return (self.path / ADAPTER_FILE).is_file()

    @property
    def stop_token_ids(self) -> list[int]:
        return list(self.meta.get("template", {}).get("stop_token_ids", []))

    @property
    def eot_text(self) -> str | None:
        return self.meta.get("template", {}).get("eot_text")

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.meta.get("config", {}).get("model", {}).get("trust_remote_code", False))


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_run(path: str | Path) -> RunInfo:
    path = Path(path)
    if not path.is_dir():
        raise TunekitError(f"{path} is not a directory: give a run directory written by `tunekit train`")
    if not is_run_dir(path):
        hint = " (training did not finish: resume it with train.resume=true)" if (path / "checkpoints").is_dir() else ""
        raise TunekitError(f"{path} is not a finished tunekit run: it has no {META_FILE}{hint}")
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TunekitError(f"{path / META_FILE} is damaged ({exc}); re-run training or restore the file") from None
    return RunInfo(path, meta)
