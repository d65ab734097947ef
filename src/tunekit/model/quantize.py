"""QLoRA quantization: the bitsandbytes config that `load_model` gets for `method: qlora`.

    quantization = quantization_config(cfg.method, cfg.model)   # None unless method is qlora
    model = load_model(cfg.model, tokenizer, quantization=quantization)

4-bit: nf4 or fp4 weights, optional double quantization of the constants, matmuls in
`method.compute_dtype` (auto: the model dtype). 8-bit: LLM.int8 weights. bitsandbytes
runs on the CPU as well as on CUDA; on the CPU 8-bit matmuls cast their inputs to fp16.
The quantized base is frozen and prepared for training once, by `adapters.apply_method`.
"""

from __future__ import annotations

from tunekit.config import MethodConfig, ModelConfig
from tunekit.errors import ConfigError
from tunekit.dtypes import torch_dtype

INSTALL_HINT = "pip install 'tunekit[qlora]' (bitsandbytes)"


def quantization_config(method: MethodConfig, model: ModelConfig):
    """A transformers BitsAndBytesConfig for qlora, None for every other method."""
    if method.name != "qlora":
        return None
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    if method.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = model.dtype if method.compute_dtype == "auto" else method.compute_dtype  # names, as in the config
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=method.quant_type,
                              bnb_4bit_use_double_quant=method.double_quant,
                              bnb_4bit_compute_dtype=torch_dtype(compute))


def require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(f"method qlora needs bitsandbytes, which is not installed: {INSTALL_HINT}") from None


def is_quantized(model) -> bool:
    """True for a model loaded in 4 or 8 bits (also through a peft wrapper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))
