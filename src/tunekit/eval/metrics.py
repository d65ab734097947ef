"""Text metrics for generated answers: exact match, BLEU-4, ROUGE-1/2/L and entity P/R/F1.

Every metric is a pure function of two strings, small enough to check by hand, and
`score_generation` applies a chosen list of them (by the names in `METRICS`) to a whole
prediction file. Exact definitions:

Tokens (`tokenize_zh`)
  "char" (default, no dependency): every non-space character is a token, except that a
  run of ASCII letters/digits is one token ("GPU显存24GB" -> GPU 显 存 24 GB); whitespace
  is dropped. "word": `jieba.lcut` with whitespace tokens dropped; without jieba installed
  it falls back to "char" and warns once.

BLEU-4 (`bleu4`), 0..100
  Sentence BLEU against one reference, the same arithmetic as
  `nltk.translate.bleu_score.sentence_bleu(..., smoothing_function=SmoothingFunction().method3)`
  used by the ChatGLM-6B P-Tuning and LLaMA-Factory recipes:
  p_n = clipped n-gram matches / max(1, hypothesis n-grams), n = 1..4;
  when no unigram matches the score is 0; otherwise each p_n with zero matches becomes
  1 / (2^k * denominator), k = 1, 2, ... counting the zero-match orders in turn (NIST
  geometric smoothing, nltk "method3"); BP = 1 if c > r, else exp(1 - r/c) (0 when c = 0);
  BLEU = 100 * BP * exp(sum(0.25 * ln p_n)). Identical strings of 4 or more tokens score
  100; identical strings shorter than 4 tokens score less (their 3/4-gram orders are
  empty and get smoothed), exactly as nltk does. The recipes tokenize BLEU by `list(text)`
  (spaces are tokens there); ours drops spaces and keeps ASCII words whole.

ROUGE (`rouge`), F1 x 100
  rouge-n: overlap = sum over n-grams of min(count in prediction, count in reference);
  P = overlap / prediction n-grams, R = overlap / reference n-grams, F1 = 2PR / (P + R).
  rouge-l: the same F1 with overlap = length of the longest common subsequence and the
  token counts as denominators. Zero overlap (or an empty side) gives 0. The recipes call
  the `rouge_chinese` package on space-joined jieba words; that package counts *distinct*
  n-grams (sets, not counts) and uses an F-measure with beta = P/R for rouge-l, so its
  numbers can differ slightly on texts with repeated n-grams or P != R.

Entities (`parse_entities`, `entity_prf`), fractions 0..1
  An answer is one entity per line, "entity<sep>type" split at the last separator; the
  none answer ("没有") means no entities. A non-blank line without the separator is the
  unparsable prediction (line, "") — it counts as predicted, so it lowers precision.
  Micro P/R/F1 over all samples from summed counts of exact (entity, type) matches,
  plus the same per type. When nothing was predicted and nothing was expected,
  P = R = F1 = 1; otherwise a zero denominator gives 0.

Exact match compares `normalize`d strings (lower-cased, punctuation removed, whitespace
collapsed) unless told not to; 1.0 or 0.0.
"""

from __future__ import annotations

import math
import re
import unicodedata
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from tunekit.errors import ConfigError, TunekitError

TOKENIZE_MODES = ("char", "word")
_CHAR_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")


# ---------------------------------------------------------------- normalising, tokens


def normalize(text: str, *, lower: bool = True, strip_punct: bool = True, collapse_space: bool = True) -> str:
    """Lower-case, drop Unicode punctuation (ASCII and full-width) and collapse whitespace."""
    if lower:
        text = text.lower()
    if strip_punct:
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    if collapse_space:
        text = re.sub(r"\s+", " ", text).strip()
    return text


@lru_cache(maxsize=1)
def _load_jieba():
    """jieba, quietened, or None (with one warning) when it is not installed."""
    try:
        import jieba
    except ImportError:
        warnings.warn(
            "tokenize='word' needs jieba (pip install 'tunekit[eval]'); using character tokens instead",
            stacklevel=3,
        )
        return None
    jieba.setLogLevel("WARNING")
    return jieba


