"""Real tokenizers with real templates: ids equal apply_chat_template, labels are exactly the answers.

Pairs come from tests/real_artifacts.py: Qwen2.5/Qwen3 and DeepSeek-R1-Distill-Qwen on the real
Qwen vocabulary, Llama 3 with the 3.2 and 3.3 templates, SmolLM2 with its own — instruct and
base eos alike (a base tokenizer's eos is not the template's end-of-turn token).

The expected labels are computed here, not by tunekit: each answer starts where
`apply_chat_template(history, add_generation_prompt=True)` ends, runs over the answer text as
the template writes it, and is followed by the pair's end-of-turn text (written in the table,
not read off the template). A token is expected to be trained when it overlaps that span.
"""

from __future__ import annotations

import itertools
import json

import pytest
from real_artifacts import REAL_PAIRS, real_template_source, real_tokenizer

from helpers import SHARED
from tunekit.config import DatasetSpec
from tunekit.data.formats import load_one
from tunekit.data.templates import IGNORE_INDEX, ChatTemplate

AWKWARD_ANSWERS = [
    "\nstarts with a newline", "  two leading spaces", "\tstarts with a tab", "，中文标点开头。",
    "emoji 🤖🎉 and 👩‍👩‍👧", "```python\ndef f(x):\n    return x ** 2\n```",
    "1234567890123456789012345678901234567890", "Cafe\u0301 na\u0308ive re\u0301sume\u0301",
    "assistant", "user", "ends with newline\n",
]


def awkward_conversations() -> list[list[dict]]:
    convs = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": a}]
             for i, a in enumerate(AWKWARD_ANSWERS)]
    convs.append([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "user"},
                  {"role": "assistant", "content": AWKWARD_ANSWERS[3]}, {"role": "user", "content": "again"},
                  {"role": "assistant", "content": AWKWARD_ANSWERS[6]}])
    return convs


def shared_conversations(name: str, limit: int) -> list[list[dict]]:
    records = load_one(DatasetSpec(str(SHARED / "data" / name), max_samples=limit), "sft").records
    return [r.messages for r in records]


def expected_labels(tok, messages: list[dict], eot: str) -> tuple[list[int], list[int]]:
    """(ids, labels) from the tokenizer's own template and spans found here."""
    full = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        assert full.startswith(prefix), f"history of answer {i} is rendered differently in the whole"
        answer = next(a for a in (message["content"], message["content"].strip())
                      if full.startswith(a, len(prefix)))
        end = len(prefix) + len(answer)
        if not full.startswith(eot, end):
            # An inference template may leave the last turn open; the model must still learn to stop.
            assert i == len(messages) - 1 and end == len(full), f"answer {i} is not followed by {eot!r}"
            full += eot
        spans.append((len(prefix), end + len(eot)))
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    labels = [ids if any(s < e_tok and e > s_tok for s, e in spans) else IGNORE_INDEX
              for ids, (s_tok, e_tok) in zip(enc["input_ids"], enc["offset_mapping"])]
    return enc["input_ids"], labels


# Reasoning templates render the answer after the last question with a <think> block the
# generation prompt does not write, and strip it from earlier answers: issue 12 trains each
# turn under its own inference prefix. Until then these pairs must fail, not pass by accident.
REASONING = {"qwen3.jinja", "deepseek_r1_distill_qwen.jinja"}


def expect_reasoning_failure(request, real) -> None:
    if real.template in REASONING:
        request.applymarker(pytest.mark.xfail(strict=True, reason="per-turn reasoning prefixes (issue 12)"))


@pytest.fixture(scope="module", params=REAL_PAIRS, ids=lambda p: p.id)
def pair(request):
    tok = real_tokenizer(request.param.tokenizer)
    source = real_template_source(request.param) or tok.chat_template
    tok.chat_template = source
    return request.param, tok, ChatTemplate(tok, source, request.param.id)


def test_end_of_turn_is_the_template_s_not_eos(pair):
    real, tok, template = pair
    assert template.eot_text == real.eot
    assert template.stop_token_ids == [tok.convert_tokens_to_ids(real.eot)]


@pytest.mark.parametrize("data", ["awkward", "alpaca_zh_demo.json", "glaive_toolcall_zh_demo.json"])
def test_ids_and_labels_match_an_independent_reading(pair, data, request):
    real, tok, template = pair
    expect_reasoning_failure(request, real)
    convs = awkward_conversations() if data == "awkward" else shared_conversations(data, 40)
    from tunekit.data.records import Conversation

    encoded = template.encode_many([Conversation(m, source=f"{data}:{n}") for n, m in enumerate(convs)])
    for n, (messages, ours) in enumerate(zip(convs, encoded)):
        ids, labels = expected_labels(tok, messages, real.eot)
        assert ours.input_ids == ids, f"{data} #{n}: ids differ from apply_chat_template"
        assert ours.labels == labels, f"{data} #{n}: labels differ from the answers + {real.eot!r}"
        trained = [i for i in labels if i != IGNORE_INDEX]
        assert trained.count(tok.convert_tokens_to_ids(real.eot)) == sum(m["role"] == "assistant" for m in messages)


def test_prompt_for_generation_ends_where_training_s_prompt_did(pair, request):
    real, tok, template = pair
    expect_reasoning_failure(request, real)
    messages = [{"role": "user", "content": "第一个问题"}, {"role": "assistant", "content": "答。"},
                {"role": "user", "content": "second question"}]
    expected = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert template.encode_prompt(messages) == expected["input_ids"]


def test_the_glaive_file_reads_whole():
    """Every row of the real tool-call file becomes a conversation (none dropped as bad)."""
    result = load_one(DatasetSpec(str(SHARED / "data" / "glaive_toolcall_zh_demo.json")), "sft")
    rows = json.loads((SHARED / "data" / "glaive_toolcall_zh_demo.json").read_text(encoding="utf-8"))
    assert len(result.records) == len(rows) and not result.problems
    assert list(itertools.islice((r.tools for r in result.records if r.tools), 1))
