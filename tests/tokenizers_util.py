"""Tiny tokenizers built in-process for tests: byte-level BPE with chosen special tokens."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SAMPLE_TEXT = [
    "Hello, how are you? I am fine, thank you. What is the capital of France? Paris.",
    "你好，今天天气怎么样？北京是中国的首都。张伟在上海工作。请找出句子中的人名。",
    "The quick brown fox jumps over the lazy dog. 1 2 3 4 5 6 7 8 9 0",
    "### Instruction:\n### Response:\n### Input:\n[Round 1]\n问：答：system user assistant tool",
]


def build_tokenizer(special: list[str], bos: str | None = None, eos: str | None = None,
                    pad: str | None = None, chat_template: str | None = None, vocab_size: int = 400):
    specials = list(dict.fromkeys([t for t in [bos, eos, pad, *special] if t]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(SAMPLE_TEXT * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad or eos,
                                   extra_special_tokens=[t for t in special if t not in (bos, eos, pad)])
    if chat_template:
        fast.chat_template = chat_template
    return fast
