"""Multiple-choice loading (C-Eval / CMMLU / MMLU / JSONL shapes), prompts, and letter scoring on a tiny model."""


import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from helpers import FIXTURES

from tunekit.errors import DataError, TunekitError
from tunekit.eval.choice import ChoiceItem, build_choice_prompt, load_choice_items, score_choices

CHOICE = FIXTURES / "choice"


# ---------------------------------------------------------------- loading


def test_loads_ceval_csv_with_header_explanation_and_multiline_question():
    items = load_choice_items(CHOICE / "ceval")
    assert [item.answer for item in items] == ["D", "B"]
    assert items[0].options == {"A": "资产", "B": "负债", "C": "利润", "D": "成本"}
    assert items[1].question == '企业的库存现金，应当"日清月结"，\n这一要求体现了____。'
    assert [item.source.rsplit(":", 1)[1] for item in items] == ["2", "3"]  # row 2 spans lines 3-4
    assert {item.subject for item in items} == {"accountant"}  # accountant_val.csv


def test_loads_cmmlu_csv_with_index_column():
    items = load_choice_items(CHOICE / "cmmlu" / "agronomy.csv")
    assert [(item.question, item.answer) for item in items] == [
        ("水稻属于哪一科植物？", "A"),
        ("下列哪种元素是植物必需的大量元素？", "B"),
        ("玉米原产于哪个大洲？", "C"),
    ]
    assert items[2].options["C"] == "美洲"
    assert items[2].source.endswith("agronomy.csv:4")


def test_loads_headerless_mmlu_csv():
    items = load_choice_items(CHOICE / "mmlu")
    assert items[1].question == "Is the set of integers, under addition, a group?"
    assert items[1].options == {"A": "Yes", "B": "No", "C": "Only for positives", "D": "Only for evens"}
    assert [item.answer for item in items] == ["D", "A"]
    assert items[0].source.endswith("abstract_algebra_test.csv:1")
    assert items[0].subject == "abstract_algebra"


def test_loads_jsonl_with_choice_lists_index_answers_and_letter_keys():
    first, second = load_choice_items(CHOICE / "json" / "college_physics.jsonl")
    assert first.options == {"A": "joule", "B": "newton", "C": "watt", "D": "pascal"}
    assert first.answer == "B"  # answer index 1
    assert (second.answer, second.subject) == ("A", "physics")  # "a", subject from the record
    assert second.source.endswith("college_physics.jsonl:3")  # line 2 is blank


def test_file_without_answer_column_loads_unlabelled(tmp_path):
    (tmp_path / "law_test.csv").write_text("id,question,A,B,C,D\n0,问题,甲,乙,丙,丁\n", encoding="utf-8")
    (item,) = load_choice_items(tmp_path)
    assert (item.answer, item.subject) == (None, "law")


def test_row_with_an_empty_option_names_file_line_and_fix():
    with pytest.raises(DataError, match=r"law_val\.csv:3: option C is empty; fill it in"):
        load_choice_items(CHOICE / "bad_option")


def test_answer_that_is_not_an_option_names_file_line_and_fix():
    with pytest.raises(DataError, match=r"agronomy\.csv:2: answer 'E' is not one of the options A, B, C, D"):
        load_choice_items(CHOICE / "bad_answer")


def test_folder_without_question_files_is_refused():
    with pytest.raises(DataError, match="holds no .csv, .json or .jsonl"):
        load_choice_items(CHOICE)


# ---------------------------------------------------------------- prompts


def test_prompt_has_subject_header_answered_shots_then_the_question():
    shot = ChoiceItem("1+1=?", {"A": "1", "B": "2"}, "B", "f:1")
    item = ChoiceItem("2+2=?", {"A": "4", "B": "5"}, "A", "f:2")
    assert build_choice_prompt(item, [shot], "math") == (
        "以下是关于math的单项选择题，请直接给出正确答案的选项。\n\n"
        "1+1=?\nA. 1\nB. 2\n答案：B\n\n"
        "2+2=?\nA. 4\nB. 5\n答案："
    )
    assert build_choice_prompt(item) == "2+2=?\nA. 4\nB. 5\n答案："


def test_shot_without_answer_is_refused():
    shot = ChoiceItem("1+1=?", {"A": "1", "B": "2"}, None, "f:1")
    with pytest.raises(TunekitError, match="f:1: a few-shot example needs an answer"):
        build_choice_prompt(shot, [shot])


# ---------------------------------------------------------------- scoring on a tiny model