def tokenize_zh(text: str, mode: str = "char") -> list[str]:
    """Split Chinese (or mixed) text into the tokens BLEU and ROUGE count; see the module docstring."""
    if mode not in TOKENIZE_MODES:
        raise ConfigError(f"unknown tokenize mode {mode!r}; use one of {', '.join(TOKENIZE_MODES)}")
    jieba = _load_jieba() if mode == "word" else None
    if jieba is None:
        return _CHAR_TOKEN.findall(text)
    return [word.strip() for word in jieba.lcut(text) if word.strip()]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _clipped_matches(hypothesis: list[str], reference: list[str], n: int) -> int:
    hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
    return sum(min(count, ref[gram]) for gram, count in hyp.items())


# ---------------------------------------------------------------- exact match, BLEU, ROUGE


def exact_match(prediction: str, reference: str, normalize_text: bool = True) -> float:
    """1.0 when the strings are equal (after `normalize` unless normalize_text=False), else 0.0."""
    if normalize_text:
        prediction, reference = normalize(prediction), normalize(reference)
    return float(prediction == reference)


def _method3(matches: list[int], totals: list[int]) -> list[float]:
    """nltk SmoothingFunction.method3: the k-th zero-match order gets 1 / (2^k * total)."""
    smoothed, k = [], 1
    for match, total in zip(matches, totals):
        if match:
            smoothed.append(match / total)
        else:
            smoothed.append(1 / (2**k * total))
            k += 1
    return smoothed


def _brevity_penalty(hyp_len: int, ref_len: int) -> float:
    if hyp_len > ref_len:
        return 1.0
    if hyp_len == 0:
        return 0.0
    return math.exp(1 - ref_len / hyp_len)


def bleu4(prediction: str, reference: str, tokenize: str = "char") -> float:
    """Sentence BLEU-4 with nltk's method3 smoothing, 0..100 (module docstring has the formula)."""
    hyp, ref = tokenize_zh(prediction, tokenize), tokenize_zh(reference, tokenize)
    matches = [_clipped_matches(hyp, ref, n) for n in range(1, 5)]
    if matches[0] == 0:
        return 0.0
    totals = [max(1, len(hyp) - n + 1) for n in range(1, 5)]
    log_mean = sum(0.25 * math.log(p) for p in _method3(matches, totals))
    return 100 * _brevity_penalty(len(hyp), len(ref)) * math.exp(log_mean)


def _f1_x100(overlap: int, predicted: int, expected: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / expected
    return 100 * 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


@lru_cache(maxsize=64)
def _rouge_scores(prediction: str, reference: str, tokenize: str) -> tuple[float, float, float]:
    hyp, ref = tokenize_zh(prediction, tokenize), tokenize_zh(reference, tokenize)
    rouge_n = [
        _f1_x100(_clipped_matches(hyp, ref, n), len(hyp) - n + 1, len(ref) - n + 1) for n in (1, 2)
    ]
    return rouge_n[0], rouge_n[1], _f1_x100(_lcs_length(hyp, ref), len(hyp), len(ref))


def rouge(prediction: str, reference: str, tokenize: str = "char") -> dict[str, float]:
    """{"rouge-1", "rouge-2", "rouge-l"}: F1 x 100 on n-gram counts and on the LCS."""
    r1, r2, rl = _rouge_scores(prediction, reference, tokenize)
    return {"rouge-1": r1, "rouge-2": r2, "rouge-l": rl}


# ---------------------------------------------------------------- entities (NER answers)


def parse_entities(text: str, none_answer: str = "没有", sep: str = "_") -> set[tuple[str, str]]:
    """Lines "entity<sep>type" -> {(entity, type)}; the none answer -> set(); no separator -> (line, "")."""
    entities = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line == none_answer:
            continue
        entity, found, kind = line.rpartition(sep)
        entities.add((entity.strip(), kind.strip()) if found else (line, ""))
    return entities


def _prf(tp: int, predicted: int, gold: int) -> dict[str, float]:
    if predicted == 0 and gold == 0:
        precision = recall = 1.0
    else:
        precision = tp / predicted if predicted else 0.0
        recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "predicted": predicted, "gold": gold}


