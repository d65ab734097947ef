"""Import a GGUF file (llama.cpp, Ollama, LM Studio) as an ordinary Hugging Face model directory.

    result = import_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "models/SmolLM2-135M-Instruct")
    AutoModelForCausalLM.from_pretrained("models/SmolLM2-135M-Instruct")   # nothing else needed

transformers' own GGUF reader does the work (`from_pretrained(folder, gguf_file=name)`): it
builds the config, the tokenizer and the chat template from the file's metadata and
dequantizes the weights to fp32. What this module adds:

- checks first (a GGUF at all, an architecture transformers reads, the output free), so bad
  input stops with one message before any slow work;
- the pre-tokenizers transformers does not map (`PRE_TOKENIZERS`): SmolLM2's `smollm` would
  fall back to GPT-2 byte-level; it is set to what llama.cpp runs for it (every digit on its
  own, then the GPT-2 split);
- `quantization_config` is dropped, so the output is a plain fp32 model;
- generation_config.json stops at the chat template's end-of-turn token(s) plus eos, and
  carries the file's sampling defaults (`general.sampling.*`) when it has them;
- everything is written to a hidden temporary sibling and renamed at the end (export.atomic).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tunekit.errors import TunekitError
from tunekit.export.atomic import atomic_directory, check_output_dir

GGUF_MAGIC = b"GGUF"
# general.sampling.* (llama.cpp's names) -> GenerationConfig attribute
SAMPLING_KEYS = {"temp": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
                 "penalty_repeat": "repetition_penalty"}
NOT_ARCHITECTURES = {"general", "tokenizer"}  # sections of transformers' mapping table
NOT_CAUSAL = {"t5", "umt5"}  # encoder-decoder: transformers reads them, but there is no chat model to fine-tune


def _digits_then_gpt2():
    """llama.cpp's `smollm` / `starcoder` / `refact` split: each number character alone, then GPT-2's regex."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


# tokenizer.ggml.pre tags transformers leaves at GPT-2 byte-level, and what llama.cpp does instead
PRE_TOKENIZERS = {"smollm": _digits_then_gpt2, "starcoder": _digits_then_gpt2, "refact": _digits_then_gpt2}


@dataclass
class GgufInfo:
    path: Path
    architecture: str
    name: str
    tensor_types: Counter  # ggml type name -> tensor count
    file_type: str | None  # general.file_type by llama.cpp's name (Q4_1, F16, ...), when the file says
    pre_tokenizer: str | None
    sampling: dict  # GenerationConfig attribute -> value, from general.sampling.*

    @property
    def quantized_types(self) -> list[str]:
        return [t for t, _ in self.tensor_types.most_common() if t not in ("F32", "F16", "BF16")]


@dataclass
class ImportResult:
    output: Path
    architecture: str
    parameters: int
    eos_token_ids: list[int]
    notes: list[str] = field(default_factory=list)


def supported_architectures() -> list[str]:
    """The causal-LM GGUF architectures the installed transformers reads (its mapping table, not a copy)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in NOT_ARCHITECTURES | NOT_CAUSAL]


def read_gguf_info(path: str | Path) -> GgufInfo:
    """The file's architecture, tensor types and defaults; a clear error when it is not a readable GGUF."""
    path = Path(path)
    if not path.is_file():
        raise TunekitError(f"{path} not found: give the path of a .gguf file")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise TunekitError(f"{path} is not a GGUF file (it does not start with 'GGUF'): give a model file "
                               "written by llama.cpp's converter (Ollama and LM Studio keep theirs as such)")
    from transformers.integrations.gguf.dequant import GGML_NAME
    from transformers.integrations.gguf.reader import GgufHeader, read_gguf_metadata

    try:
        metadata, _ = read_gguf_metadata(str(path))
        header = GgufHeader.from_file(str(path))
    except (ValueError, IndexError, OSError, struct.error) as exc:  # truncated or damaged metadata
        raise TunekitError(f"{path} is not a readable GGUF file: {exc}") from None
    plain = {0: "F32", 1: "F16", 30: "BF16"}
    types = Counter(plain.get(t) or GGML_NAME.get(t, f"type {t}") for t in header.ggml_types.values())
    sampling = {attr: metadata[f"general.sampling.{key}"] for key, attr in SAMPLING_KEYS.items()
                if f"general.sampling.{key}" in metadata}
    return GgufInfo(path, metadata["general.architecture"], str(metadata.get("general.name", path.stem)), types,
                    _file_type(metadata.get("general.file_type")), metadata.get("tokenizer.ggml.pre"), sampling)


