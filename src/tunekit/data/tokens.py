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

import unicodedata


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


class TokenStarts:
    """Which token of a text starts at a given character, read off the ids alone (no offsets).

    The Rust tokenizer cuts a text at its added tokens first and tokenizes the pieces between
    them on their own. So the token starting at character `c` is found from the last added
    token ending at or before `c` (its index: the how-many-th occurrence of that token it is)
    plus the tokens of the short text between it and `c`, tokenized alone and checked against
    the ids that follow it: equal ids spell the same bytes, so the next token starts at `c`.
    None (ask for offsets instead) when that check fails, the text between is long, or the
    tokenizer is one the check cannot vouch for (not BPE, or a normalizer other than NFC on text
    that NFC would change).

    The markers counted from are the added tokens found in `written` (a template's source and
    the special tokens it is given: few, so each lookup is cheap); one that strips neighbouring
    spaces or sits inside another added token is left out.
    """

    MAX_BETWEEN = 64  # characters tokenized alone between the marker and `c`
    MEMO = 4096  # distinct texts between remembered (templates repeat a few)

    def __init__(self, tokenizer, written: str):
        self.tokenizer = tokenizer
        added = {str(t): (i, t) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        self.markers = {m: i for m, (i, token) in added.items() if m and m in written and _plain_added(token)
                        and not any(m != other and m in other for other in added)}
        self._between: dict[str, list[int]] = {}
        backend = plain_backend(tokenizer)
        normalizer = type(backend.normalizer).__name__ if backend is not None and backend.normalizer else None
        self.usable = (backend is not None and type(backend.model).__name__ == "BPE"
                       and normalizer in (None, "NFC") and bool(self.markers))
        self.nfc = normalizer == "NFC"

    def applies_to(self, text: str) -> bool:
        return self.usable and (not self.nfc or unicodedata.is_normalized("NFC", text))

    def index(self, text: str, ids: list[int], c: int) -> int | None:
        """The index in `ids` (the tokens of `text`) of the token starting at character c; len(ids) at the end."""
        marker, end = self._last_marker(text, c)
        first = 0
        if marker is not None:
            first = _nth(ids, self.markers[marker], text.count(marker, 0, end))
            if first is None:
                return None
            first += 1
        between = text[end:c]
        if not between:
            return first
        if len(between) > self.MAX_BETWEEN:
            return None
        expected = self._tokens(between)
        return first + len(expected) if ids[first: first + len(expected)] == expected else None

    def _last_marker(self, text: str, c: int) -> tuple[str | None, int]:
        best, best_end = None, 0
        for marker in self.markers:
            pos = text.rfind(marker, 0, c)
            if pos >= 0 and pos + len(marker) > best_end:
                best, best_end = marker, pos + len(marker)
        return best, best_end

    def _tokens(self, between: str) -> list[int]:
        ids = self._between.get(between)
        if ids is None:
            ids = token_ids(self.tokenizer, [between])[0]
            if len(self._between) < self.MEMO:
                self._between[between] = ids
        return ids


def _plain_added(token) -> bool:
    """An added token matched as written: it strips no neighbouring space and needs no word bounds."""
    return not any(getattr(token, flag, False) for flag in ("lstrip", "rstrip", "single_word"))


def _nth(ids: list[int], token: int, n: int) -> int | None:
    """Index of the n-th (1-based) occurrence of `token` in ids."""
    at = -1
    try:
        for _ in range(n):
            at = ids.index(token, at + 1)
    except ValueError:
        return None
    return at if n else None