def _check_pairs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise TunekitError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "score a prediction file made from the same dataset rows"
        )


def entity_prf(predictions: list[str], references: list[str], none_answer: str = "没有", sep: str = "_") -> dict:
    """Micro precision/recall/F1 of (entity, type) pairs over all samples, and "per_type"."""
    _check_pairs(predictions, references)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # type -> tp, predicted, gold
    for prediction, reference in zip(predictions, references):
        predicted, gold = parse_entities(prediction, none_answer, sep), parse_entities(reference, none_answer, sep)
        for entities, column in ((predicted & gold, 0), (predicted, 1), (gold, 2)):
            for _, kind in entities:
                counts[kind][column] += 1
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    return {**_prf(*total), "per_type": {kind: _prf(*c) for kind, c in sorted(counts.items())}}


# ---------------------------------------------------------------- the table and the runner


@dataclass(frozen=True)
class Metric:
    """One named metric: its per-sample value and how the values of a whole file are summarised."""

    sample: Callable[[str, str, dict], Any]  # (prediction, reference, options) -> value
    summary: Callable[[list[str], list[str], list, dict], Any]  # (predictions, references, values, options)


def _mean(predictions, references, values, options) -> float:
    return sum(values) / len(values)


def _entity_sample(prediction: str, reference: str, options: dict) -> dict:
    scores = entity_prf([prediction], [reference], options["none_answer"], options["sep"])
    scores.pop("per_type")
    return scores


def _entity_summary(predictions, references, values, options) -> dict:
    return entity_prf(predictions, references, options["none_answer"], options["sep"])


METRICS: dict[str, Metric] = {
    "exact_match": Metric(lambda p, r, o: exact_match(p, r, o["normalize_text"]), _mean),
    "bleu-4": Metric(lambda p, r, o: bleu4(p, r, o["tokenize"]), _mean),
    "rouge-1": Metric(lambda p, r, o: rouge(p, r, o["tokenize"])["rouge-1"], _mean),
    "rouge-2": Metric(lambda p, r, o: rouge(p, r, o["tokenize"])["rouge-2"], _mean),
    "rouge-l": Metric(lambda p, r, o: rouge(p, r, o["tokenize"])["rouge-l"], _mean),
    "entity": Metric(_entity_sample, _entity_summary),
}


def _chosen_metrics(names: list[str]) -> dict[str, Metric]:
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if not names:
        raise ConfigError(f"no metrics chosen; choose from {', '.join(METRICS)}")
    return {name: METRICS[name] for name in names}


def score_generation(
    predictions: list[str],
    references: list[str],
    metrics: list[str],
    *,
    tokenize: str = "char",
    normalize_text: bool = True,
    none_answer: str = "没有",
    sep: str = "_",
) -> tuple[list[dict], dict]:
    """Score each (prediction, reference) pair with the named metrics.

    Returns (per_sample, summary): per_sample[i] maps metric name -> value for row i;
    summary maps name -> the mean over rows, or for "entity" the micro P/R/F1 with per_type.
    """
    _check_pairs(predictions, references)
    if not predictions:
        raise TunekitError("no predictions to score; the prediction file is empty")
    chosen = _chosen_metrics(metrics)
    options = {"tokenize": tokenize, "normalize_text": normalize_text, "none_answer": none_answer, "sep": sep}
    per_sample = [
        {name: metric.sample(p, r, options) for name, metric in chosen.items()}
        for p, r in zip(predictions, references)
    ]
    summary = {
        name: metric.summary(predictions, references, [row[name] for row in per_sample], options)
        for name, metric in chosen.items()
    }
    return per_sample, summary
