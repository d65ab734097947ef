"""Parsing model output back: each family reads the calls it writes, reasoning comes apart,
malformed calls stay text with a warning, and the streaming splitter agrees with the parse."""

import pytest

from tunekit.data.records import tool_call
from tunekit.infer.parsers import FAMILIES, Splitter, family_for, family_named

CALLS = [tool_call("get_weather", {"city": "北京", "days": 2}), tool_call("add", {"a": 1, "b": [2, 3]})]


def plain(calls):
    return [(c["function"]["name"], c["function"]["arguments"]) for c in calls]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_each_family_reads_back_what_it_writes(family):
    calls = CALLS[:1] if family.name == "llama3" else CALLS
    text = "<think>\nlet me see\n</think>\n\n" + family.calls_text(calls)
    if family.name == "mistral":
        text = text.replace("\n\n", "\n\n[TOOL_CALLS]", 1)  # the template writes the marker itself
    parsed = family.parse(text)
    assert plain(parsed.tool_calls) == plain(calls) and parsed.reasoning == "let me see"
    assert parsed.content == "" and parsed.warnings == []
    assert all(c["id"].startswith("call_") for c in parsed.tool_calls)


def test_family_is_chosen_from_the_template_markup():
    assert family_for("... <tool_call> ...").name == "hermes"
    assert family_for("{{ '[TOOL_CALLS]' }}").name == "mistral"
    assert family_for("<|start_header_id|>ipython").name == "llama3"
    assert family_for("<｜tool▁calls▁begin｜>").name == "deepseek"
    assert family_for("<tool_call>{{ name }}<arg_key>").name == "glm"
    assert family_for("{{ message.content }}").name == "hermes"  # the default text form
    assert family_named("glm").name == "glm"


@pytest.mark.parametrize("text,kept", [
    ('<tool_call>\n{"name": "f", "arguments": {"x": 1}\n</tool_call>', "<tool_call>"),  # broken JSON
    ('<tool_call>\n{"arguments": {}}\n</tool_call>', "<tool_call>"),  # no name
    ('<tool_call>\n{"name": "f", "argu', "<tool_call>"),  # cut off by max_tokens
])
def test_malformed_calls_come_back_as_text_with_a_warning(text, kept):
    parsed = family_named("hermes").parse("Sure. " + text)
    assert parsed.tool_calls == [] and parsed.content.startswith("Sure. " + kept)
    assert len(parsed.warnings) == 1 and "malformed" in parsed.warnings[0]


def test_good_and_bad_calls_together_keep_the_good_one():
    text = ('<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n'
            '<tool_call>\n{"name": "g", "arguments": oops}\n</tool_call>')
    parsed = family_named("hermes").parse(text)
    assert plain(parsed.tool_calls) == [("f", {"x": 1})] and "oops" in parsed.content and parsed.warnings


def test_llama3_json_and_mistral_marker_edge_cases():
    llama = family_named("llama3")
    assert plain(llama.parse('<|python_tag|>{"name": "f", "parameters": {"q": "x"}}').tool_calls) == [("f", {"q": "x"})]
    assert llama.parse("{not json").tool_calls == [] and llama.parse("{not json").warnings
    assert llama.parse("Just text.").content == "Just text."
    mistral = family_named("mistral")
    assert mistral.parse("[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}]").tool_calls[0]["function"]["name"] == "f"
    assert mistral.parse("[TOOL_CALLS]{broken").warnings


def test_reasoning_when_the_prompt_opened_think_and_when_cut_off():
    hermes = family_named("hermes")
    opened = hermes.parse("weighing it\n</think>\n\nParis.", thinking=True)
    assert (opened.reasoning, opened.content) == ("weighing it", "Paris.")
    cut = hermes.parse("<think>\nstill thinking")
    assert (cut.reasoning, cut.content) == ("still thinking", "")
    assert hermes.parse("no reasoning here").reasoning is None


@pytest.mark.parametrize("text", [
    "<think>\nstep one, step two\n</think>\n\nThe answer is 4.",
    "<think>\nneed a tool\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "Plain answer with a < sign and </think-like text",
])
def test_streaming_splitter_agrees_with_the_whole_parse(text):
    family = family_named("hermes")
    splitter = Splitter(family)
    pieces = [splitter.push(text[k: k + 3]) for k in range(0, len(text), 3)]
    parsed, rest = splitter.finish()
    streamed = {"reasoning": "", "content": ""}
    for kind, piece in [p for group in pieces for p in group] + rest:
        streamed[kind] += piece
    whole = family.parse(text)
    assert streamed == {"reasoning": whole.reasoning or "", "content": whole.content}
    assert plain(parsed.tool_calls) == plain(whole.tool_calls)
    assert "<tool_call>" not in streamed["content"]  # calls never leak into the streamed text
