"""GGUF export, verified: llama.cpp's Python bindings load what `export_gguf` wrote from the real
tier's LoRA run of SmolLM2-135M-Instruct, and answer greedily as transformers does, stopping at
<|im_end|>.

Skipped, with the reason, where llama.cpp's converter or llama-cpp-python is missing (`make gguf`
builds them once). Ollama cannot be installed here: its Modelfile is checked as text in
tests/export/test_modelfile.py.
"""

import importlib.util

import pytest

from tunekit.errors import TunekitError

pytestmark = pytest.mark.slow
PROMPTS = ["What is the capital of France?", "找出句中的人名和地名\n张三昨天去了北京。", "Write a haiku about rain."]
MAX_NEW = 40


def needs_llama_cpp():
    from tunekit.export.gguf import llama_cpp_tree

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: `make gguf` builds it (a long compile, done once)")
    try:
        llama_cpp_tree()
    except TunekitError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def smol_run(request):
    """The real tier's LoRA run (20 steps on the NER task), when llama.cpp is there to check its export."""
    needs_llama_cpp()
    return request.getfixturevalue("smollm2_lora_run")


@pytest.fixture(scope="module")
def reference(smol_run):
    """transformers' greedy answers (prompt ids, answer ids, finish reason) on the run, merged in memory."""
    import torch

    from tunekit.export.merge import merge_in_memory
    from tunekit.rundir import read_run

    run = read_run(smol_run)
    model, tokenizer = merge_in_memory(run, "fp32")
    stop = run.stop_token_ids
    out = []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
        with torch.no_grad():
            generated = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                                       eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        out.append((ids, generated))
    return out, stop, tokenizer


def llama_greedy(path, prompts_ids, stop):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, verbose=False, seed=0)
    answers = []
    for ids in prompts_ids:
        answer = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            answer.append(token)
            if token in stop or len(answer) >= MAX_NEW:
                break
        answers.append(answer)
    return llm, answers


def test_f16_of_a_lora_run_answers_like_transformers_and_stops_at_end_of_turn(smol_run, reference, tmp_path):
    from tunekit.export.gguf import export_gguf

    expected, stop, tokenizer = reference
    result = export_gguf(smol_run, tmp_path / "gguf", quant="f16")
    assert result.gguf.name == "ner-lora-f16.gguf" and result.modelfile.is_file()
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["Modelfile", "ner-lora-f16.gguf"]  # no merged copy
    llm, answers = llama_greedy(result.gguf, [ids for ids, _ in expected], stop)
    assert int(llm.metadata["tokenizer.ggml.eos_token_id"]) in stop
    assert llm.tokenize(b"<|im_end|>", add_bos=False, special=True) == stop[:1]
    for (_, want), got in zip(expected, answers):
        assert tokenizer.decode(got) == tokenizer.decode(want)
    assert any(a[-1] in stop and len(a) < MAX_NEW for a in answers)  # at least one answer ended its turn


def test_q8_0_is_near_and_q4_k_m_is_quantized(smol_run, reference, tmp_path):
    from gguf import GGUFReader

    from tunekit.export.gguf import export_gguf
    from tunekit.export.merge import merge_run

    expected, stop, _ = reference
    merged = merge_run(smol_run, tmp_path / "merged").output  # a merged model directory converts as it is
    q8 = export_gguf(merged, tmp_path / "q8", quant="q8_0").gguf
    _, answers = llama_greedy(q8, [ids for ids, _ in expected], stop)
    for (_, want), got in zip(expected, answers):
        assert got[:8] == want[:8]  # the first tokens agree; later ones may part at near-ties
    q4 = export_gguf(merged, tmp_path / "q4", quant="q4_k_m").gguf
    assert GGUFReader(str(q4)).fields["general.file_type"].parts[-1][0] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    # SmolLM2's 576-wide rows are not multiples of 256: llama.cpp falls back to q5_0 / q8_0 for most of them
    assert q4.stat().st_size < q8.stat().st_size
