"""Building a prompt is linear in the conversation's length: where the template closes every earlier
answer itself (ChatTemplate.closes_history), only the last turn is placed, and the prompt is the
one the full, per-turn placement gives (training's rendering) on every built-in and real template."""

import pytest
from test_builtin_templates import CONVERSATIONS, TOOLS
from test_tools_reasoning import GLM4, TEMPLATES

from helpers import SHARED, fixed_clock
from tokenizers_util import build_tokenizer
from tunekit.data.templates import ChatTemplate, builtin_names, load_template


def real(name):
    special, bos, eos, _, _ = GLM4 if name == "glm4_6" else TEMPLATES[name]
    source = (SHARED / "templates" / f"{name}.jinja").read_text()
    return ChatTemplate(build_tokenizer(special, bos=bos, eos=eos, chat_template=source), source, name)


def builtin(name):
    return load_template(build_tokenizer([], bos="<s>", eos="</s>"), name)


TEMPLATES_UNDER_TEST = [pytest.param(lambda n=n: builtin(n), id=f"builtin-{n}") for n in builtin_names()] + [
    pytest.param(lambda n=n: real(n), id=f"real-{n}") for n in [*TEMPLATES, "glm4_6"]]
OPTIONS = ({}, {"enable_thinking": False})


def outcome(call, *args, **kwargs):
    """What a call gives, or the error it raises (a conversation the template cannot render)."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared, not hidden
        return type(exc), str(exc)


def placed_everywhere(template):
    """The same template with the shortcut off: every earlier turn placed, as before."""
    template.closes_history = lambda options=None: False
    return template


@pytest.mark.parametrize("make", TEMPLATES_UNDER_TEST)
def test_prompt_and_last_turn_training_equal_full_placement(make):
    fast, slow = make(), placed_everywhere(make())
    for kind, conversation in CONVERSATIONS.items():
        for options in OPTIONS:
            for end in (i for i, m in enumerate(conversation) if m["role"] == "assistant"):
                with fixed_clock():
                    for call in ("prompt", "build_samples"):
                        args = (conversation[:end], TOOLS) if call == "prompt" else (conversation[: end + 1], TOOLS)
                        extra = {} if call == "prompt" else {"last_only": True}
                        expected = outcome(getattr(slow, call), *args, options=options, **extra)
                        assert outcome(getattr(fast, call), *args, options=options, **extra) == expected, \
                            (call, kind, options, end)


@pytest.mark.parametrize("name", ["chatml", "qwen3", "llama3.1", "glm4", "mistral_small3"])
def test_a_long_conversation_renders_a_fixed_number_of_times(name, monkeypatch):
    template = builtin(name)
    assert template.closes_history()
    renders = []
    render = template.render
    monkeypatch.setattr(template, "render", lambda *a, **k: renders.append(1) or render(*a, **k))
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(2001)]
    with fixed_clock():
        text, ids = template.prompt(turns)
    assert "turn 2000" in text and len(ids) > 2000
    assert len(renders) <= 4  # the conversation, the last prompt, its probe: not one per turn


def test_a_template_that_leaves_earlier_answers_open_keeps_full_placement():
    template = builtin("alpaca")  # eos-style: training inserts eos after every answer
    assert not template.closes_history()
