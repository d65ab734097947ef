"""Tool calls and reasoning through the real templates of ../shared/templates.

Each assistant turn is trained under exactly the prompt apply_chat_template gives for that
turn (history + generation prompt), its labels are the template's own markup for the answer
(calls, reasoning) plus end-of-turn, and tool results are never trained. Tokenizers are tiny
ones that carry each template's special tokens.
"""

import json

import pytest
from test_templates import SHARED, labelled_runs

from tokenizers_util import build_tokenizer
from tunekit.data.formats import load_one
from tunekit.config import DatasetSpec
from tunekit.data.records import Conversation
from tunekit.data.templates import IGNORE_INDEX, ChatTemplate, builtin_source

CHATML = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
          "<tool_response>", "</tool_response>"]
LLAMA3 = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"]
DEEPSEEK = ["<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
            "<｜tool▁call▁end｜>", "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>",
            "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>"]
MISTRAL = ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
           "[/TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[ARGS]", "[CALL_ID]"]
GLM = ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<think>", "</think>",
       "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>",
       "<tool_response>", "</tool_response>"]

# template -> (special tokens, bos, eos, end-of-turn text, tool-call family)
TEMPLATES = {
    "qwen3": (CHATML, None, "<|im_end|>", "<|im_end|>", "hermes"),
    "llama3_3_70b": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", "llama3"),
    "llama3_2": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", "llama3"),
    "deepseek_r1": (DEEPSEEK, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "deepseek"),
    "deepseek_r1_distill_qwen": (DEEPSEEK, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                                 "<｜end▁of▁sentence｜>", "deepseek"),
    "mistral_tools": (MISTRAL, "<s>", "</s>", " </s>", "mistral"),
    "mistral_small_3_1": (MISTRAL, "<s>", "</s>", "</s>", "mistral"),
}
# GLM-4 closes no turn: the model ends an answer by emitting the next role tag, <|user|> after an
# answer, <|observation|> after a call (GLM-4.6's generation_config stops on both and on eos).
# Its ids are apply_chat_template's, with that tag appended where a sample ends on an answer.
GLM4 = (GLM, None, "<|endoftext|>", "<|user|>", "glm")

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = {"type": "function", "id": "call00001", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
TOOL_CONV = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call00001"},
    {"role": "assistant", "content": "It is 21 degrees in Paris."},
]
REASONING_CONV = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris.", "reasoning_content": "France's capital is Paris."},
    {"role": "user", "content": "你好，北京是哪里？"},
    {"role": "assistant", "content": "北京是中国的首都。", "reasoning_content": "北京是首都。"},
]


def make(name, **options):
    special, bos, eos, _, _ = TEMPLATES[name]
    source = (SHARED / f"{name}.jinja").read_text()
    tok = build_tokenizer(special, bos=bos, eos=eos, chat_template=source)
    return tok, ChatTemplate(tok, source, name, options=options)


def run_starts(labels):
    return [k for k, lab in enumerate(labels) if lab != IGNORE_INDEX and (k == 0 or labels[k - 1] == IGNORE_INDEX)]


def trained_under_inference_prompt(tok, template, messages, tools, i, before):
    """The ids before answer i are apply_chat_template(history, add_generation_prompt=True); or, for a
    template whose generation prompt is not how it writes that turn (deepseek_r1 after a tool result
    differs in whitespace), the text its own render of the turn puts before the answer."""
    def render(upto, gen=False):
        return tok.apply_chat_template(messages[:upto], tools=tools, add_generation_prompt=gen, tokenize=False,
                                       **template.options)

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    prompt, turn = render(i, gen=True), render(i + 1)
    if before == ids(prompt) or turn.startswith(prompt):
        return before == ids(prompt)
    text = tok.decode(before)
    rest = turn[len(text):]
    return (turn.startswith(text) and messages[i - 1]["content"] in text and messages[i]["content"] in rest
            and before == ids(text))


