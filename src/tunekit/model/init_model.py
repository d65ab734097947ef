"""Build a small randomly initialised causal LM with its own tokenizer: for tests and the demo.

    init_model("qwen2", "tiny", ["corpus.txt"], "models/tiny")

The tokenizer is a byte-level BPE trained on the given text, in which every Chinese
character of the corpus is one token (as far as the vocabulary size allows), wrapped as a
`PreTrainedTokenizerFast` with a chat template. The model is a Qwen2 or LLaMA config of
the chosen size with random weights. The output is a plain Hugging Face directory
(safetensors) that `AutoTokenizer` and `AutoModelForCausalLM` load with nothing downloaded.
The same seed and corpus give the same directory.
"""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from tunekit.errors import ConfigError, DataError, TunekitError

ARCHS = {"qwen2": Qwen2Config, "llama": LlamaConfig}

# Sizes for CPU work. `small` is what `tunekit demo` trains: two 64-wide heads copy names from
# the prompt far sooner than narrower heads or a wider model do on two CPU cores.
SIZES = {
    "tiny": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "small": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3,
              "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True},
}
DEFAULT_VOCAB_SIZE = {"tiny": 2000, "small": 6000}
MAX_POSITIONS = 2048

# Characters that become one token each: CJK punctuation, Han ideographs (extension A and
# the unified block), full-width forms.
CJK_CHAR = "[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]"
# Qwen2's word pattern (transformers models/qwen2/tokenization_qwen2.py).
WORD_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
MIN_PAIR_FREQUENCY = 2  # a merge, or a guaranteed single-token character, must occur this often

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class ChatFormat:
    """The special tokens and chat template of one `template` choice."""

    end_of_text: str  # pad token, and eos of a base model
    end_of_turn: str | None  # eos of a chat model: closes every turn
    bos: str | None  # prepended to every encoded text when set
    extra_tokens: tuple[str, ...]
    chat_template: str | None

    @property
    def special_tokens(self) -> list[str]:
        named = [self.end_of_text, self.bos, self.end_of_turn]
        return list(dict.fromkeys([t for t in named if t] + list(self.extra_tokens)))


CHAT_FORMATS = {
    None: ChatFormat("<|endoftext|>", None, None, (), None),
    "chatml": ChatFormat("<|endoftext|>", "<|im_end|>", None, ("<|im_start|>",), CHATML_TEMPLATE),
    "llama3": ChatFormat("<|end_of_text|>", "<|eot_id|>", "<|begin_of_text|>",
                         ("<|start_header_id|>", "<|end_header_id|>"), LLAMA3_TEMPLATE),
}


def init_model(
    arch: str,
    size: str,
    corpus_files: list[str | Path],
    output_dir: str | Path,
    template: str | None = "chatml",
    vocab_size: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Train a tokenizer on `corpus_files`, build a random `arch` model of `size`, save both to `output_dir`."""
    chat_format = _chat_format(template)
    _check_arch_and_size(arch, size)
    output_dir = _checked_output_dir(output_dir, overwrite)
    target_vocab = vocab_size or DEFAULT_VOCAB_SIZE[size]
    _check_vocab_size(target_vocab, chat_format)

    tokenizer = build_tokenizer(read_corpus(corpus_files), target_vocab, chat_format)
    model = _random_model(arch, size, tokenizer, chat_format, seed)
    with tempfile.TemporaryDirectory(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp-") as tmp:
        staging = Path(tmp) / "model"
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        if output_dir.exists():  # empty, or overwrite was asked for: it goes away with the temporary directory
            output_dir.replace(Path(tmp) / "replaced")
        staging.replace(output_dir)
    return output_dir


def read_corpus(corpus_files: list[str | Path]) -> list[str]:
    """All text of the files: every string value of JSON / JSONL files, the lines of any other file."""
    if not corpus_files:
        raise DataError("init-model needs at least one corpus file (text, JSON or JSONL) to train the tokenizer on")
    texts = []
    for path in map(Path, corpus_files):
        if not path.is_file():
            raise DataError(f"corpus file {path} does not exist; pass text, JSON or JSONL files")
        texts.extend(_texts_of_file(path))
    return texts


def _texts_of_file(path: Path) -> list[str]:
    content = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return _strings_in(json.loads(content))
        if path.suffix == ".jsonl":
            return [s for line in content.splitlines() if line.strip() for s in _strings_in(json.loads(line))]
    except json.JSONDecodeError as error:
        raise DataError(f"corpus file {path} is not valid JSON ({error}); fix it or rename it to .txt") from error
    return content.splitlines(keepends=True)


def _strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for item in value for s in _strings_in(item)]
    return []


def build_tokenizer(texts: list[str], vocab_size: int, chat_format: ChatFormat) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, with the special tokens and chat template of `chat_format`.

    It is trained with each CJK character split off, so that no merge joins two of them, and
    saved with the pipeline of Qwen2's tokenizer, which transformers rebuilds for every qwen2
    model whatever tokenizer.json says; on words of CJK characters both split the same way.
    """
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(CJK_CHAR), "isolated"), *_word_split()])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=MIN_PAIR_FREQUENCY,
        special_tokens=chat_format.special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    backend = _with_single_token_chars(backend, _frequent_cjk_chars(texts), vocab_size)
    backend.pre_tokenizer = pre_tokenizers.Sequence(_word_split())
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=chat_format.end_of_turn or chat_format.end_of_text,
        pad_token=chat_format.end_of_text,
        bos_token=chat_format.bos,
        add_bos_token=chat_format.bos is not None,
        chat_template=chat_format.chat_template,
        model_max_length=MAX_POSITIONS,
    )


