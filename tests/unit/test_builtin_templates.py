"""The built-in templates (assets/templates) render as the models' own templates do.

Where ../shared/templates holds the real template, both render the same conversations (plain,
with and without system, multi-turn, tool definitions, calls, tool results, reasoning as a field and
inline, every prefix with and without the generation prompt, the template's switches) and must give
the same text; through tunekit's ChatTemplate they give the same ids and labels. The clock is fixed
(helpers.fixed_clock) for templates that print today's date. Where no real template is here
(Qwen2.5, Gemma, DeepSeek-V3), the expected text is the official output for a known conversation,
written out in the test.
"""

import copy
import json

import pytest
from test_templates import labelled_runs
from test_tools_reasoning import expected_glm_samples

from helpers import ASSETS, SHARED, fixed_clock, render_template
from tokenizers_util import build_tokenizer
from tunekit.data.records import Conversation
from tunekit.data.templates import (BUILTIN_SPECIAL_TOKENS, ChatTemplate, builtin_names, builtin_source,
                                    load_template)

REAL = SHARED / "templates"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def call(city, n):
    return {"type": "function", "id": f"call0000{n}", "function": {"name": "get_weather", "arguments": {"city": city}}}


def user(text):
    return {"role": "user", "content": text}


def answer(text, **fields):
    return {"role": "assistant", "content": text, **fields}


def system(text):
    return {"role": "system", "content": text}


def result(text, n=1):
    return {"role": "tool", "content": text, "tool_call_id": f"call0000{n}"}


CONVERSATIONS = {
    "plain": [user("Hi"), answer("Hello!")],
    "system": [system("You are a fox."), user("Hi"), answer("Hello!")],
    "multi": [user("What is the capital of France?"), answer("Paris."), user("你好，北京是哪里？"), answer("北京是中国的首都。")],
    "system_multi": [system("Be brief."), user("Q1"), answer("A1"), user("Q2"), answer("A2")],
    "tool": [user("Weather in Paris?"), answer("", tool_calls=[call("Paris", 1)]), result('{"temp": 21}'),
             answer("It is 21 degrees.")],
    "tool_system": [system("Be brief."), user("Weather in Paris?"), answer("", tool_calls=[call("Paris", 1)]),
                    result('{"temp": 21}'), answer("21 degrees.")],
    "tool_with_text": [user("Weather in Paris?"), answer("Let me check.", tool_calls=[call("Paris", 1)]),
                       result('{"temp": 21}'), answer("21.")],
    "two_calls": [user("Paris and Beijing?"), answer("", tool_calls=[call("Paris", 1), call("北京", 2)]),
                  result('{"temp": 21}'), result('{"temp": 30}', 2), answer("21 and 30.")],
    "reasoning": [user("Q1"), answer("A1", reasoning_content="think 1"), user("Q2"),
                  answer("A2", reasoning_content="think 2")],
    "inline_think": [user("Q1"), answer("<think>\nt1\n</think>\n\nA1"), user("Q2"), answer("<think>t2</think>A2")],
    "two_answers": [user("Q1"), answer("A1", reasoning_content="r1"), answer("A1b", reasoning_content="r1b"),
                    user("Q2"), answer("A2", reasoning_content="r2")],
    "tool_reasoning": [user("Weather?"), answer("", reasoning_content="need a tool", tool_calls=[call("Paris", 1)]),
                       result("21"), answer("21.", reasoning_content="got it")],
}
ALL = list(CONVERSATIONS)
THINKING = ({}, {"enable_thinking": False}, {"enable_thinking": True})


def as_distill_expects(messages):
    """DeepSeek-R1-Distill's template joins arguments as strings and writes content=None calls only."""
    messages = copy.deepcopy(messages)
    for m in messages:
        for c in m.get("tool_calls") or []:
            c["function"]["arguments"] = json.dumps(c["function"]["arguments"], ensure_ascii=False)
        if m.get("tool_calls") and not m["content"]:
            m["content"] = None
    return messages


def same(messages):
    return messages


