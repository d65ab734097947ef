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
from tunekit.data.templates import IGNORE_INDEX, ChatTemplate, TemplateError

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


def reasoning_and_tool_conversations() -> list[list[dict]]:
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京"}}}
    return [
        [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2", "reasoning_content": "one and one"},
         {"role": "user", "content": "再加一？"}, {"role": "assistant", "content": "3", "reasoning_content": "二加一"}],
        [{"role": "user", "content": "北京天气？"}, {"role": "assistant", "content": "", "tool_calls": [call]},
         {"role": "tool", "content": '{"temp": 21}'}, {"role": "assistant", "content": "21度。"},
         {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "<think>polite</think>You're welcome."}],
    ]


def expected_samples(tok, messages: list[dict], eot: str) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of each sample, from the tokenizer's own template and spans found here.

    Answer i starts where `apply_chat_template(history, add_generation_prompt=True)` ends and runs
    to its first `eot` (which is trained). It is trained in the whole conversation when the whole
    render starts with that prompt and answer; else in a sample of its own, the conversation up
    to it (templates that strip reasoning from earlier turns).
    """
    def render(upto, gen=False):
        return tok.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=gen)

    full, own, spans, cuts = render(len(messages)), [], [], []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix, turn = render(i, gen=True), render(i + 1)
        opened = ""
        if not turn.startswith(prefix):  # a generation prompt that opens <think> (R1-Distill)
            assert prefix.endswith("<think>\n") and turn.startswith(prefix[: -len("<think>\n")]), i
            opened = "<think>\n"
        head = len(prefix) - len(opened)
        end = turn.find(eot, head)
        if end < 0:  # an inference template may leave the last turn open; the model must still learn to stop
            closed = full.startswith(turn) and full.startswith(eot, len(turn))
            assert closed or i == len(messages) - 1, f"answer {i} is not followed by {eot!r}"
            turn, end = turn + eot, len(turn)
        answer = turn[: end + len(eot)]
        reasoning = message.get("reasoning_content") or ""
        if opened or (reasoning and reasoning not in answer[head:]):  # written back where the template drops it
            think = f"<think>\n{reasoning}\n</think>\n\n"
            text, span = turn[:head] + think + turn[head:], (len(prefix), end + len(think) + len(eot))
            cut = [len(prefix)] if opened else []  # the prompt is tokenized as at inference, apart
            if i == len(messages) - 1:
                full, spans, cuts = text, spans + [span], cut
            else:
                own.append((text, [span], cut))
        elif full.startswith(answer) or full + eot == answer:
            spans.append((len(prefix), end + len(eot)))
            full = full if full.startswith(answer) else full + eot
        else:
            own.append((turn, [(len(prefix), end + len(eot))], []))
    out = own + ([(full, spans, cuts)] if spans else [])
    return [_labelled(tok, *sample) for sample in out]


def _labelled(tok, text, spans, cuts):
    ids, offsets = [], []
    for a, b in zip([0, *cuts], [*cuts, len(text)]):
        enc = tok(text[a:b], add_special_tokens=False, return_offsets_mapping=True)
        ids += enc["input_ids"]
        offsets += [(a + x, a + y) for x, y in enc["offset_mapping"]]
    labels = [i if any(s < e_tok and e > s_tok for s, e in spans) else IGNORE_INDEX
              for i, (s_tok, e_tok) in zip(ids, offsets)]
    return ids, labels


def encode_or_refuse(template, tok, conv):
    """The samples of conv; None when tunekit refuses it, which it may only where the template's
    own render of a turn does not start with that turn's generation prompt less an opened <think>
    (R1-Distill's tool branch drops <｜Assistant｜> before a conversation's second call)."""
    try:
        return template.encode_samples(conv)
    except TemplateError:
        messages = template.prepare(conv.messages)
        broken = [i for i, m in enumerate(messages) if m["role"] == "assistant" and not tok.apply_chat_template(
            messages[: i + 1], tokenize=False).startswith(tok.apply_chat_template(
                messages[:i], tokenize=False, add_generation_prompt=True).removesuffix("<think>\n"))]
        assert broken, f"{conv.source}: refused, but the template writes every turn after its prompt"
        return None


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


@pytest.mark.parametrize("data", ["awkward", "alpaca_zh_demo.json", "glaive_toolcall_zh_demo.json", "reasoning"])
def test_ids_and_labels_match_an_independent_reading(pair, data):
    real, tok, template = pair
    convs = {"awkward": awkward_conversations, "reasoning": reasoning_and_tool_conversations}.get(
        data, lambda: shared_conversations(data, 40))()
    from tunekit.data.records import Conversation

    encoded = [encode_or_refuse(template, tok, Conversation(m, source=f"{data}:{n}")) for n, m in enumerate(convs)]
    for n, (messages, ours) in enumerate(zip(convs, encoded)):
        if ours is None:
            continue
        prepared = template.prepare(messages)  # calls as text where the template has no tool branch
        expected = expected_samples(tok, prepared, real.eot)
        assert len(ours) == len(expected), f"{data} #{n}: {len(ours)} samples, expected {len(expected)}"
        for k, (sample, (ids, labels)) in enumerate(zip(ours, expected)):
            assert sample.input_ids == ids, f"{data} #{n}.{k}: ids differ from apply_chat_template"
            assert sample.labels == labels, f"{data} #{n}.{k}: labels differ from the answers + {real.eot!r}"
        trained = [i for sample in ours for i in sample.labels if i != IGNORE_INDEX]
        assert trained.count(tok.convert_tokens_to_ids(real.eot)) == sum(m["role"] == "assistant" for m in messages)


def test_prompt_for_generation_ends_where_training_s_prompt_did(pair):
    real, tok, template = pair
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


@pytest.mark.parametrize("name", ["qwen3", "llama3-base", "smollm2"])
def test_ids_and_offsets_come_straight_from_the_rust_tokenizer_unchanged(name):
    """Both paths skip transformers' per-encoding conversion (data/tokens.py): the same ids and
    character offsets as the tokenizer's own call, special-token text and all."""
    from tunekit.data.tokens import ids_and_offsets, plain_backend, token_ids

    tok = real_tokenizer(name)
    texts = ["Hello, world!", " leading space", "\ttab\nnewline", "北京是中国的首都。", "emoji 🦊 and 1234567890",
             "café vs cafe\u0301", f"a {tok.eos_token} inside text", "", "def f(x):\n    return x**2\n"]
    own = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert plain_backend(tok) is not None
    assert token_ids(tok, texts) == own["input_ids"]
    assert ids_and_offsets(tok, texts) == [(ids, [tuple(o) for o in offsets])
                                           for ids, offsets in zip(own["input_ids"], own["offset_mapping"])]