def check_turns(tok, template, messages, tools, samples):
    """Every trained turn: prompt ids == apply_chat_template(history, add_generation_prompt=True) on the
    messages as the template gets them (calls as text where it has no tool-call branch);
    returns the decoded labelled runs in turn order."""
    messages = template.prepare(messages)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    found = []
    for enc in samples:
        runs = labelled_runs(enc.input_ids, enc.labels)
        for start, run in zip(run_starts(enc.labels), runs):
            matches = [i for i in turns if trained_under_inference_prompt(tok, template, messages, tools, i,
                                                                          enc.input_ids[:start])]
            assert len(matches) == 1, f"run at {start} is not trained under an inference prompt"
            found.append((matches[0], tok.decode(run)))
    assert sorted(i for i, _ in found) == turns  # every answer trained once
    return [text for _, text in sorted(found)]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_tool_call_turns_train_the_templates_markup_under_the_inference_prompt(name):
    tok, template = make(name)
    assert template.family.name == TEMPLATES[name][4] and template.eot_text == TEMPLATES[name][3]
    samples = template.encode_samples(Conversation(TOOL_CONV, tools=TOOLS))
    call_text, final = check_turns(tok, template, TOOL_CONV, TOOLS, samples)
    assert "get_weather" in call_text and "Paris" in call_text and call_text.endswith(template.eot_text.strip())
    assert final.endswith("It is 21 degrees in Paris." + template.eot_text) or name == "mistral_tools"
    for enc in samples:  # the tool result is in the prompt, never trained
        trained = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX])
        assert '{"temp": 21}' not in trained
    assert template.family.parse(call_text.removesuffix(template.eot_text.strip())).tool_calls[0]["function"] == CALL["function"]


def test_qwen3_labels_are_exactly_the_answers_per_turn():
    tok, template = make("qwen3")
    samples = template.encode_samples(Conversation(REASONING_CONV))
    assert len(samples) == 2  # turn 1 alone (reasoning kept), then the whole conversation (it is stripped)
    runs = check_turns(tok, template, REASONING_CONV, None, samples)
    assert runs == ["<think>\nFrance's capital is Paris.\n</think>\n\nParis.<|im_end|>",
                    "<think>\n北京是首都。\n</think>\n\n北京是中国的首都。<|im_end|>"]
    full = tok.decode(samples[-1].input_ids)
    assert full == tok.apply_chat_template(REASONING_CONV, tokenize=False)  # history as inference shows it
    tool = check_turns(tok, template, TOOL_CONV, TOOLS, template.encode_samples(Conversation(TOOL_CONV, TOOLS)))
    assert tool == ['<think>\n\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
                    '\n</tool_call><|im_end|>', "<think>\n\n</think>\n\nIt is 21 degrees in Paris.<|im_end|>"]


@pytest.mark.parametrize("name", ["qwen3", "deepseek_r1", "deepseek_r1_distill_qwen"])
def test_multi_turn_reasoning_trains_each_turn_with_its_reasoning(name):
    tok, template = make(name)
    samples = template.encode_samples(Conversation(REASONING_CONV))
    runs = check_turns(tok, template, REASONING_CONV, None, samples)
    for run, message in zip(runs, [REASONING_CONV[1], REASONING_CONV[3]]):
        assert message["reasoning_content"] in run and run.endswith(message["content"] + template.eot_text)
        assert run.index(message["reasoning_content"]) < run.index(message["content"])


TOOL_REASONING_CONV = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "I need the weather tool.", "tool_calls": [CALL]},
    {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call00001"},
    {"role": "assistant", "content": "It is 21 degrees in Paris.", "reasoning_content": "21 is warm."},
    {"role": "user", "content": "你好，北京是哪里？"},
    {"role": "assistant", "content": "北京是中国的首都。", "reasoning_content": "北京是首都。"},
]
def glm(name):
    """GLM-4.6's own template (glm4_6) or tunekit's built-in (glm4), on a tokenizer with GLM's tokens."""
    special, bos, eos, _, _ = GLM4
    source = builtin_source("glm4") if name == "glm4" else (SHARED / f"{name}.jinja").read_text()
    tok = build_tokenizer(special, bos=bos, eos=eos, chat_template=source)
    return tok, ChatTemplate(tok, source, name)