@pytest.fixture(scope="module")
def tokenizer():
    """Byte-level BPE where "A" and " A" are different single tokens (like Qwen / GPT-2)."""
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for letter in "ABCD":
        vocab["Ġ" + letter] = len(vocab)
    vocab["<pad>"] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", letter) for letter in "ABCD"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>")


@pytest.fixture(scope="module")
def model(tokenizer):
    """Qwen2 (rotary positions, where left padding shifts nothing)."""
    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        vocab_size=len(tokenizer),
        initializer_range=0.5,  # spread the logits so letters are far from ties
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def gpt2_model(tokenizer):
    """GPT-2 (learned absolute positions: left padding is only right with explicit position ids)."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=32, n_layer=1, n_head=2, n_positions=512, vocab_size=len(tokenizer), initializer_range=0.5
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def items():
    return [item for folder in ("ceval", "cmmlu", "mmlu", "json") for item in load_choice_items(CHOICE / folder)]


def letter_scores_unpadded(model, tokenizer, prompt_ids: list[int]) -> dict[str, float]:
    """Run the model on prompt + letter token for "A", "ĠA", ... "ĠD" (equal lengths, no padding);
    a letter's score is the log-sum-exp of its two tokens' log-probabilities after the prompt."""
    tokens = tokenizer.convert_tokens_to_ids([t for letter in "ABCD" for t in (letter, "Ġ" + letter)])
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + [token] for token in tokens])).logits[:, len(prompt_ids) - 1]
    logprobs = logits.log_softmax(-1)[range(len(tokens)), tokens].view(4, 2)
    return {letter: torch.logsumexp(pair, 0).item() for letter, pair in zip("ABCD", logprobs)}


@pytest.mark.parametrize("model_fixture", ["model", "gpt2_model"])
def test_batched_choice_equals_independent_argmax_and_accuracy_counts_matches(model_fixture, tokenizer, items, request):
    model = request.getfixturevalue(model_fixture)
    result = score_choices(model, tokenizer, items, batch_size=4)  # prompts differ in length: left padding
    prompts = [tokenizer(build_choice_prompt(item, subject=item.subject))["input_ids"] for item in items]
    expected_scores = [letter_scores_unpadded(model, tokenizer, ids) for ids in prompts]
    expected = [max(scores, key=scores.get) for scores in expected_scores]
    assert result["predictions"] == expected
    for got, want in zip(result["scores"], expected_scores):
        assert got == pytest.approx(want, abs=1e-4)
    assert len(set(expected)) > 1  # the check is not satisfied by a constant answer
    matches = [letter == item.answer for letter, item in zip(expected, items)]
    assert result["accuracy"] == pytest.approx(sum(matches) / len(items))
    agronomy = [m for m, item in zip(matches, items) if item.subject == "agronomy"]
    assert result["per_subject"]["agronomy"] == {
        "correct": sum(agronomy),
        "total": 3,
        "accuracy": pytest.approx(sum(agronomy) / 3),
    }


def test_few_shot_prompts_use_other_answered_items_of_the_same_subject(model, tokenizer):
    cmmlu = load_choice_items(CHOICE / "cmmlu")
    result = score_choices(model, tokenizer, cmmlu, shots=1, batch_size=3)
    shots = [cmmlu[1], cmmlu[0], cmmlu[0]]  # the first answered item that is not the question itself
    for item, shot, got in zip(cmmlu, shots, result["scores"]):
        prompt_ids = tokenizer(build_choice_prompt(item, [shot], item.subject))["input_ids"]
        assert got == pytest.approx(letter_scores_unpadded(model, tokenizer, prompt_ids), abs=1e-4)


def test_chat_template_wraps_the_prompt_as_a_user_turn(model, tokenizer):
    template = "{% for m in messages %}<u>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    item = load_choice_items(CHOICE / "mmlu")[0]
    result = score_choices(model, tokenizer, [item], chat_template=template)
    prompt_ids = tokenizer("<u>" + build_choice_prompt(item, subject=item.subject) + "<a>")["input_ids"]
    assert result["scores"][0] == pytest.approx(letter_scores_unpadded(model, tokenizer, prompt_ids), abs=1e-4)


def test_unlabelled_items_get_predictions_but_no_accuracy(model, tokenizer, tmp_path):
    (tmp_path / "law_test.csv").write_text("id,question,A,B,C,D\n0,问题,甲,乙,丙,丁\n", encoding="utf-8")
    result = score_choices(model, tokenizer, load_choice_items(tmp_path))
    assert result["accuracy"] is None and result["per_subject"] == {}
    assert result["predictions"][0] in "ABCD"
