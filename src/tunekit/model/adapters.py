"""Attach a training method to a loaded model, and find the modules LoRA can target.

    model = apply_method(model, cfg.method, gradient_checkpointing=True)

Methods: full (every weight), freeze (only the last N decoder layers), lora (peft; also
the adapter methods the adapters module adds). Gradient checkpointing is switched on
here, with inputs that require grad, so frozen embeddings never cause "element 0 of
tensors does not require grad".
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import nn

from tunekit.config import MethodConfig
from tunekit.errors import ConfigError

OUTPUT_LAYERS = ("lm_head", "output_layer", "embed_out", "output")
_REGEX_CHARS = set("*^$|\\[(+?")


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    name = type(module).__name__
    return name in ("Linear4bit", "Linear8bitLt", "Conv1D")  # bitsandbytes and GPT-2 style


def linear_modules(model: nn.Module) -> dict[str, list[str]]:
    """Leaf names of linear modules grouped by kind: attention, mlp, output, other."""
    groups: dict[str, set[str]] = defaultdict(set)
    for path, module in model.named_modules():
        if not _is_linear(module) or ".lora_" in path or "modules_to_save" in path:
            continue
        leaf = path.rsplit(".", 1)[-1]
        lowered = path.lower()
        if leaf in OUTPUT_LAYERS:
            kind = "output"
        elif any(k in lowered for k in ("attn", "attention")):
            kind = "attention"
        elif any(k in lowered for k in ("mlp", "feed_forward", "ffn")):
            kind = "mlp"
        else:
            kind = "other"
        groups[kind].add(leaf)
    return {k: sorted(v) for k, v in sorted(groups.items())}


def default_lora_targets(model: nn.Module) -> list[str]:
    """Every linear layer except the output head."""
    groups = linear_modules(model)
    return sorted({name for kind, names in groups.items() if kind != "output" for name in names})


def resolve_lora_targets(model: nn.Module, target) -> list[str] | str:
    """'all' -> every linear layer; a list or comma list of names; a regex over module paths."""
    if target in (None, "all", ["all"]):
        return default_lora_targets(model)
    if isinstance(target, str) and _REGEX_CHARS & set(target):
        pattern = re.compile(target)
        if not any(pattern.fullmatch(p) for p, m in model.named_modules() if _is_linear(m)):
            raise ConfigError(f"method.lora_target regex '{target}' matches no linear module path; "
                              "run `tunekit modules MODEL` to see them")
        return target
    names = [n.strip() for n in target.split(",")] if isinstance(target, str) else list(target)
    known = {n for group in linear_modules(model).values() for n in group}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"method.lora_target names {unknown} that this model does not have; its linear "
                          f"modules are {sorted(known)} (see `tunekit modules MODEL`)")
    return names


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The largest ModuleList of the model: its stack of decoder layers."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError("method freeze needs a model with a list of decoder layers; use lora or full")
    return max(lists, key=len)


def apply_full(model: nn.Module, method: MethodConfig) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def apply_freeze(model: nn.Module, method: MethodConfig) -> nn.Module:
    layers = decoder_layers(model)
    n = method.freeze_trainable_layers
    if not 0 < n <= len(layers):
        raise ConfigError(f"method.freeze_trainable_layers is {n}; this model has {len(layers)} layers: "
                          f"give 1..{len(layers)}")
    model.requires_grad_(False)
    for layer in layers[-n:]:
        layer.requires_grad_(True)
    return model


def lora_config(model: nn.Module, method: MethodConfig):
    from peft import LoraConfig, TaskType

    init = "pissa" if method.pissa else True
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=method.lora_r, lora_alpha=method.lora_alpha,
                      lora_dropout=method.lora_dropout, target_modules=resolve_lora_targets(model, method.lora_target),
                      use_rslora=method.rslora, use_dora=method.dora, init_lora_weights=init,
                      modules_to_save=list(method.modules_to_save) or None)


def apply_lora(model: nn.Module, method: MethodConfig) -> nn.Module:
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, method))


METHODS = {"full": apply_full, "freeze": apply_freeze, "lora": apply_lora}


def apply_method(model: nn.Module, method: MethodConfig, gradient_checkpointing: bool = False) -> nn.Module:
    if method.name not in METHODS:
        raise ConfigError(f"method.name '{method.name}' is not available in this build; "
                          f"choose one of {', '.join(METHODS)}")
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
    return METHODS[method.name](model, method)


def trainable_summary(model: nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"trainable params: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)"


def upcast_trainable(model: nn.Module) -> None:
    """Half-precision trainable weights train badly with fp16 autocast: keep them in fp32."""
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()
