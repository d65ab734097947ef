"""Tools and reasoning through the API with the official `openai` client, against a `tunekit
serve` process on a tiny model trained on tool calls (conftest.tool_run): tools -> call ->
tool result -> final answer, streamed and not; reasoning comes back apart from the content."""

import json

import openai
import pytest
from serve_helpers import REASONING_TURNS, WEATHER_ANSWER, WEATHER_QUESTIONS, WEATHER_RESULT, WEATHER_TOOL


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def model_id(server) -> str:
    return client(server).models.list().data[0].id


def streamed(server, **kwargs):
    """(content, reasoning, tool calls as dicts, finish_reason, chunks) assembled from the deltas."""
    content = reasoning = ""
    calls: dict[int, dict] = {}
    finish, count = None, 0
    for chunk in client(server).chat.completions.create(stream=True, **kwargs):
        count += 1
        choice = chunk.choices[0]
        delta = choice.delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or (delta.model_extra or {}).get("reasoning_content") or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.id or ""
            entry["name"] += call.function.name or ""
            entry["arguments"] += call.function.arguments or ""
        finish = choice.finish_reason or finish
    return content, reasoning, [calls[k] for k in sorted(calls)], finish, count


@pytest.mark.slow
def test_full_tool_round_trip_not_streamed(tool_server):
    model, api = model_id(tool_server), client(tool_server)
    messages = [{"role": "user", "content": WEATHER_QUESTIONS[0]}]
    first = api.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT}]
    final = api.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], temperature=0)
    assert final.choices[0].message.content == WEATHER_ANSWER and final.choices[0].finish_reason == "stop"
    assert not final.choices[0].message.tool_calls


@pytest.mark.slow
def test_full_tool_round_trip_streamed(tool_server):
    model = model_id(tool_server)
    messages = [{"role": "user", "content": WEATHER_QUESTIONS[1]}]
    content, _, calls, finish, _ = streamed(tool_server, model=model, messages=messages, tools=[WEATHER_TOOL])
    assert finish == "tool_calls" and content == "" and len(calls) == 1
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": calls[0]["id"], "type": "function",
                      "function": {"name": calls[0]["name"], "arguments": calls[0]["arguments"]}}]},
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": WEATHER_RESULT}]
    content, _, calls, finish, chunks = streamed(tool_server, model=model, messages=messages, tools=[WEATHER_TOOL])
    assert (content, calls, finish) == (WEATHER_ANSWER, [], "stop") and chunks > 3  # it came in pieces


@pytest.mark.slow
def test_tool_choice_none_and_named(tool_server):
    model, api = model_id(tool_server), client(tool_server)
    ask = [{"role": "user", "content": WEATHER_QUESTIONS[2]}]
    none = api.chat.completions.create(model=model, messages=ask, tools=[WEATHER_TOOL], tool_choice="none")
    assert not none.choices[0].message.tool_calls and none.choices[0].finish_reason != "tool_calls"
    named = api.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi there"}],
                                        tools=[WEATHER_TOOL],
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = named.choices[0].message.tool_calls[0]  # forced, even after a question the model answers in text
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
    with pytest.raises(openai.BadRequestError, match="not in tools"):
        api.chat.completions.create(model=model, messages=ask, tools=[WEATHER_TOOL],
                                    tool_choice={"type": "function", "function": {"name": "nope"}})


@pytest.mark.slow
def test_reasoning_comes_back_apart_streamed_and_not(tool_server):
    model, api = model_id(tool_server), client(tool_server)
    (q1, thought1, a1), (q2, thought2, a2) = REASONING_TURNS
    messages = [{"role": "user", "content": q1}]
    reply = api.chat.completions.create(model=model, messages=messages, temperature=0).choices[0].message
    assert reply.content == a1 and reply.model_extra["reasoning_content"] == thought1
    messages += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": q2}]
    content, reasoning, calls, finish, _ = streamed(tool_server, model=model, messages=messages)
    assert (content, reasoning, calls, finish) == (a2, thought2, [], "stop")


def test_run_records_how_its_calls_are_written_and_read(tool_run):
    template = json.loads((tool_run / "tunekit.json").read_text(encoding="utf-8"))["template"]
    assert (template["tool_format"], template["tool_calls"]) == ("hermes", "text")  # ChatML: no tool branch
