"""Answer (infer/answer.py) decodes only a window of the last tokens per push: on real tokenizers
its pieces and its text are exactly the decode of the whole answer (special tokens hidden), for
mixed scripts, emoji and rare characters split over byte tokens, and random token soup."""

import random

import pytest
from real_artifacts import real_tokenizer

from tunekit.infer.answer import Answer, hidden_special_ids

TEXTS = ["Hello, world! 你好，世界。 naïve café — 1234567 ✓",
         "龘齉 𠜎𠜱 👩‍👩‍👧 emoji and  double  spaces\n\n- a list\n- item",
         "def f(x):\n    return x ** 2  # code\t\ttabs"]


def pushed(tokenizer, ids: list[int], stop_strings=()) -> tuple[list[str], Answer]:
    answer = Answer(tokenizer, stop_token_ids=[], stop_strings=list(stop_strings), max_new_tokens=len(ids) + 1)
    pieces = [answer.push(t) for t in ids]
    return pieces + [answer.flush()], answer


@pytest.mark.parametrize("name", ["qwen3", "llama3-instruct", "smollm2"])
def test_windowed_decoding_equals_decoding_the_whole_answer(name):
    tokenizer = real_tokenizer(name)
    hidden = hidden_special_ids(tokenizer)
    rng = random.Random(0)
    soups = [[rng.randrange(len(tokenizer)) for _ in range(300)] for _ in range(3)]
    for ids in [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS] + soups:
        whole = tokenizer.decode([i for i in ids if i not in hidden], skip_special_tokens=False)
        pieces, answer = pushed(tokenizer, ids)
        assert answer.text == whole.rstrip("\ufffd")
        assert "".join(pieces) == answer.text


def test_a_stop_string_spanning_many_pushes_is_found_late_in_a_long_answer():
    tokenizer = real_tokenizer("qwen3")
    text = "word " * 400 + "THE END here"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces, answer = pushed(tokenizer, ids, stop_strings=["THE END"])
    assert answer.finish_reason == "stop"
    assert "".join(pieces) == answer.text == "word " * 400