def expected_glm_samples(tok, conv, tools):
    """Ids and labels of a GLM conversation, from apply_chat_template alone: answer i, as the model writes
    it, is render(conv[:i+1]) after render(conv[:i], generation prompt); a sample is the whole
    conversation, training every answer whose own render starts it, plus one sample up to each answer
    that the whole render writes otherwise (reasoning stripped once a later question follows). Labels
    are those answer tokens and the one token after them: the next role tag, or, where the sample
    ends, the tag appended (<|observation|> after calls, <|user|> after an answer)."""
    def ids(messages, gen=False):
        return tok.apply_chat_template(messages, tools=tools, add_generation_prompt=gen, tokenize=True)["input_ids"]

    tag = {name: tok.convert_tokens_to_ids(name) for name in ("<|user|>", "<|observation|>")}
    turns = [i for i, m in enumerate(conv) if m["role"] == "assistant"]
    whole = ids(conv)
    samples = [(i + 1, [i]) for i in turns if whole[: len(ids(conv[: i + 1]))] != ids(conv[: i + 1])]
    samples.append((len(conv), [i for i in turns if all(i not in trained for _, trained in samples)]))
    out = []
    for end, trained in samples:
        input_ids = ids(conv[:end])
        if conv[end - 1]["role"] == "assistant":
            input_ids.append(tag["<|observation|>" if conv[end - 1].get("tool_calls") else "<|user|>"])
        labels = [-100] * len(input_ids)
        for i in trained:
            prompt, turn = ids(conv[:i], gen=True), ids(conv[: i + 1])
            assert turn[: len(prompt)] == prompt and input_ids[: len(turn)] == turn
            for k in range(len(prompt), len(turn) + 1):  # the answer and the one tag after it
                labels[k] = input_ids[k]
            assert input_ids[len(turn)] in tag.values()
        out.append((input_ids, labels))
    return out


@pytest.mark.parametrize("source", ["glm4_6", "glm4"])
@pytest.mark.parametrize("conv", [TOOL_CONV, REASONING_CONV, TOOL_REASONING_CONV], ids=["tools", "reasoning",
                                                                                         "tool_reasoning"])
def test_glm_ids_are_apply_chat_template_s_and_labels_each_answer_plus_the_next_role_tag(conv, source):
    tok, template = glm(source)
    assert template.family.name == "glm" and template.native_tool_calls
    assert template.turn_tags == {"user": "<|user|>", "tool": "<|observation|>"} and template.eot_text == GLM4[3]
    samples = template.encode_samples(Conversation(conv, tools=TOOLS))
    assert [(enc.input_ids, enc.labels) for enc in samples] == expected_glm_samples(tok, conv, TOOLS)
    runs = [tok.decode(r) for enc in samples for r in labelled_runs(enc.input_ids, enc.labels)]
    assert not any("<|endoftext|>" in tok.decode(enc.input_ids) for enc in samples)  # no eos inserted
    if conv is TOOL_CONV:
        assert runs == ["\n<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris"
                        "</arg_value>\n</tool_call><|observation|>",
                        "\n<think></think>\nIt is 21 degrees in Paris.<|user|>"]
        assert template.family.parse(runs[0].removesuffix("<|observation|>")).tool_calls[0]["function"] == \
            CALL["function"]
    elif conv is REASONING_CONV:
        assert runs == ["\n<think>France's capital is Paris.</think>\nParis.<|user|>",
                        "\n<think>北京是首都。</think>\n北京是中国的首都。<|user|>"]
    else:  # each answer before the last question in a sample of its own, ending on the tag it emits
        assert len(samples) == 3 and runs == [
            "\n<think>I need the weather tool.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
            "<arg_value>Paris</arg_value>\n</tool_call><|observation|>",
            "\n<think>21 is warm.</think>\nIt is 21 degrees in Paris.<|user|>",
            "\n<think>北京是首都。</think>\n北京是中国的首都。<|user|>"]
    for k in [k for k, m in enumerate(conv) if m["role"] != "assistant"]:  # prompts at inference: exactly
        assert template.encode_prompt(conv[: k + 1], tools=TOOLS) == tok.apply_chat_template(
            conv[: k + 1], tools=TOOLS, add_generation_prompt=True, tokenize=True)["input_ids"]


