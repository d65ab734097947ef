"""Text to token ids, no special tokens added: straight from the Rust tokenizer where there is one.

transformers' fast-tokenizer call wraps `tokenizers.Tokenizer.encode_batch` and converts every
encoding into Python lists and a BatchEncoding; on short chat samples that wrapping costs about
as much as the tokenization itself. These helpers call the Rust tokenizer directly, which gives
the same ids and character offsets (tests/real/test_tokenizers_real.py checks them against the
tokenizer's own call), and fall back to that call for a tokenizer without a Rust backend or
whose backend would truncate or pad (transformers turns those off for each call; a direct
call would not).
"""

from __future__ import annotations


def plain_backend(tokenizer):
    """The `tokenizers.Tokenizer` behind `tokenizer` when calling it directly is safe, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    if backend.truncation is not None or backend.padding is not None:
        return None
    return backend


def token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's ids (no offsets computed: the fastest path)."""
    backend = plain_backend(tokenizer)
    if backend is not None:
        return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def encodings(tokenizer, texts: list[str]) -> list | None:
    """The Rust tokenizer's `Encoding` of each text (ids, offsets and char_to_token on demand), or
    None when the tokenizer cannot be called directly."""
    backend = plain_backend(tokenizer)
    return None if backend is None else backend.encode_batch(texts, add_special_tokens=False)


def ids_and_offsets(tokenizer, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Each text's ids and the (start, end) character span of each token."""
    direct = encodings(tokenizer, texts)
    if direct is not None:
        return [(encoding.ids, encoding.offsets) for encoding in direct]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False,
                    return_token_type_ids=False)
    return list(zip(enc["input_ids"], enc["offset_mapping"]))
