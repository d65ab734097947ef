"""Every text metric against values worked out by hand (the arithmetic is in the comments)."""

import math
import sys
import warnings

import pytest

from tunekit.errors import ConfigError, TunekitError
from tunekit.eval import metrics
from tunekit.eval.metrics import (
    METRICS,
    bleu4,
    entity_prf,
    exact_match,
    normalize,
    parse_entities,
    rouge,
    score_generation,
    tokenize_zh,
)


def test_normalize_lowers_drops_ascii_and_fullwidth_punctuation_and_collapses_space():
    assert normalize("  Hello,  World！\n北京。 ") == "hello world 北京"
    assert normalize("A, b", lower=False, strip_punct=False) == "A, b"


def test_exact_match_after_normalisation_and_raw():
    assert exact_match("北京。", "北京") == 1.0
    assert exact_match("北京。", "北京", normalize_text=False) == 0.0
    assert exact_match("上海", "北京") == 0.0


def test_char_tokens_keep_ascii_words_whole_and_drop_whitespace():
    assert tokenize_zh("GPU显存 24GB!", "char") == ["GPU", "显", "存", "24GB", "!"]


def test_word_tokens_use_jieba():
    assert tokenize_zh("我爱北京天安门", "word") == ["我", "爱", "北京", "天安门"]


def test_word_tokens_fall_back_to_chars_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "jieba", None)  # import jieba now raises ImportError
    metrics._load_jieba.cache_clear()
    try:
        with pytest.warns(UserWarning, match="needs jieba"):
            assert tokenize_zh("我爱北京", "word") == ["我", "爱", "北", "京"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert tokenize_zh("上海", "word") == ["上", "海"]
    finally:
        metrics._load_jieba.cache_clear()


def test_unknown_tokenize_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="char, word"):
        tokenize_zh("x", "bpe")


def test_bleu4_chinese_partial_match_with_method3_smoothing():
    # 我爱北京 vs 我爱上海, 4 chars each:
    # p1 = 2/4 (我, 爱); p2 = 1/3 (我爱); p3 = 0/2 -> 1/(2^1 * 2) = 1/4; p4 = 0/1 -> 1/(2^2 * 1) = 1/4
    # BP = 1 (equal length); BLEU = (1/2 * 1/3 * 1/4 * 1/4) ** (1/4) = 96 ** -0.25 = 0.31947
    assert bleu4("我爱北京", "我爱上海") == pytest.approx(100 * 96**-0.25)
    assert bleu4("我爱北京", "我爱上海") == pytest.approx(31.947, abs=1e-3)


def test_bleu4_identical_is_100_and_disjoint_is_0():
    assert bleu4("我爱北京天安门", "我爱北京天安门") == pytest.approx(100.0)
    assert bleu4("你好", "再见") == 0.0  # no unigram in common
    assert bleu4("", "再见") == 0.0


def test_bleu4_brevity_penalty_and_short_identical_strings():
    # 我爱北京 (c=4) vs 我爱北京天安门 (r=7): every n-gram of the prediction matches, p_n = 1;
    # BP = exp(1 - 7/4) = exp(-0.75) = 0.47237
    assert bleu4("我爱北京", "我爱北京天安门") == pytest.approx(100 * math.exp(-0.75))
    # 你好 vs 你好: p1 = p2 = 1, p3 = 0/max(1,0) -> 1/2, p4 -> 1/4; (1/8) ** 0.25 = 0.59460
    assert bleu4("你好", "你好") == pytest.approx(100 * (1 / 8) ** 0.25)


def test_rouge_chinese_chars():
    # 我爱北京 vs 我爱上海: unigrams overlap 2 of 4 each -> P = R = 0.5 -> F1 50;
    # bigrams overlap 1 (我爱) of 3 each -> F1 33.33; LCS = 我爱 = 2 of 4 -> F1 50
    scores = rouge("我爱北京", "我爱上海")
    assert scores == pytest.approx({"rouge-1": 50.0, "rouge-2": 100 / 3, "rouge-l": 50.0})


def test_rouge_counts_repeated_ngrams_and_uses_the_lcs():
    # pred A B C B D A B (7 tokens), ref B D C A B A (6 tokens); the classic LCS is 4 (e.g. B C B A).
    # rouge-1: counts pred A2 B3 C1 D1, ref A2 B2 C1 D1 -> overlap 2+2+1+1 = 6; F1 = 2*6/(7+6) = 12/13
    # rouge-2: pred AB x2, BC, CB, BD, DA; ref BD, DC, CA, AB, BA -> overlap AB 1 + BD 1 = 2; F1 = 4/11
    # rouge-l: F1 = 2*4/(7+6) = 8/13
    scores = rouge("A B C B D A B", "B D C A B A")
    assert scores == pytest.approx({"rouge-1": 1200 / 13, "rouge-2": 400 / 11, "rouge-l": 800 / 13})


