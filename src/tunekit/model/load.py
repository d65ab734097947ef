"""Tokenizer and base model: dtype, quantization, remote code (opt-in), vocabulary resize.

    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tokenizer, quantization=None)

Models whose repository ships its own modeling code (ChatGLM, Baichuan) need
`trust_remote_code: true`; without it the load stops with a message that says so, before
any code of the model runs. The CLI sets REMOTE_CODE_OPTION so that the message names the
option of the command in use (`--trust-remote-code`, or the config key for `train`).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from pathlib import Path

import torch

from tunekit.config import ModelConfig
from tunekit.dtypes import torch_dtype
from tunekit.errors import ConfigError, TunekitError

log = logging.getLogger(__name__)
ALLOW_REMOTE_CODE = ("pass --trust-remote-code to the command (chat, serve, webui, eval, compare, merge, mix), or "
                     "set model.trust_remote_code: true in a training config")
REMOTE_CODE_OPTION: ContextVar[str] = ContextVar("remote_code_option", default=ALLOW_REMOTE_CODE)


def needs_remote_code(name_or_path: str) -> bool:
    config = Path(name_or_path) / "config.json"
    if not config.is_file():
        return False
    return bool(json.loads(config.read_text(encoding="utf-8")).get("auto_map"))


def _check_remote_code(cfg: ModelConfig) -> None:
    if needs_remote_code(cfg.name_or_path) and not cfg.trust_remote_code:
        raise ConfigError(f"model {cfg.name_or_path} ships its own modeling code (auto_map in config.json), "
                          f"which runs Python from the model's folder; if you trust it, {REMOTE_CODE_OPTION.get()}")


def _from_pretrained(loader, cfg: ModelConfig, what: str, **kwargs):
    _check_remote_code(cfg)
    try:
        return loader.from_pretrained(cfg.name_or_path, trust_remote_code=cfg.trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        text = str(exc)
        if "trust_remote_code" in text:
            raise ConfigError(f"{cfg.name_or_path} needs its own modeling code: if you trust it, "
                              f"{REMOTE_CODE_OPTION.get()}") from None
        if isinstance(exc, OSError):
            raise TunekitError(f"cannot load the {what} of '{cfg.name_or_path}': {text.splitlines()[0]} "
                               "(give a local model directory, or a hub id reachable from here)") from None
        raise


def load_tokenizer(cfg: ModelConfig, path: str | None = None):
    from transformers import AutoTokenizer

    src = ModelConfig(**{**cfg.__dict__, "name_or_path": path or cfg.name_or_path})
    tokenizer = _from_pretrained(AutoTokenizer, src, "tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_model(cfg: ModelConfig, tokenizer=None, quantization=None, dtype: torch.dtype | None = None):
    """The base model in the requested dtype, embeddings grown to the tokenizer's size."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype or torch_dtype(cfg.dtype)}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": _quantized_device()}
    model = _from_pretrained(AutoModelForCausalLM, cfg, "model", **kwargs)
    if tokenizer is not None:
        resize_embeddings(model, tokenizer)
    return model


def _quantized_device():
    if torch.cuda.is_available():
        from accelerate import PartialState

        return PartialState().process_index % torch.cuda.device_count()
    return "cpu"


def resize_embeddings(model, tokenizer) -> bool:
    """Grow the embeddings when the tokenizer has more tokens (extended-vocabulary models)."""
    size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= size:
        return False
    log.warning("tokenizer has %d tokens, model embeddings %d: resizing (new rows must be trained: use "
                "method full, or modules_to_save: [embed_tokens, lm_head] with LoRA)", len(tokenizer), size)
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    return True
