"""Dtypes, decided in one place: the names users write, what `auto` means here, and the
spellings other libraries want.

    torch_dtype("auto")        # bf16 on a GPU that has it, fp16 on an older GPU, fp32 on the CPU
    name_of(torch.bfloat16)    # "bf16"
    vllm_name("fp16")          # "float16"

`auto` in `merge --dtype` and `load_base` means "the checkpoint's own" instead: those pass
`checkpoint_dtype(name)`, which keeps "auto" for transformers to read from config.json.
"""

from __future__ import annotations

NAMES = ("auto", "bf16", "fp16", "fp32")  # config.py checks against this without importing torch
VLLM = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _torch():
    import torch

    return torch


def torch_dtypes() -> dict:
    torch = _torch()
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def auto_name() -> str:
    """What `auto` resolves to on this machine."""
    torch = _torch()
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_name(name: str) -> str:
    """A concrete name: `auto` becomes this machine's choice."""
    return auto_name() if name == "auto" else name


def torch_dtype(name: str):
    return torch_dtypes()[resolve_name(name)]


def checkpoint_dtype(name: str):
    """For loading a checkpoint as it was saved: `auto` stays "auto" (transformers reads config.json)."""
    return "auto" if name == "auto" else torch_dtypes()[name]


def name_of(dtype) -> str:
    return next((name for name, value in torch_dtypes().items() if value == dtype), str(dtype).removeprefix("torch."))


def vllm_name(name: str) -> str:
    return VLLM[name]
