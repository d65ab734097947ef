"""init_model: a tiny random model and trained tokenizer that load offline and behave like a chat model."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunekit.errors import DataError, TunekitError
from tunekit.model import init_model as init_model_module
from tunekit.model.init_model import init_model

CHINESE = "张伟昨天去了北京。李娜住在上海，王芳和张伟在杭州见面。"
ENGLISH = "The quick brown fox jumps over the lazy dog. A model learns from the data it is given.\n"
CONVERSATION = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "张伟在哪里？"},
    {"role": "assistant", "content": "北京"},
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "text.txt").write_text((ENGLISH + CHINESE + "\n") * 20, encoding="utf-8")
    rows = [{"instruct": "找出人名", "query": CHINESE, "answer": "张伟_人名"}] * 5
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return [folder / "text.txt", folder / "rows.jsonl"]


@pytest.fixture(scope="module")
def qwen2_dir(corpus, tmp_path_factory):
    return init_model("qwen2", "tiny", corpus, tmp_path_factory.mktemp("models") / "qwen2")


@pytest.fixture(scope="module")
def llama_dir(corpus, tmp_path_factory):
    return init_model("llama", "tiny", corpus, tmp_path_factory.mktemp("models") / "llama", template="llama3")


@pytest.mark.parametrize("model_dir, model_type", [("qwen2_dir", "qwen2"), ("llama_dir", "llama")])
def test_loads_with_auto_classes_and_runs(model_dir, model_type, request):
    path = request.getfixturevalue(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == model_type
    assert (path / "model.safetensors").is_file()
    logits = model(**tokenizer("张伟 the dog", return_tensors="pt")).logits
    assert logits.shape[-1] == len(tokenizer) == model.config.vocab_size
    assert 100_000 < model.num_parameters() < 1_000_000


def test_chatml_template_closes_every_turn_including_the_last(qwen2_dir):
    tokenizer = AutoTokenizer.from_pretrained(qwen2_dir)
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\n张伟在哪里？<|im_end|>\n"
        "<|im_start|>assistant\n北京<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(CONVERSATION[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\n张伟在哪里？<|im_end|>\n<|im_start|>assistant\n"


def test_chatml_eos_pad_and_generation_stop_ids(qwen2_dir):
    tokenizer = AutoTokenizer.from_pretrained(qwen2_dir)
    model = AutoModelForCausalLM.from_pretrained(qwen2_dir)
    im_end, end_of_text = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert model.generation_config.eos_token_id == [im_end, end_of_text]
    assert model.generation_config.pad_token_id == end_of_text == model.config.pad_token_id
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") != tokenizer.unk_token_id


def test_llama3_template_bos_once_and_eot_closes_every_turn(llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n北京<|eot_id|>")
    ids = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert tokenizer("北京").input_ids[0] == tokenizer.bos_token_id
    assert tokenizer.eos_token == "<|eot_id|>"


@pytest.mark.parametrize("model_dir", ["qwen2_dir", "llama_dir"])
def test_chinese_characters_of_the_corpus_are_single_tokens(model_dir, request):
    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(model_dir))
    chars = sorted({c for c in CHINESE if not c.isascii()})
    assert all(len(tokenizer.tokenize(c)) == 1 for c in chars), [tokenizer.tokenize(c) for c in chars]
    assert tokenizer.tokenize("张伟住在杭州") == [tokenizer.tokenize(c)[0] for c in "张伟住在杭州"]
    assert tokenizer.decode(tokenizer("张伟 the dog", add_special_tokens=False).input_ids) == "张伟 the dog"


def test_chinese_characters_get_their_tokens_before_more_frequent_english_merges(tmp_path):
    chars = "".join(chr(0x4E00 + 7 * i) for i in range(40))  # 40 ideographs, each seen twice
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(ENGLISH * 50 + chars + "\n" + chars + "\n", encoding="utf-8")
    path = init_model("qwen2", "tiny", [corpus], tmp_path / "model", vocab_size=330)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer) == 330
    assert len(tokenizer.tokenize(chars)) == len(chars)
    assert len(tokenizer.tokenize(" quick brown")) < len(" quick brown")


def test_base_model_has_no_chat_template(corpus, tmp_path):
    path = init_model("qwen2", "tiny", corpus, tmp_path / "base", template=None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.chat_template is None
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert "<|im_start|>" not in tokenizer.get_vocab()


def test_same_seed_gives_identical_model_and_another_seed_does_not(corpus, qwen2_dir, tmp_path):
    again = init_model("qwen2", "tiny", corpus, tmp_path / "again")
    other = init_model("qwen2", "tiny", corpus, tmp_path / "other", seed=1)
    weights = load_file(qwen2_dir / "model.safetensors")
    assert all(torch.equal(w, load_file(again / "model.safetensors")[k]) for k, w in weights.items())
    assert (again / "tokenizer.json").read_bytes() == (qwen2_dir / "tokenizer.json").read_bytes()
    other_weights = load_file(other / "model.safetensors")
    assert not torch.equal(weights["model.embed_tokens.weight"], other_weights["model.embed_tokens.weight"])


def test_refuses_a_non_empty_output_dir_unless_overwrite(corpus, tmp_path):
    output = tmp_path / "model"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    with pytest.raises(TunekitError, match="not empty"):
        init_model("qwen2", "tiny", corpus, output)
    assert (output / "notes.txt").read_text() == "keep me"
    init_model("qwen2", "tiny", corpus, output, overwrite=True)
    assert not (output / "notes.txt").exists() and (output / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


class HalfSavedModel:
    def save_pretrained(self, path):
        (path / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")


def test_failed_save_leaves_no_output_and_no_temp_dir(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(init_model_module, "_random_model", lambda *args: HalfSavedModel())
    with pytest.raises(OSError, match="disk full"):
        init_model("qwen2", "tiny", corpus, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_missing_corpus_file_and_unknown_choices_are_user_errors(corpus, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        init_model("qwen2", "tiny", [tmp_path / "nope.txt"], tmp_path / "m")
    with pytest.raises(TunekitError, match="unknown arch 'gpt2'"):
        init_model("gpt2", "tiny", corpus, tmp_path / "m")
    with pytest.raises(TunekitError, match="unknown template 'alpaca'"):
        init_model("qwen2", "tiny", corpus, tmp_path / "m", template="alpaca")
    assert list(tmp_path.iterdir()) == []
