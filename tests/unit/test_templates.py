"""Templates: rendered ids equal apply_chat_template, masks cover exactly answers + end-of-turn.

Every template of ../shared/templates is tried with a tiny tokenizer that carries its special
tokens, on single-turn, multi-turn and system-prompt conversations.
"""

import pytest

from helpers import SHARED
from tokenizers_util import build_tokenizer
from tunekit.data.records import Conversation
from tunekit.data.templates import IGNORE_INDEX, ChatTemplate, TemplateError, load_template

SHARED = SHARED / "templates"

# template file -> (special tokens, bos, eos, expected end-of-turn text)
TOKENS = {
    "chatml": (["<|im_start|>", "<|im_end|>"], None, "<|endoftext|>", "<|im_end|>"),
    "llama3": (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               None, "<|end_of_text|>", "<|eot_id|>"),
    "alpaca": ([], "<s>", "</s>", "</s>"),
    "baichuan": (["<reserved_106>", "<reserved_107>"], "<s>", "</s>", "</s>"),
    "chatglm": ([], "<bos>", "</s>", "</s>"),
    "chatglm2": ([], "<bos>", "</s>", "</s>"),
    "mistral_tools": (["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                       "[TOOL_RESULTS]", "[/TOOL_RESULTS]"], "<s>", "</s>", " </s>"),
    "deepseek_r1": (["<｜User｜>", "<｜Assistant｜>"], "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                    "<｜end▁of▁sentence｜>"),
    # Current models with no real tokenizer here: a tokenizer carrying their special tokens.
    # GLM-4.6 writes no end-of-turn token: the next role tag ends a turn, <|user|> after an answer (the
    # one appended where a sample ends on it); no eos is inserted.
    "glm4_6": (["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<think>",
                "</think>"], None, "<|endoftext|>", "<|user|>"),
    "mistral_small_3_1": (["[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CALLS]",
                           "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"],
                          "<s>", "</s>", "</s>"),
}

U1, A1, U2, A2 = "What is the capital of France?", "Paris.", "你好，北京是哪里？", "北京是中国的首都。"
CONVERSATIONS = {
    "single": [{"role": "user", "content": U1}, {"role": "assistant", "content": A1}],
    "multi": [{"role": "user", "content": U1}, {"role": "assistant", "content": A1},
              {"role": "user", "content": U2}, {"role": "assistant", "content": A2}],
    "system": [{"role": "system", "content": "You are a fox."}, {"role": "user", "content": U2},
               {"role": "assistant", "content": A2}],
}


def make_template(name):
    special, bos, eos, _ = TOKENS[name]
    source = (SHARED / f"{name}.jinja").read_text()
    tok = build_tokenizer(special, bos=bos, eos=eos, chat_template=source)
    return tok, ChatTemplate(tok, source, name)


def strip_inserted(ids, ref, eot_ids):
    """Walk our ids against the reference; tokens only we have must be end-of-turn tokens."""
    i = j = skipped = 0
    while i < len(ids):
        if j < len(ref) and ids[i] == ref[j]:
            i, j = i + 1, j + 1
        elif ids[i: i + len(eot_ids)] == eot_ids:
            i, skipped = i + len(eot_ids), skipped + 1
        else:
            raise AssertionError(f"token {i} differs from apply_chat_template and is not end-of-turn")
    assert j == len(ref), "apply_chat_template has tokens we dropped"
    return skipped


def labelled_runs(ids, labels):
    runs, current = [], []
    for tok, lab in zip(ids, labels):
        if lab != IGNORE_INDEX:
            assert lab == tok
            current.append(tok)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("kind", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", sorted(TOKENS))
def test_ids_match_apply_chat_template_and_mask_is_answers(name, kind):
    tok, template = make_template(name)
    assert template.eot_text == TOKENS[name][3]
    messages = CONVERSATIONS[kind]
    enc = template.encode(Conversation(messages))
    ref = tok.apply_chat_template(messages, tokenize=True)["input_ids"]
    eot_ids = tok(template.eot_text, add_special_tokens=False)["input_ids"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    inserted = strip_inserted(enc.input_ids, ref, eot_ids)
    assert inserted <= len(answers)
    runs = [tok.decode(r) for r in labelled_runs(enc.input_ids, enc.labels)]
    assert_runs_are_answers(runs, [a + template.eot_text for a in answers])


def assert_runs_are_answers(runs, expected):
    """Each labelled run is one answer plus end-of-turn; a first token may also carry the
    header's trailing space when the tokenizer joins them (mistral: ' Paris'), and a template that
    writes an empty reasoning block before every answer (GLM-4.6) trains it as part of the answer."""
    assert len(runs) == len(expected)
    for run, want in zip(runs, expected):
        assert run.endswith(want) and run[: len(run) - len(want)].strip() in ("", "<think></think>"), (run, want)


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_prompt_for_generation_matches_training_prefix(name):
    _, template = make_template(name)
    messages = CONVERSATIONS["multi"]
    full = template.encode(Conversation(messages)).input_ids
    prompt = template.encode_prompt(messages[:3])
    assert full[: len(prompt)] == prompt
    assert template.stop_token_ids[0] in full  # the end of turn it trains (eos too, for GLM, is only a stop)


# Turns ended by the next role tag, as GLM's, under other names: told apart by the template's structure.
ROLE_TAGGED = ("{%- set tag = {'system': '<|sys|>', 'user': '<|human|>', 'assistant': '<|bot|>', 'tool': '<|result|>'} -%}"
               "{%- for m in messages -%}{{- tag[m['role']] + '\n' + m['content'] -}}{%- endfor -%}"
               "{%- if add_generation_prompt -%}{{- '<|bot|>\n' -}}{%- endif -%}")
TAGS = ["<|sys|>", "<|human|>", "<|bot|>", "<|result|>"]


def test_a_template_whose_turns_end_at_the_next_role_tag_trains_that_tag_and_stops_on_it():
    tok = build_tokenizer(TAGS, eos="</s>", chat_template=ROLE_TAGGED)
    template = ChatTemplate(tok, ROLE_TAGGED, "custom")
    assert template.turn_tags == {"user": "<|human|>", "tool": "<|result|>"} and template.eot_text == "<|human|>"
    assert tok.convert_ids_to_tokens(template.stop_token_ids) == ["<|human|>", "<|result|>", "</s>"]
    reloaded = ChatTemplate(tok, ROLE_TAGGED, "run", eot_text="<|human|>")  # as a run directory records it
    assert reloaded.turn_tags == template.turn_tags and reloaded.stop_token_ids == template.stop_token_ids
    tag = tok.convert_tokens_to_ids
    messages = CONVERSATIONS["multi"]
    enc = template.encode(Conversation(messages))
    assert enc.input_ids == tok.apply_chat_template(messages, tokenize=True)["input_ids"] + [tag("<|human|>")]
    assert [tok.decode(r) for r in labelled_runs(enc.input_ids, enc.labels)] == [A1 + "<|human|>", A2 + "<|human|>"]
    assert template.encode_prompt(messages[:3]) == tok.apply_chat_template(messages[:3], add_generation_prompt=True,
                                                                           tokenize=True)["input_ids"]
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    tools = [{"role": "user", "content": U1}, {"role": "assistant", "content": "", "tool_calls": [call]},
              {"role": "tool", "content": "21"}, {"role": "assistant", "content": A1}]
    enc = template.encode(Conversation(tools))
    runs = [tok.decode(r) for r in labelled_runs(enc.input_ids, enc.labels)]
    assert runs[0].endswith("</tool_call><|result|>") and runs[1] == A1 + "<|human|>"
    call_only = template.encode(Conversation(tools[:2]))  # a sample ending on the call: its tag appended
    assert call_only.input_ids[-1] == tag("<|result|>")
    assert [tok.decode(r) for r in labelled_runs(call_only.input_ids, call_only.labels)] == runs[:1]


def test_baichuan_and_runs_trained_with_inserted_eos_keep_eos():
    """Baichuan's turns look alike (<reserved_106> opens the next question) but it writes no tool turn and
    its models are trained to stop on eos; a GLM run trained before the role tags recorded <|endoftext|>
    as its end of turn, and is asked as it was trained."""
    tok, baichuan = make_template("baichuan")
    assert baichuan.turn_tags == {} and baichuan.eot_text == "</s>"
    glm_source = (SHARED / "glm4_6.jinja").read_text()
    tok = build_tokenizer(TOKENS["glm4_6"][0], eos="<|endoftext|>", chat_template=glm_source)
    old_run = ChatTemplate(tok, glm_source, "run", eot_text="<|endoftext|>")
    assert old_run.turn_tags == {} and tok.convert_ids_to_tokens(old_run.stop_token_ids) == ["<|endoftext|>"]
    enc = old_run.encode(Conversation(CONVERSATIONS["multi"]))
    assert [tok.decode(r)[-len("<|endoftext|>"):] for r in labelled_runs(enc.input_ids, enc.labels)] == \
        ["<|endoftext|>"] * 2


def test_train_on_prompt_and_mask_history():
    _, template = make_template("chatml")
    conv = Conversation(CONVERSATIONS["multi"])
    everything = template.encode(conv, train_on_prompt=True)
    assert everything.labels == everything.input_ids
    last_only = template.encode(conv, mask_history=True)
    runs = labelled_runs(last_only.input_ids, last_only.labels)
    assert [template.tokenizer.decode(r) for r in runs] == [A2 + "<|im_end|>"]


# Like Qwen3's template: earlier answers lose their <think> part, the last one keeps it.
STRIPS_HISTORY = (
    "{%- for m in messages -%}{%- set c = m['content'] -%}"
    "{%- if m['role'] == 'assistant' and not loop.last and '</think>' in c -%}{%- set c = c.split('</think>')[-1] -%}"
    "{%- endif -%}{{- '<|im_start|>' + m['role'] + '\n' + c + '<|im_end|>\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}")


def test_template_that_rewrites_history_trains_each_turn_under_its_own_prompt():
    tok = build_tokenizer(["<|im_start|>", "<|im_end|>"], eos="<|endoftext|>")
    template = ChatTemplate(tok, STRIPS_HISTORY, "strips")
    messages = [{"role": "user", "content": U1}, {"role": "assistant", "content": "<think>hmm</think>Paris."},
                {"role": "user", "content": U2}, {"role": "assistant", "content": A2}]
    with pytest.raises(TemplateError, match="chat.json:3: .*trains as 2 samples"):
        template.encode(Conversation(messages, source="chat.json:3"))
    first, whole = template.encode_samples(Conversation(messages))
    runs = [tok.decode(r) for r in labelled_runs(first.input_ids, first.labels)]
    assert runs == ["<think>\nhmm\n</think>\n\nParis.<|im_end|>"]  # reasoning written back: the template drops it
    assert tok.decode(first.input_ids) == "<|im_start|>user\n" + U1 + "<|im_end|>\n<|im_start|>assistant\n" + runs[0] + "\n"
    assert [tok.decode(r) for r in labelled_runs(whole.input_ids, whole.labels)] == [A2 + "<|im_end|>"]
    assert tok.decode(whole.input_ids) == tok.apply_chat_template(messages, tokenize=False, chat_template=STRIPS_HISTORY)


def test_template_that_drops_reasoning_gets_it_written_back():
    tok, template = make_template("deepseek_r1")
    messages = [{"role": "user", "content": U1}, {"role": "assistant", "content": "<think>hmm</think>Paris."}]
    enc = template.encode(Conversation(messages))
    assert [tok.decode(r) for r in labelled_runs(enc.input_ids, enc.labels)] == [
        "<think>\nhmm\n</think>\n\nParis.<｜end▁of▁sentence｜>"]
    prompt = tok.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=True)["input_ids"]
    assert enc.input_ids[: len(prompt)] == prompt and enc.labels[len(prompt) - 1] == IGNORE_INDEX


@pytest.mark.parametrize("name,eot", [("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>"), ("alpaca", "</s>"),
                                      ("chatglm2", "</s>"), ("chatglm3", "<|user|>"), ("baichuan2", "</s>"),
                                      ("plain", "</s>")])
def test_builtin_templates_add_their_tokens_and_mask_answers(name, eot):
    tok = build_tokenizer([], bos="<s>", eos="</s>")
    template = load_template(tok, name)
    assert template.eot_text == eot
    messages = CONVERSATIONS["multi"]
    enc = template.encode(Conversation(messages))
    runs = [tok.decode(r) for r in labelled_runs(enc.input_ids, enc.labels)]
    assert_runs_are_answers(runs, [A1 + eot, A2 + eot])
    assert template.tokenizer.convert_ids_to_tokens(template.stop_token_ids[0]) == eot