# (built-in, real template, conversations, switches, tools definitions?, every prefix?, messages as the
# real template takes them)
PAIRS = [
    ("qwen3", "qwen3", ALL, THINKING, True, True, same),
    ("llama3.1", "llama3_3_70b", [c for c in ALL if c != "two_calls"],  # both refuse two calls at once
     ({}, {"tools_in_user_message": False}, {"date_string": "01 Jan 2025"}), True, True, same),
    ("llama3.1", "llama3_2", [c for c in ALL if c != "two_calls"], ({},), True, True, same),
    ("glm4", "glm4_6", ALL, THINKING, True, True, same),
    # The distill template writes a call's text as a second answer and ignores tool definitions.
    ("deepseek_r1", "deepseek_r1_distill_qwen", [c for c in ALL if c != "tool_with_text"], ({},), False, True,
     as_distill_expects),
    # vLLM's R1 example opens no <think> and writes stray indentation around calls: compared on whole
    # conversations without calls, where the tool definitions in its system prompt show.
    ("deepseek_r1", "deepseek_r1", ["plain", "system", "multi", "system_multi", "reasoning", "inline_think"],
     ({},), True, False, same),
    ("mistral_small3", "mistral_small_3_1", ALL, ({},), True, True, same),
]


def renders(pair, kind):
    """(ours, real, label) for every prefix of the conversation, with and without generation prompt,
    tools and switches."""
    ours, real, _, switches, with_tools, prefixes, adapt = pair
    messages = adapt(CONVERSATIONS[kind])
    ends = range(1, len(messages) + 1) if prefixes else [len(messages)]
    tools_choices = [None, TOOLS] if with_tools else [None]
    ours_src, real_src = builtin_source(ours), (REAL / f"{real}.jinja").read_text()
    for end in ends:
        for gen in ([False, True] if prefixes else [False]):
            for options in switches:
                for tools in tools_choices:
                    kwargs = dict(bos_token="<s>", eos_token="</s>", **options)
                    yield (render_template(ours_src, messages[:end], tools, gen, **kwargs),
                           render_template(real_src, messages[:end], tools, gen, **kwargs),
                           f"{kind}[:{end}] generation_prompt={gen} tools={bool(tools)} {options}")


CASES = [pytest.param(pair, kind, id=f"{pair[0]}~{pair[1]}-{kind}") for pair in PAIRS for kind in pair[2]]


@pytest.mark.parametrize("pair,kind", CASES)
def test_renders_as_the_real_template(pair, kind):
    checked = 0
    for ours, real, label in renders(pair, kind):
        assert ours == real, label
        checked += ours != "raised"
    assert checked  # not only refusals


def test_chatml_renders_as_the_real_one_where_that_closes_turns():
    """../shared's chatml leaves the last message open without a generation prompt (tunekit closes it
    with <|im_end|> when it trains, so the trained ids are the same); everything else is the same text."""
    ours, real = builtin_source("chatml"), (REAL / "chatml.jinja").read_text()
    for kind in ("plain", "system", "multi", "system_multi"):
        messages = CONVERSATIONS[kind]
        for end in range(1, len(messages) + 1):
            if messages[end - 1]["role"] != "assistant":  # the real one opens no answer after an answer
                assert render_template(ours, messages[:end], add_generation_prompt=True) == \
                    render_template(real, messages[:end], add_generation_prompt=True)
            assert render_template(ours, messages[:end]) == render_template(real, messages[:end]) + "<|im_end|>\n"
        tok = build_tokenizer(BUILTIN_SPECIAL_TOKENS["chatml"], eos="</s>")
        mine, theirs = (ChatTemplate(tok, source).encode(Conversation(messages)) for source in (ours, real))
        assert mine.input_ids[: len(theirs.input_ids)] == theirs.input_ids  # ours adds the last "\n"
        assert mine.labels[: len(theirs.labels)] == theirs.labels and set(mine.labels[len(theirs.labels):]) <= {-100}


