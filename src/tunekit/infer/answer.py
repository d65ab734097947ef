"""Generated token ids -> answer text, one token at a time: the one place that decides where
an answer ends.

    answer = Answer(tokenizer, stop_token_ids=[7], stop_strings=["\\n\\n"], max_new_tokens=64)
    for token in tokens:
        shown = answer.push(token)      # text safe to show now (maybe "")
        if answer.finish_reason: break
    shown += answer.flush()

- a stop token ends the answer and its text is never shown;
- a stop string cuts the answer at its first occurrence, also when it spans increments
  (text that could be the start of a stop string is held back until it is clear);
- a multi-byte character split over tokens (Chinese in byte-level BPE) is held back until
  complete, so no increment ends in half a character;
- special tokens are not shown, except `keep`: the tool-call / reasoning markers a parser
  reads (infer/parsers.py), which some tokenizers mark special (Mistral's [TOOL_CALLS]).

Each token costs the same however long the answer is: only the last few tokens are decoded
again (the way vLLM's detokenizer does: the text of a short window with and without the
new tokens, the difference appended), and stop strings are looked for only near the end.
A server answering many requests at once pays this per token of every answer.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"  # what decoding gives for an incomplete UTF-8 sequence


class Answer:
    def __init__(self, tokenizer, stop_token_ids: list[int], stop_strings: list[str], max_new_tokens: int,
                 keep: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.hidden = hidden_special_ids(tokenizer, keep)
        self.stop_token_ids = set(stop_token_ids)
        self.stop_strings = list(stop_strings)
        self.max_new_tokens = max_new_tokens
        self.ids: list[int] = []  # answer tokens, stop token excluded
        self.completion_tokens = 0  # tokens the model generated, stop token included
        self.text = ""  # the answer so far, as final as it can be
        self.shown = 0  # characters of self.text already handed out
        self.finish_reason: str | None = None
        self._visible: list[int] = []  # self.ids without the hidden special tokens
        self._settled = ""  # text of _visible[:_read], final (no half character at its end)
        self._window = 0  # where the decoding window starts in _visible (a few tokens before _read)
        self._read = 0  # _visible[:_read] is in _settled

    def push(self, token_id: int) -> str:
        """Take one generated token; return the newly showable text."""
        if self.finish_reason is not None:
            return ""
        self.completion_tokens += 1
        if token_id in self.stop_token_ids:
            self.finish_reason = "stop"
            return self.flush()
        self.ids.append(token_id)
        searched = len(self._settled)
        if token_id not in self.hidden:
            self._visible.append(token_id)
            self.text = self._decode_tail()
        if self._cut_at_stop_string(searched):
            self.finish_reason = "stop"
            return self.flush()
        if self.completion_tokens >= self.max_new_tokens:
            self.finish_reason = "length"
            return self.flush()
        return self._take(self._showable_end())

    def flush(self) -> str:
        """At the end: everything not yet shown (a trailing half character is dropped)."""
        self.text = self.text.rstrip(REPLACEMENT)
        return self._take(len(self.text))

    def _decode_tail(self) -> str:
        """The whole answer's text, decoding only the window of its last tokens."""
        before = self._decode(self._window, self._read)
        after = self._decode(self._window, len(self._visible))
        if not after.startswith(before):  # a tokenizer whose decode is not prefix-stable: decode it all
            return self._decode(0, len(self._visible))
        if after.endswith(REPLACEMENT):  # a character still incomplete: keep the window open
            return self._settled + after[len(before):]
        self._settled += after[len(before):]
        self._window, self._read = self._read, len(self._visible)
        return self._settled

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self._visible[start:end], skip_special_tokens=False) if end > start else ""

    def _cut_at_stop_string(self, searched: int) -> bool:
        """searched: characters of self.text already free of stop strings (all but their last few may
        still start one)."""
        hits = [self.text.find(s, max(0, searched - len(s) + 1)) for s in self.stop_strings]
        hits = [h for h in hits if h >= 0]
        if hits:
            self.text = self.text[: min(hits)]
        return bool(hits)

    def _showable_end(self) -> int:
        """Text is held back while it ends in a half character or in the start of a stop string."""
        text = self.text.rstrip(REPLACEMENT)
        held = max((k for s in self.stop_strings for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return len(text) - held

    def _take(self, end: int) -> str:
        piece = self.text[self.shown: end]
        self.shown = max(self.shown, end)
        return piece


def hidden_special_ids(tokenizer, keep: tuple[str, ...] = ()) -> frozenset[int]:
    """Ids of the special tokens an answer does not show: all of them but `keep`."""
    special = set(tokenizer.all_special_ids)
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    kept = {tokenizer.convert_tokens_to_ids(t) for t in keep}
    return frozenset(special - kept)