def test_glm_engine_stops_at_the_role_tag_hides_it_and_parses_the_call():
    """The engine's own path (prompt, stop tokens, answer text, parser), a scripted backend for the model:
    a reply stops at <|observation|> after a call and at <|user|> after an answer, and what follows the
    tag is never generated, shown or parsed."""
    from tunekit.infer.engine import BASE, Engine, _variant
    from tunekit.infer.params import ChatOptions, GenerationParams

    tok, template = glm("glm4_6")
    variant = _variant(None, tok, None, None)
    assert tok.convert_ids_to_tokens(variant.stop_token_ids) == ["<|user|>", "<|observation|>", "<|endoftext|>"]
    assert variant.stop_token_ids == template.stop_token_ids

    class Scripted:
        context_length, batchable = 4096, False

        def __init__(self, text):
            self.script, self.prompts, self.fed = tok(text, add_special_tokens=False)["input_ids"], [], 0

        def generate(self, prompt, params, stop_ids, adapter, on_token):
            self.prompts.append(prompt)
            for self.fed, token in enumerate(self.script, 1):
                if not on_token(token) or token in stop_ids:
                    break

    call = ("\n<think>I need the weather tool.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
            "<arg_value>Paris</arg_value>\n</tool_call>")
    backend = Scripted(call + "<|observation|>\n<tool_response>\nmade up\n</tool_response>")
    with Engine(backend, tok, "glm", {BASE: variant}, BASE) as engine:
        reply = engine.chat(TOOL_CONV[:1], GenerationParams(max_new_tokens=200), request=ChatOptions(tools=TOOLS))
    assert backend.prompts == [tok.apply_chat_template(TOOL_CONV[:1], tools=TOOLS, add_generation_prompt=True,
                                                       tokenize=True)["input_ids"]]
    assert backend.fed == len(tok(call, add_special_tokens=False)["input_ids"]) + 1  # stopped at the tag
    assert reply.finish_reason == "tool_calls" and reply.text == call
    assert [c["function"] for c in reply.tool_calls] == [CALL["function"]]
    assert reply.reasoning == "I need the weather tool."

    backend = Scripted("\n<think></think>\nIt is 21 degrees in Paris.<|user|>\nAnd tomorrow?")
    with Engine(backend, tok, "glm", {BASE: variant}, BASE) as engine:
        reply = engine.chat(TOOL_CONV[:3], GenerationParams(max_new_tokens=200), request=ChatOptions(tools=TOOLS))
    assert backend.prompts == [tok.apply_chat_template(TOOL_CONV[:3], tools=TOOLS, add_generation_prompt=True,
                                                       tokenize=True)["input_ids"]]
    assert reply.finish_reason == "stop" and reply.content == "It is 21 degrees in Paris." and not reply.tool_calls
    assert "<|user|>" not in reply.text and "tomorrow" not in reply.text


def test_enable_thinking_switch_reaches_the_template_and_the_prompt():
    tok, template = make("qwen3", enable_thinking=False)
    prompt = tok.decode(template.encode_prompt(REASONING_CONV[:1]))
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    on = ChatTemplate(tok, template.source, "qwen3")
    assert tok.decode(on.encode_prompt(REASONING_CONV[:1], options={"enable_thinking": False})) == prompt
    assert tok.decode(on.encode_prompt(REASONING_CONV[:1])).endswith("<|im_start|>assistant\n")


def test_template_without_tool_branch_gets_calls_as_hermes_text():
    tok, template = make("qwen3")
    chatml = (SHARED / "chatml.jinja").read_text()
    plain = ChatTemplate(tok, chatml, "chatml")
    assert not plain.native_tool_calls and plain.family.name == "hermes"
    runs = [tok.decode(r) for enc in plain.encode_samples(Conversation(TOOL_CONV))
            for r in labelled_runs(enc.input_ids, enc.labels)]
    assert runs[0] == ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
                       "<|im_end|>")


def test_glaive_tool_rows_all_train_with_qwen_markup():
    tok, template = make("qwen3")
    records = load_one(DatasetSpec(str(SHARED.parent / "data" / "glaive_toolcall_zh_demo.json")), "sft").records
    assert len(records) == 300 and sum(bool(c.tools) for c in records) == 200
    calls = with_markup = 0
    for conv in records:
        samples = template.encode_samples(conv)
        text = tok.decode(samples[0].input_ids)
        assert ("<tools>" in text) == bool(conv.tools)
        assert not conv.tools or conv.tools[0]["function"]["name"] in text
        trained = [tok.decode(r) for enc in samples for r in labelled_runs(enc.input_ids, enc.labels)]
        expected = sum(len(m.get("tool_calls", [])) for m in conv.messages)
        calls += expected
        with_markup += sum(run.count("<tool_call>\n{\"name\": ") for run in trained)
    raw = json.loads((SHARED.parent / "data" / "glaive_toolcall_zh_demo.json").read_text())
    assert calls == with_markup == sum(m["from"] == "function_call" for r in raw for m in r["conversations"])