def _word_split() -> list:
    """Qwen2's pre-tokenizer: words, single digits, punctuation runs, then bytes as symbols."""
    return [
        pre_tokenizers.Split(Regex(WORD_PATTERN), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]


def _frequent_cjk_chars(texts: list[str]) -> list[str]:
    """CJK characters seen at least MIN_PAIR_FREQUENCY times, most frequent first."""
    counts = Counter(char for text in texts for char in re.findall(CJK_CHAR, unicodedata.normalize("NFC", text)))
    frequent = [char for char, count in counts.items() if count >= MIN_PAIR_FREQUENCY]
    return sorted(frequent, key=lambda char: (-counts[char], char))


def _with_single_token_chars(backend: Tokenizer, chars: list[str], vocab_size: int) -> Tokenizer:
    """Put the byte merges that make each of `chars` one token first; drop the last trained merges to fit."""
    state = json.loads(backend.to_str())
    trained_merges = [tuple(pair) for pair in state["model"]["merges"]]
    vocab = state["model"]["vocab"]
    merged = {a + b for a, b in trained_merges}
    base = sorted((token for token in vocab if token not in merged), key=vocab.get)

    char_merges = dict.fromkeys(m for char in chars for m in _byte_merges(char))
    merges, new_vocab = [], {token: i for i, token in enumerate(base)}
    for a, b in list(char_merges) + [m for m in trained_merges if m not in char_merges]:
        if a + b not in new_vocab:
            if len(new_vocab) >= vocab_size:
                break
            new_vocab[a + b] = len(new_vocab)
        merges.append([a, b])
    state["model"]["vocab"], state["model"]["merges"] = new_vocab, merges
    return Tokenizer.from_str(json.dumps(state))


def _byte_merges(char: str) -> list[tuple[str, str]]:
    """The merges that join the byte-level symbols of `char` left to right into one token."""
    symbols = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(char)[0][0]
    return [(symbols[:i], symbols[i]) for i in range(1, len(symbols))]


def _random_model(arch: str, size: str, tokenizer: PreTrainedTokenizerFast, chat_format: ChatFormat, seed: int):
    """Random weights drawn from `seed` (the caller's RNG state is left alone); generation stops at end of turn."""
    end_of_text_id = tokenizer.convert_tokens_to_ids(chat_format.end_of_text)
    stop_ids = list(dict.fromkeys([tokenizer.eos_token_id, end_of_text_id]))
    config = ARCHS[arch](
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SIZES[size],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=stop_ids if len(stop_ids) > 1 else stop_ids[0],
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def _check_arch_and_size(arch: str, size: str) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")


def _chat_format(template: str | None) -> ChatFormat:
    if template not in CHAT_FORMATS:
        names = ", ".join(name for name in CHAT_FORMATS if name)
        raise ConfigError(f"unknown template {template!r}; choose one of {names}, or none for a base model")
    return CHAT_FORMATS[template]


def _check_vocab_size(vocab_size: int, chat_format: ChatFormat) -> None:
    smallest = 256 + len(chat_format.special_tokens) + 1
    if vocab_size < smallest:
        raise ConfigError(f"vocab_size {vocab_size} is too small; byte-level BPE needs at least {smallest}")


def _checked_output_dir(output_dir: str | Path, overwrite: bool) -> Path:
    output_dir = Path(output_dir).resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise TunekitError(f"{output_dir} exists and is not a directory; choose another output directory")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise TunekitError(f"{output_dir} already exists and is not empty; choose another directory or pass overwrite")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return output_dir