@pytest.mark.parametrize("name,date", [("llama3.1", "Today Date: 01 Jan 2025"),
                                       ("mistral_small3", "The current date is 2025-01-01.")])
def test_the_date_is_an_option_never_the_clock(name, date):
    """The real templates print today's date (strftime_now); the built-ins print `date_string` or a fixed
    day, so a training text does not change from one day to the next."""
    source = builtin_source(name)
    day = "01 Jan 2025" if name == "llama3.1" else "2025-01-01"
    tokens = {"bos_token": "<s>", "eos_token": "</s>"}
    assert date in render_template(source, CONVERSATIONS["plain"], date_string=day, **tokens)
    assert render_template(source, CONVERSATIONS["plain"], **tokens) == render_template(
        source, CONVERSATIONS["plain"], date_string="26 Jul 2024" if name == "llama3.1" else "2024-07-26", **tokens)


# -- ids and labels through ChatTemplate ------------------------------------------------------------
def encoded(source, name, tok, kind, adapt, with_tools, options):
    template = ChatTemplate(tok, source, name, options=options)
    conv = Conversation(adapt(CONVERSATIONS[kind]), tools=TOOLS if with_tools else None)
    with fixed_clock():
        samples = template.encode_samples(conv)
        prompt = template.encode_prompt(conv.messages[:-1], tools=conv.tools)
    return template, [(s.input_ids, s.labels) for s in samples], prompt


ENCODE_CASES = [("qwen3", "qwen3", ["multi", "tool", "two_calls", "reasoning", "tool_reasoning"], {}),
                ("qwen3", "qwen3", ["multi", "tool"], {"enable_thinking": False}),
                ("llama3.1", "llama3_3_70b", ["system_multi", "tool", "tool_system"], {}),
                ("llama3.1", "llama3_2", ["multi", "tool"], {}),
                ("glm4", "glm4_6", ["system_multi", "tool", "two_calls", "reasoning", "tool_reasoning"], {}),
                ("deepseek_r1", "deepseek_r1_distill_qwen", ["multi", "tool", "inline_think"], {}),
                ("mistral_small3", "mistral_small_3_1", ["multi", "tool", "two_calls", "system"], {})]


@pytest.mark.parametrize("ours,real,kinds,options", ENCODE_CASES, ids=[f"{o}~{r}-{opts or ''}" for o, r, _, opts in
                                                                       ENCODE_CASES])
def test_ids_and_labels_equal_the_real_template_s(ours, real, kinds, options):
    tok = build_tokenizer(BUILTIN_SPECIAL_TOKENS[ours], bos="<s>", eos="</s>")
    pair = next((p for p in PAIRS if p[:2] == (ours, real)), (ours, real, [], [], False, True, same))
    for kind in kinds:
        mine, mine_ids, mine_prompt = encoded(builtin_source(ours), ours, tok, kind, pair[6], pair[4], options)
        theirs, their_ids, their_prompt = encoded((REAL / f"{real}.jinja").read_text(), real, tok, kind, pair[6],
                                                  pair[4], options)
        assert (mine.eot_text, mine.family.name, mine.stop_token_ids) == \
            (theirs.eot_text, theirs.family.name, theirs.stop_token_ids)
        assert mine_ids == their_ids, kind
        assert mine_prompt == their_prompt, kind
        assert all(any(label != -100 for label in labels) for _, labels in mine_ids)


@pytest.mark.parametrize("kind", ["system_multi", "tool", "two_calls", "reasoning", "tool_reasoning", "two_answers"])
def test_glm4_ids_are_apply_chat_template_s_with_each_answer_and_its_next_role_tag_trained(kind):
    """GLM closes no turn: ids equal the built-in's apply_chat_template (the closing tag appended where a
    sample ends on an answer), labels each answer plus the one role tag after it, prompts exactly."""
    tok = build_tokenizer(BUILTIN_SPECIAL_TOKENS["glm4"], eos="</s>", chat_template=builtin_source("glm4"))
    template = load_template(tok, "glm4")
    assert tok.convert_ids_to_tokens(template.stop_token_ids) == ["<|user|>", "<|observation|>", "</s>"]
    conv = CONVERSATIONS[kind]
    samples = template.encode_samples(Conversation(conv, tools=TOOLS))
    assert [(enc.input_ids, enc.labels) for enc in samples] == expected_glm_samples(tok, conv, TOOLS)
    assert template.encode_prompt(conv[:-1], tools=TOOLS) == tok.apply_chat_template(
        conv[:-1], tools=TOOLS, add_generation_prompt=True, tokenize=True)["input_ids"]