def test_a_backend_that_would_truncate_is_not_called_directly():
    """A tokenizer.json may switch truncation on; transformers turns it off per call, a direct call would not."""
    from tunekit.data.tokens import ids_and_offsets, plain_backend

    tok = real_tokenizer("smollm2")
    tok.backend_tokenizer.enable_truncation(max_length=3)
    try:
        assert plain_backend(tok) is None
        assert len(ids_and_offsets(tok, ["one two three four five six"])[0][0]) > 3
    finally:
        tok.backend_tokenizer.no_truncation()


@pytest.mark.parametrize("name", ["qwen3", "llama3-base", "smollm2"])
def test_labels_read_at_the_span_edges_equal_labels_from_every_offset(name):
    """The fast rule (two char_to_token lookups per answer) gives the labels of the reference
    rule over all offsets, with spans starting and ending inside tokens and inside characters
    split over several byte tokens; it gives up (None: the caller takes the reference rule) only
    where normalisation leaves a character in no token (Qwen's NFC on combining accents)."""
    from tunekit.data.templates import _labels_from_spans, _span_labels
    from tunekit.data.tokens import encodings

    tok = real_tokenizer(name)
    texts = ["emoji 🤖🎉 and 👩‍👩‍👧 end", "Cafe\u0301 na\u0308ive", "北京是中国的首都。\n\n1234567890", "  x\ty\nz"]
    for text, encoding in zip(texts, encodings(tok, texts)):
        for start in range(len(text)):
            for end in range(start + 1, len(text) + 1, 3):
                spans = [(start, end)] + ([(end + 1, len(text))] if end + 1 < len(text) else [])
                fast = _span_labels(encoding, spans)
                if fast is None:
                    assert "\u0301" in text and name == "qwen3", (text, spans)
                    continue
                assert fast == _labels_from_spans(encoding.ids, encoding.offsets, spans), (text, spans)


@pytest.mark.parametrize("name", ["qwen3", "llama3-base", "smollm2"])
def test_token_starts_read_off_the_ids_agree_with_the_offsets(name):
    """TokenStarts finds the token starting at a character from the special tokens and the ids
    alone; wherever it answers, that token starts exactly there by the Rust offsets, and it gives
    up (None) where no token starts there (inside a token, inside a split character)."""
    from tunekit.data.tokens import TokenStarts, encodings

    tok = real_tokenizer(name)
    markers = [t for t in (tok.eos_token, tok.bos_token, "<|im_start|>", "<|im_end|>", "<|start_header_id|>",
                           "<|end_header_id|>", "<|eot_id|>") if t]
    starts = TokenStarts(tok, "\n".join(markers))
    assert starts.usable and starts.markers
    m = list(starts.markers)
    texts = [f"{m[0]}user\nemoji 🤖🎉 and 1234567{m[-1]}\n\n  x\ty{m[0]}{m[-1]}北京是中国的首都。",
             f"plain start {m[-1]}{m[0]}\nCafe\u0301 na\u0308ive{m[-1]}"]
    answered = 0
    for text, encoding in zip(texts, encodings(tok, texts)):
        token_starts = {s: k for k, (s, _) in reversed(list(enumerate(encoding.offsets)))}
        for c in range(len(text) + 1):
            found = starts.index(text, encoding.ids, c)
            if found is None:
                continue
            answered += 1
            expected = len(encoding.ids) if c == len(text) else token_starts.get(c)
            assert found == expected, (text[:c], found, expected)
    assert answered > len("".join(texts)) // 4


@pytest.mark.parametrize("data", ["alpaca_zh_demo.json", "glaive_toolcall_zh_demo.json"])
def test_answer_edges_are_read_off_the_ids_for_real_data(pair, data):
    """The fast rule is the usual case, not a path the data never takes: every sample without
    cuts of the real sets gets its labels from TokenStarts (and the earlier tests check them)."""
    from tunekit.data.tokens import token_ids

    real, tok, template = pair
    samples = []
    for messages in shared_conversations(data, 40):
        try:  # a template may refuse a conversation (test_ids_and_labels... checks which)
            samples += [s for s in template.build_samples(template.prepare(messages)) if not s.cuts]
        except TemplateError:
            continue
    labelled = [template._labels_at_token_starts(s, ids)
                for s, ids in zip(samples, token_ids(tok, [s.text for s in samples]))]
    assert all(labels is not None for labels in labelled), real.id
    assert samples or real.template == "deepseek_r1_distill_qwen.jinja"  # its opened <think> cuts every answer