def test_rouge_word_level_with_jieba():
    # [我, 爱, 北京, 天安门] vs [我, 爱, 北京]: overlap 3, P = 3/4, R = 1 -> F1 = 6/7;
    # bigrams 2 of 3 vs 2 of 2 -> P = 2/3, R = 1 -> F1 = 0.8; LCS 3 -> 6/7
    scores = rouge("我爱北京天安门", "我爱北京", tokenize="word")
    assert scores == pytest.approx({"rouge-1": 600 / 7, "rouge-2": 80.0, "rouge-l": 600 / 7})


def test_rouge_of_empty_prediction_is_zero():
    assert rouge("", "我爱北京") == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}


def test_parse_entities_lines_none_answer_and_unparsable_lines():
    expected = {("张三", "人名"), ("北京", "地点"), ("胡说", "")}
    assert parse_entities("张三_人名\n\n  北京_地点 \n胡说") == expected
    assert parse_entities(" 没有 \n") == set()
    assert parse_entities("a_b_机构") == {("a_b", "机构")}  # split at the last separator
    assert parse_entities("无", none_answer="无") == set()


def test_entity_prf_micro_and_per_type():
    predictions = ["张三_人名\n北京_地点", "没有", "李四_人名\n胡说"]
    references = ["张三_人名\n上海_地点", "没有", "李四_人名"]
    # predicted 4 (张三, 北京, 李四, 胡说), gold 3 (张三, 上海, 李四), correct 2 (张三, 李四)
    # P = 2/4, R = 2/3, F1 = 2 * (1/2)(2/3) / (1/2 + 2/3) = 4/7
    scores = entity_prf(predictions, references)
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((0.5, 2 / 3, 4 / 7))
    assert (scores["tp"], scores["predicted"], scores["gold"]) == (2, 4, 3)
    per_type = scores["per_type"]
    assert (per_type["人名"]["precision"], per_type["人名"]["recall"]) == (1.0, 1.0)
    assert (per_type["地点"]["tp"], per_type["地点"]["f1"]) == (0, 0.0)
    assert (per_type[""]["predicted"], per_type[""]["precision"]) == (1, 0.0)  # the unparsable line


def test_entity_prf_all_none_is_perfect_and_missed_entities_are_not():
    assert entity_prf(["没有"], ["没有"])["f1"] == 1.0
    missed = entity_prf(["没有"], ["张三_人名"])
    assert (missed["precision"], missed["recall"], missed["f1"]) == (0.0, 0.0, 0.0)


def test_score_generation_per_sample_and_summary():
    predictions, references = ["我爱北京", "张三_人名"], ["我爱上海", "张三_人名"]
    per_sample, summary = score_generation(predictions, references, ["exact_match", "rouge-1", "entity"])
    assert [row["exact_match"] for row in per_sample] == [0.0, 1.0]
    # rouge-1: 50 (see above) and 100 (identical: 张 三 人 名 plus "_" -> 5 of 5) -> mean 75
    assert [row["rouge-1"] for row in per_sample] == pytest.approx([50.0, 100.0])
    assert summary["rouge-1"] == pytest.approx(75.0)
    assert summary["exact_match"] == 0.5
    # row 1: "我爱北京" and "我爱上海" have no "_", so each is one unparsable entity (x, "") and they
    # differ; row 2 matches. predicted 2, gold 2, correct 1 -> P = R = 1/2
    assert (per_sample[0]["entity"]["predicted"], per_sample[0]["entity"]["tp"]) == (1, 0)
    assert (summary["entity"]["precision"], summary["entity"]["recall"]) == (0.5, 0.5)


def test_metric_table_names_and_unknown_names():
    assert set(METRICS) == {"exact_match", "bleu-4", "rouge-1", "rouge-2", "rouge-l", "entity"}
    _, summary = score_generation(["我爱北京"], ["我爱上海"], ["bleu-4", "rouge-2", "rouge-l"])
    assert summary == pytest.approx({"bleu-4": 100 * 96**-0.25, "rouge-2": 100 / 3, "rouge-l": 50.0})
    with pytest.raises(ConfigError, match=r"unknown metric\(s\) bleu; choose from exact_match"):
        score_generation(["a"], ["a"], ["bleu", "rouge-1"])


def test_mismatched_lengths_are_refused():
    with pytest.raises(TunekitError, match="2 predictions but 1 references"):
        score_generation(["a", "b"], ["a"], ["exact_match"])