def _file_type(value) -> str | None:
    from gguf import LlamaFileType

    try:
        return LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return None


def check_architecture(info: GgufInfo) -> None:
    """Refuse an architecture transformers cannot read, naming the ones it can."""
    supported = supported_architectures()
    aliases = {info.architecture, info.architecture.replace("-", "_"), info.architecture.replace("moe", "_moe")}
    if not aliases & set(supported):
        raise TunekitError(f"{info.path}: architecture '{info.architecture}' is not one transformers "
                           f"reads from GGUF (supported: {', '.join(supported)}); convert the original "
                           "Hugging Face checkpoint instead")


def import_gguf(path: str | Path, output: str | Path, overwrite: bool = False) -> ImportResult:
    """Write `output`: safetensors weights, tokenizer, chat template and generation config from a GGUF."""
    info = read_gguf_info(path)
    check_architecture(info)
    check_output_dir(output, overwrite, inputs=[info.path])
    model, tokenizer = load_gguf(info)
    eos = end_of_turn_ids(tokenizer)
    set_generation_config(model, tokenizer, eos, info.sampling)
    with atomic_directory(output, overwrite, inputs=[info.path]) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    params = sum(p.numel() for p in model.parameters())
    return ImportResult(Path(output), info.architecture, params, eos, describe(info, tokenizer, eos))


def load_gguf(info: GgufInfo):
    """(fp32 model without quantization_config, tokenizer with the right pre-tokenizer) via transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(info.path.parent), info.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise TunekitError(f"transformers cannot import {info.path}: {str(exc).splitlines()[0]}") from None
    if info.pre_tokenizer in PRE_TOKENIZERS:
        tokenizer.backend_tokenizer.pre_tokenizer = PRE_TOKENIZERS[info.pre_tokenizer]()
    _drop_quantization(model)
    return model, tokenizer


def _drop_quantization(model) -> None:
    """The weights are plain fp32 now; a saved quantization_config would make loaders expect GGUF."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    model.is_quantized = False


def end_of_turn_ids(tokenizer) -> list[int]:
    """The chat template's end-of-turn token id(s), then eos: where generation must stop."""
    ids = []
    if tokenizer.chat_template:
        from tunekit.data.templates import load_template

        ids = list(load_template(tokenizer, None).stop_token_ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def set_generation_config(model, tokenizer, eos: list[int], sampling: dict) -> None:
    config = model.generation_config
    if eos:
        config.eos_token_id = eos if len(eos) > 1 else eos[0]
    if tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    for attr, value in sampling.items():
        setattr(config, attr, value)
    if sampling.get("temperature", 0) > 0:
        config.do_sample = True


def describe(info: GgufInfo, tokenizer, eos: list[int]) -> list[str]:
    """What the user should know about the import, one line each."""
    counts = ", ".join(f"{n} {t}" for t, n in info.tensor_types.most_common())
    quantized = info.quantized_types
    stored = info.file_type or "/".join(quantized or info.tensor_types)
    weights = f"dequantized from {stored} to fp32" if quantized else f"converted from {stored} to fp32"
    notes = [f"{info.name}: architecture {info.architecture}", f"weights: {weights} ({counts} tensors)"]
    if info.pre_tokenizer in PRE_TOKENIZERS:
        notes.append(f"tokenizer: pre-tokenizer '{info.pre_tokenizer}' is not mapped by transformers; set to "
                     "llama.cpp's split for it (each digit alone, then GPT-2 byte-level)")
    stops = ", ".join(f"{i} {tokenizer.convert_ids_to_tokens(i)}" for i in eos)
    notes.append(f"generation_config: stops at {stops or 'nothing (no eos in the file)'}; sampling defaults "
                 f"from the file: {info.sampling or 'none'}")
    if not tokenizer.chat_template:
        notes.append("the file has no chat template: give one with model.template when you train")
    return notes
