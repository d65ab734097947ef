"""The engine: prompts rendered as in training, answers that stop at the run's end of turn,
streaming that never splits a character or shows a stop token, stop strings, batching,
adapters, and concurrent callers."""

import importlib.util
import threading

import pytest
from serve_helpers import BRIEF_ANSWER, QUESTIONS, UNSEEN_QUESTION

from tunekit.data.records import Conversation
from tunekit.errors import TunekitError
from tunekit.infer.answer import Answer
from tunekit.infer.engine import BASE, Engine, PromptTooLong
from tunekit.infer.params import GenerationParams, InvalidParams
from tunekit.rundir import read_run

GREEDY = GenerationParams(max_new_tokens=64)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_answer_stops_at_the_runs_end_of_turn_token(engine, brief_run):
    reply = engine.chat(ask(UNSEEN_QUESTION), GREEDY)
    assert reply.text == BRIEF_ANSWER
    assert reply.finish_reason == "stop"
    answer_tokens = len(engine.tokenizer(BRIEF_ANSWER, add_special_tokens=False)["input_ids"])
    assert reply.completion_tokens == answer_tokens + 1  # the answer and the end-of-turn token
    assert reply.completion_tokens < GREEDY.max_new_tokens // 4
    assert engine.variant(None).stop_token_ids[0] == read_run(brief_run).stop_token_ids[0]


def test_prompt_is_the_training_render_cut_before_the_answer(engine):
    messages = [{"role": "system", "content": "简短回答"}, *ask("你好"), {"role": "assistant", "content": "好的"},
                *ask("再来")]
    trained = engine.template.encode(Conversation(messages + [{"role": "assistant", "content": BRIEF_ANSWER}]))
    prompt = engine.encode(messages)
    assert trained.input_ids[: len(prompt)] == prompt
    assert trained.labels[len(prompt) - 1] == -100 and trained.labels[len(prompt)] != -100


def test_stream_pieces_make_the_reply_and_never_show_the_stop_token(engine):
    pieces = list(engine.stream(ask("你好"), GREEDY))
    assert "".join(pieces) == engine.chat(ask("你好"), GREEDY).text == BRIEF_ANSWER
    assert len(pieces) > 1
    assert not any(engine.template.eot_text in p for p in pieces)


def test_multibyte_characters_are_never_split_across_increments(engine):
    text = "龘齉"  # rare characters: several byte-level tokens each
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)
    answer = Answer(engine.tokenizer, stop_token_ids=[], stop_strings=[], max_new_tokens=100)
    pieces = [answer.push(t) for t in ids] + [answer.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_cuts_at_its_first_occurrence_across_increments(engine):
    reply = engine.chat(ask("你好"), GenerationParams(max_new_tokens=64, stop=["明白"]))
    assert (reply.text, reply.finish_reason) == ("好的，", "stop")
    pieces = list(engine.stream(ask("你好"), GenerationParams(max_new_tokens=64, stop=["，明", "了。"])))
    assert "".join(pieces) == "好的"


def test_max_new_tokens_ends_with_length(engine):
    reply = engine.chat(ask("你好"), GenerationParams(max_new_tokens=3))
    assert (reply.completion_tokens, reply.finish_reason) == (3, "length")
    assert reply.text and BRIEF_ANSWER.startswith(reply.text) and reply.text != BRIEF_ANSWER


def test_batch_is_left_padded_and_matches_single_answers(engine):
    conversations = [ask(q) for q in (QUESTIONS[0], "一个比较长的问题，用来让提示的长度各不相同，需要左侧填充", "ok")]
    batch = engine.batch(conversations, GREEDY, batch_size=2)
    single = [engine.chat(c, GREEDY) for c in conversations]
    assert batch == single
    assert len({r.prompt_tokens for r in batch}) == 3


def test_sampling_with_a_seed_repeats(engine):
    params = GenerationParams(max_new_tokens=12, temperature=1.5, top_k=50, top_p=0.95, seed=7)
    first = engine.chat(ask("你好"), params, adapter=BASE)
    assert engine.chat(ask("你好"), params, adapter=BASE) == first


def test_concurrent_callers_each_get_their_own_answer(engine):
    expected = {q: engine.chat(ask(q), GREEDY).text for q in QUESTIONS[:4]}
    got = {}

    def call(question):
        got[question] = "".join(engine.stream(ask(question), GREEDY))

    threads = [threading.Thread(target=call, args=(q,)) for q in expected]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    assert got == expected


def test_adapters_are_named_and_base_is_the_model_alone(engine, tiny_lora_run, brief_run):
    assert engine.adapter_names == ["lora"]
    assert engine.default_adapter == BASE  # a full run: the model itself unless an adapter is chosen
    with_adapter = engine.chat(ask("你好"), GREEDY, adapter="lora")
    assert engine.chat(ask("你好"), GREEDY, adapter=BASE).text == BRIEF_ANSWER
    assert with_adapter.prompt_tokens > 0
    with pytest.raises(TunekitError, match="adapter 'nope' is not loaded; choose one of base, lora"):
        engine.chat(ask("你好"), GREEDY, adapter="nope")


def test_lora_run_answers_with_its_adapter_and_base_without(tiny_lora_run, tiny_model_dir):
    with Engine.load(str(tiny_lora_run)) as tuned, Engine.load(str(tiny_model_dir)) as plain:
        assert tuned.default_adapter == "lora"
        recorded = read_run(tiny_lora_run).stop_token_ids
        assert tuned.variant(None).stop_token_ids[: len(recorded)] == recorded
        params = GenerationParams(max_new_tokens=8)
        assert tuned.chat(ask("你好"), params, adapter=BASE) == plain.chat(ask("你好"), params)


def test_bad_requests_raise_clear_errors(engine, tmp_path):
    with pytest.raises(InvalidParams, match=r"temperature must be in \[0.0, 2.0\], got 3"):
        engine.stream(ask("hi"), GenerationParams(temperature=3))
    with pytest.raises(InvalidParams, match="max_new_tokens must be an integer"):
        engine.chat(ask("hi"), GenerationParams(max_new_tokens=1.5))
    with pytest.raises(PromptTooLong, match="model's context holds 2048"):
        engine.stream(ask("字 " * 3000), GREEDY)
    with pytest.raises(TunekitError, match="neither a run directory"):
        Engine.load(str(tmp_path))
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(TunekitError, match=r"pip install 'tunekit\[vllm\]'"):
            Engine.load(str(tmp_path), backend="vllm")