# -- no real template here: the official output, written out ----------------------------------------
QWEN25_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN25_TOOLS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function "
    "signatures within <tools></tools> XML tags:\n<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>\n\nFor each "
    "function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:"
    '\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n')


def test_qwen25_writes_its_default_system_prompt_and_tool_calls():
    """Qwen2.5-Instruct's documented output (its tokenizer_config.json template, as apply_chat_template
    renders it): the default system prompt when none is given, tools after it, calls as <tool_call> JSON,
    results as <tool_response> in a user turn."""
    source = builtin_source("qwen2.5")
    assert render_template(source, CONVERSATIONS["plain"], add_generation_prompt=True) == (
        f"<|im_start|>system\n{QWEN25_DEFAULT}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n")
    assert render_template(source, CONVERSATIONS["system"]).startswith("<|im_start|>system\nYou are a fox.<|im_end|>\n")
    assert render_template(source, CONVERSATIONS["tool_with_text"], TOOLS) == (
        f"<|im_start|>system\n{QWEN25_DEFAULT}\n\n{QWEN25_TOOLS}"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\nLet me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n21.<|im_end|>\n")
    two = render_template(source, CONVERSATIONS["two_calls"])
    assert ("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
            "</tool_call>\n<tool_call>\n") in two
    assert "<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\n" in two


def test_gemma_folds_the_system_prompt_into_the_first_question():
    """Gemma 3's documented output: <bos><start_of_turn>user\\nSYSTEM\\n\\nQUESTION<end_of_turn>\\n
    <start_of_turn>model\\n... (no system role; content trimmed; every turn closed by <end_of_turn>)."""
    source = builtin_source("gemma")
    assert render_template(source, [system("Be helpful."), user("Hello")], add_generation_prompt=True,
                           bos_token="<bos>") == \
        "<bos><start_of_turn>user\nBe helpful.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
    assert render_template(source, CONVERSATIONS["multi"], bos_token="<bos>") == (
        "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\nParis."
        "<end_of_turn>\n<start_of_turn>user\n你好，北京是哪里？<end_of_turn>\n<start_of_turn>model\n北京是中国的首都。"
        "<end_of_turn>\n")


def test_deepseek_v3_is_r1_without_reasoning():
    """DeepSeek-V3's documented output: <｜begin▁of▁sentence｜>SYSTEM<｜User｜>Q<｜Assistant｜>A<｜end▁of▁sentence｜>,
    a generation prompt of <｜Assistant｜> alone, and answers written as given (R1 strips <think> and opens it)."""
    v3 = builtin_source("deepseek_v3")
    bos = "<｜begin▁of▁sentence｜>"
    assert render_template(v3, CONVERSATIONS["system_multi"], add_generation_prompt=True, bos_token=bos) == (
        f"{bos}Be brief.<｜User｜>Q1<｜Assistant｜>A1<｜end▁of▁sentence｜><｜User｜>Q2<｜Assistant｜>A2"
        "<｜end▁of▁sentence｜><｜Assistant｜>")
    think = [user("Q"), answer("<think>x</think>A")]
    assert render_template(v3, think) == "<｜User｜>Q<｜Assistant｜><think>x</think>A<｜end▁of▁sentence｜>"
    assert render_template(builtin_source("deepseek_r1"), think) == "<｜User｜>Q<｜Assistant｜>A<｜end▁of▁sentence｜>"
    tool = render_template(v3, as_distill_expects(CONVERSATIONS["tool"]))
    assert tool == render_template((REAL / "deepseek_r1_distill_qwen.jinja").read_text(),
                                   as_distill_expects(CONVERSATIONS["tool"]))


# -- every built-in on a tokenizer that lacks its tokens --------------------------------------------
NEW = {"qwen2.5": "<|im_end|>", "qwen3": "<|im_end|>", "llama3.1": "<|eot_id|>", "glm4": "<|user|>",
       "deepseek_r1": "<｜end▁of▁sentence｜>", "deepseek_v3": "<｜end▁of▁sentence｜>", "mistral_small3": "</s>",
       "gemma": "<end_of_turn>"}
AFTER_CALLS = {"glm4": "<|observation|>"}  # GLM ends a turn with the next role tag: a tool result's after calls


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_builtins_add_their_tokens_and_train_answers_calls_and_end_of_turn(name):
    tok = build_tokenizer([], bos="<s>", eos="</s>")
    template = load_template(tok, name)
    assert set(BUILTIN_SPECIAL_TOKENS[name]) <= set(tok.get_vocab())
    assert template.eot_text == NEW[name]
    for kind in ("multi", "tool"):
        conv = Conversation(CONVERSATIONS[kind], tools=TOOLS)
        with fixed_clock():
            runs = [tok.decode(r) for enc in template.encode_samples(conv) for r in labelled_runs(enc.input_ids, enc.labels)]
        answers = [m for m in conv.messages if m["role"] == "assistant"]
        assert len(runs) == len(answers)
        for run, message in zip(runs, answers):
            end = AFTER_CALLS.get(name, NEW[name]) if message.get("tool_calls") else NEW[name]
            assert run.endswith(end), run
            assert message["content"] in run
            if message.get("tool_calls"):
                assert template.family.parse(run.removesuffix(end)).tool_calls[0]["function"] == \
                    message["tool_calls"][0]["function"]
        assert not any("21" in run and "temp" in run for run in runs)  # tool results are not trained


def test_every_template_file_is_a_registered_builtin():
    assert sorted(p.stem for p in (ASSETS / "templates").glob("*.jinja")) == builtin_names()


# -- tunekit templates ------------------------------------------------------------------------------
def test_templates_command_lists_each_builtin_with_its_formats(capsys):
    from tunekit.cli import main

    assert main(["templates"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines if line and not line.startswith(" ")}
    assert set(builtin_names()) <= set(rows)
    expected = {"qwen3": ("<|im_end|>", "hermes", "<think>; stripped from history; enable_thinking"),
                "qwen2.5": ("<|im_end|>", "hermes", "-"),
                "llama3.1": ("<|eot_id|>", "llama3", "-"),
                "glm4": ("next role tag: <|user|> or <|observation|>", "glm",
                         "<think>; stripped from history; enable_thinking"),
                "chatglm3": ("next role tag: <|user|> or <|observation|>", "hermes (as text)", "-"),
                "baichuan2": ("eos", "hermes (as text)", "-"),
                "deepseek_r1": ("<｜end▁of▁sentence｜>", "deepseek", "<think>, opened by the prompt; stripped from history"),
                "mistral_small3": ("eos", "mistral", "-"),
                "gemma": ("<end_of_turn>", "hermes (as text)", "-")}
    for name, (eot, tools, reasoning) in expected.items():
        cells = [c.strip() for c in rows[name].split("  ") if c.strip()]
        assert cells == [name, eot, tools, reasoning], rows[name]
    tokens = lines[lines.index(rows["gemma"]) + 1]
    assert tokens.split() == ["tokens:", "<start_of_turn>", "<end_of_turn>"]


def test_templates_command_prints_a_source_and_refuses_an_unknown_name(capsys):
    from tunekit.cli import main

    assert main(["templates", "qwen3"]) == 0
    assert capsys.readouterr().out == builtin_source("qwen3")
    assert main(["templates", "qwen4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no built-in template 'qwen4': choose one of") and "Traceback" not in err
