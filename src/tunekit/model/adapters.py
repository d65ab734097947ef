"""Attach a training method to a loaded model, and find the modules LoRA can target.

    model = apply_method(model, cfg.method, gradient_checkpointing=True)

Methods (the METHODS table):
- full: every weight; freeze: only the last N decoder layers.
- lora: peft LoRA, with the variants as keys: dora (weight-decomposed), rslora (scaling
  alpha/sqrt(r)), pissa (initialised from the principal singular vectors; exact SVD, so
  `PeftModel.from_pretrained` rebuilds the same residual base when it loads the run),
  modules_to_save (fully trained copies, e.g. embed_tokens and lm_head after a vocabulary
  extension; tied embeddings stay tied) and loraplus_lr_ratio (see `loraplus_optimizer`).
- qlora: the same LoRA on a base loaded in 4 or 8 bits (`model.quantize`).
- prefix: prefix tuning, P-Tuning v2 style: trained key/value prefixes in every layer,
  optionally reparameterised through an MLP (prefix_projection).
- ptuning: P-Tuning, virtual token embeddings produced by a prompt encoder.

Every quantized model goes through peft's `prepare_model_for_kbit_training` here, once:
base frozen, non-quantized weights in fp32. Gradient checkpointing is switched on here
too, with inputs that require grad, so frozen embeddings never cause "element 0 of
tensors does not require grad".
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import nn

from tunekit.config import PROMPT_METHODS, MethodConfig
from tunekit.errors import ConfigError
from tunekit.model.quantize import is_quantized

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


def _has_tied_embeddings(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(getattr(text_config, "tie_word_embeddings", False))


def lora_config(model: nn.Module, method: MethodConfig):
    from peft import LoraConfig, TaskType

    modules_to_save = list(method.modules_to_save) or None
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=method.lora_r, lora_alpha=method.lora_alpha,
                      lora_dropout=method.lora_dropout, target_modules=resolve_lora_targets(model, method.lora_target),
                      use_rslora=method.rslora, use_dora=method.dora,
                      init_lora_weights="pissa" if method.pissa else True,  # exact SVD: reloads identically
                      modules_to_save=modules_to_save,
                      ensure_weight_tying=bool(modules_to_save) and _has_tied_embeddings(model))


def apply_lora(model: nn.Module, method: MethodConfig) -> nn.Module:
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, method))


def apply_qlora(model: nn.Module, method: MethodConfig) -> nn.Module:
    if not is_quantized(model):
        raise ConfigError("method qlora needs the base loaded in 4 or 8 bits: load it with "
                          "load_model(..., quantization=quantization_config(method, model_cfg))")
    return apply_lora(model, method)


def prompt_config(method: MethodConfig):
    """peft config of prefix (P-Tuning v2: key/value prefixes in every layer) or ptuning (prompt encoder)."""
    from peft import PrefixTuningConfig, PromptEncoderConfig, TaskType

    if method.name == "prefix":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=method.num_virtual_tokens,
                                  prefix_projection=method.prefix_projection,
                                  encoder_hidden_size=method.encoder_hidden_size)
    return PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=method.num_virtual_tokens,
                               encoder_hidden_size=method.encoder_hidden_size)


def apply_prompt(model: nn.Module, method: MethodConfig) -> nn.Module:
    from peft import get_peft_model

    return get_peft_model(model, prompt_config(method))


METHODS = {"full": apply_full, "freeze": apply_freeze, "lora": apply_lora, "qlora": apply_qlora,
           "prefix": apply_prompt, "ptuning": apply_prompt}


def apply_method(model: nn.Module, method: MethodConfig, gradient_checkpointing: bool = False) -> nn.Module:
    if method.name not in METHODS:
        raise ConfigError(f"method.name '{method.name}' is not available in this build; "
                          f"choose one of {', '.join(METHODS)}")
    if is_quantized(model):
        prepare_kbit(model)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        model.enable_input_require_grads()  # frozen embeddings would otherwise cut the graph
    return METHODS[method.name](model, method)


def prepare_kbit(model: nn.Module) -> None:
    """peft's k-bit preparation: base frozen, fp16/bf16 weights that are not quantized cast to fp32.

    Gradient checkpointing is left to `apply_method` (use_reentrant=False needs no input hook).
    """
    from peft import prepare_model_for_kbit_training

    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def is_prompt_method(name: str) -> bool:
    """prefix / ptuning: virtual tokens in front of the input; nothing that could be merged into weights."""
    return name in PROMPT_METHODS


def loraplus_optimizer(method: MethodConfig, args):
    """`optimizer_cls_and_kwargs` for the HF Trainer when method.loraplus_lr_ratio is set, else None.

    LoRA+ (peft `create_loraplus_optimizer`): lora_B matrices (and 1-D weights such as DoRA
    magnitudes) learn at ratio x train.learning_rate, the rest at the learning rate. The
    optimizer class and its kwargs are the ones train.optim gives. The Trainer calls the
    factory with the model it trains, so it also works where `optimizers=` is refused (FSDP).
    """
    if method.loraplus_lr_ratio is None:
        return None
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer

    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    kwargs = {**kwargs, "optimizer_cls": optimizer_cls, "loraplus_lr_ratio": method.loraplus_lr_ratio,
              "loraplus_weight_decay": args.weight_decay}
    return (lambda: create_loraplus_optimizer), kwargs


def trainable_summary(model: nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"trainable params: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)"


def upcast_trainable(model: nn.Module) -> None:
    """Half-precision trainable weights train badly with fp16 autocast: keep them in fp32."""
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()
