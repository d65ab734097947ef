"""Batched generation (infer/batching.py): answers served together equal answers served alone,
per adapter too; a cancelled answer frees its slot; a full queue says Busy; seeds hold in a batch."""

import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from serve_helpers import QUESTIONS, UNSEEN_QUESTION

from tunekit.infer.batching import BatchLimits, Busy, RequestTimeout
from tunekit.infer.engine import BASE, Engine
from tunekit.infer.params import GenerationParams
WEIGHTS = "adapter_model.safetensors"

GREEDY = GenerationParams(max_new_tokens=24)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def served_together(engine, requests: list[tuple[list[dict], str | None]], params=GREEDY) -> list[str]:
    generations = [engine.stream(messages, params, adapter) for messages, adapter in requests]
    for generation in generations:
        for _ in generation:
            pass
    return [g.reply.text for g in generations]


def random_adapter(run, folder, seed: int):
    """A copy of a LoRA run whose B matrices are random: an adapter that surely changes the answers."""
    shutil.copytree(run, folder)
    weights = load_file(folder / WEIGHTS)
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in weights.items():
        if "lora_B" in name:
            weights[name] = torch.randn(tensor.shape, generator=generator) * 0.3
    save_file(weights, folder / WEIGHTS)
    return folder


@pytest.fixture(scope="module")
def two_adapters(brief_run, tiny_lora_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    paths = [random_adapter(tiny_lora_run, folder / name, seed) for name, seed in (("left", 1), ("right", 2))]
    with Engine.load(str(brief_run), adapters=[str(p) for p in paths]) as engine:
        yield engine


def test_greedy_answers_served_together_equal_answers_served_alone(engine):
    """A trained model (clear top-2 logit gaps): batching must not change a single token. Prompts of
    different lengths join one left-padded batch; the lone answer also comes from transformers' generate."""
    questions = [*QUESTIONS, UNSEEN_QUESTION, "a much longer question that pads every other row " * 3]
    alone = [engine.chat(ask(q), GREEDY, BASE).text for q in questions]
    assert served_together(engine, [(ask(q), BASE) for q in questions]) == alone
    prompt, variant = engine.encode(ask(questions[-1]), BASE), engine.variant(BASE)
    tokens = []
    engine.scheduler.run(engine.backend.generate, prompt, GREEDY, variant.stop_token_ids, None,
                         lambda t: tokens.append(t) or t not in variant.stop_token_ids)
    assert engine.tokenizer.decode([t for t in tokens if t not in variant.stop_token_ids],
                                   skip_special_tokens=True) == alone[-1]


def test_two_adapters_served_concurrently_give_each_its_own_answers(two_adapters):
    engine = two_adapters
    questions = QUESTIONS[:4]
    requests = [(ask(q), name) for q in questions for name in ("left", "right", BASE)]
    alone = [engine.chat(messages, GREEDY, name).text for messages, name in requests]
    assert served_together(engine, requests) == alone
    by_adapter = {name: [a for (_, n), a in zip(requests, alone) if n == name] for name in ("left", "right", BASE)}
    assert by_adapter["left"] != by_adapter["right"] != by_adapter[BASE]  # the adapters really differ


def test_seeded_sampling_does_not_depend_on_the_neighbours(engine):
    params = GenerationParams(max_new_tokens=12, temperature=1.5, top_p=0.95, top_k=50, seed=7,
                              repetition_penalty=1.3)
    alone = engine.chat(ask(UNSEEN_QUESTION), params, BASE).text
    others = GenerationParams(max_new_tokens=12, temperature=1.0, seed=1)
    together = [engine.stream(ask(UNSEEN_QUESTION), params, BASE), engine.stream(ask("你好"), others, BASE)]
    texts = ["".join(g) for g in together]
    assert texts[0] == alone


@pytest.fixture(scope="module")
def one_slot(tiny_model_dir):
    """The random tiny model (it never says end-of-turn) with one running slot and one waiting."""
    with Engine.load(str(tiny_model_dir), limits=BatchLimits(max_running=1, max_queued=1)) as engine:
        yield engine


def wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_cancelled_answer_frees_its_slot_and_a_full_queue_says_busy(one_slot):
    long = GenerationParams(max_new_tokens=1500)
    first = one_slot.stream(ask("hello"), long)
    next(first)  # running now
    second = one_slot.stream(ask("hi"), GenerationParams(max_new_tokens=3))
    assert wait_for(lambda: one_slot.scheduler.queued == 1)
    with pytest.raises(Busy, match="waiting"):
        one_slot.stream(ask("and me?"), GenerationParams(max_new_tokens=3))
    first.close()
    assert "".join(second) is not None and second.reply.completion_tokens == 3
    assert len(first.token_times) < long.max_new_tokens  # it stopped at the cancel, not at its end
    assert wait_for(lambda: one_slot.scheduler.running == 0 and one_slot.scheduler.queued == 0)


def test_an_answer_past_the_time_limit_ends_with_request_timeout(tiny_model_dir):
    with Engine.load(str(tiny_model_dir), limits=BatchLimits(timeout_s=0.3)) as engine:
        generation = engine.stream(ask("hello"), GenerationParams(max_new_tokens=2000))
        with pytest.raises(RequestTimeout, match="time limit"):
            for _ in generation:
                pass
        assert len(generation.token_times) < 2000
        assert wait_for(lambda: engine.scheduler.running == 0)
