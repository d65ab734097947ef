"""What is evaluated, and how: a generation task (answers scored by text metrics) or a
multiple-choice task (option letters scored by log-likelihood), chosen by the data.

    task = load_task("data/ner_test.jsonl", cfg.eval)   # metrics from eval.metrics, else from the data
    print(task.describe())                             # says what was chosen and why
    result = task.run(engine, label="tuned")           # TaskResult: rows, summary, scores

Metric defaults when eval.metrics is empty: a C-Eval / CMMLU / MMLU-style file or folder
(CSV header question,A,B..., or JSON rows with question and options) -> choice accuracy;
references that are all `entity<sep>type` lines or the none answer -> entity P/R/F1;
any other references -> exact_match, bleu-4, rouge-1, rouge-2, rouge-l; no references ->
predictions only, nothing scored. `TaskResult.scores` puts every number on one 0..100
scale (exact match and entity P/R/F1 as percentages) for tables and charts; the raw
summary of metrics.py / choice.py is kept in `summary`.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from tunekit.config import EvalConfig
from tunekit.errors import ConfigError
from tunekit.eval.choice import CHOICE_SUFFIXES, LETTERS, ChoiceItem, load_choice_items, score_choices
from tunekit.eval.metrics import score_generation
from tunekit.eval.samples import EvalSample, as_spec, load_eval_samples
from tunekit.infer.params import GenerationParams

TEXT_METRICS = ["exact_match", "bleu-4", "rouge-1", "rouge-2", "rouge-l"]
CHOICE = "choice"
HEADLINES = {"entity": "entity_f1", CHOICE: "accuracy"}  # the task metric of a metric set; else its first
PERCENT = {"exact_match", "accuracy"}  # fractions in the summaries, shown x 100


@dataclass
class TaskResult:
    rows: list[dict]  # one per test row: prompt, reference, prediction, scores (None when unscored)
    summary: dict | None  # the metric summary as metrics.py / choice.py return it; None when unscored
    scores: dict[str, float] = field(default_factory=dict)  # flat, 0..100
    headline: str | None = None  # the key of `scores` that measures the task


def flat_scores(summary: dict) -> dict[str, float]:
    """{"exact_match": 50.0, "bleu-4": ..., "entity_f1": ..., "accuracy": ...}, all 0..100."""
    flat = {}
    for name, value in summary.items():
        if isinstance(value, dict) and "f1" in value:  # entity: precision / recall / f1 fractions
            flat.update({f"{name}_{k}": 100 * value[k] for k in ("precision", "recall", "f1")})
        elif isinstance(value, (int, float)):
            flat[name] = 100 * value if name in PERCENT else float(value)
    return flat


def headline_of(metrics: list[str]) -> str:
    return HEADLINES.get(metrics[0], metrics[0])


def row_score(row: dict, headline: str | None) -> float | None:
    """One prediction row's value of the task metric, 0..100; None when the row was not scored."""
    scores = row.get("scores")
    if not scores or headline is None:
        return None
    if headline == "entity_f1":
        return 100 * scores["entity"]["f1"]
    if headline == "accuracy":
        return 100 * scores["correct"]
    return 100 * scores[headline] if headline in PERCENT else scores[headline]


# ---------------------------------------------------------------- choosing


def looks_like_entities(reference: str, none_answer: str, sep: str) -> bool:
    """Every non-blank line is `entity<sep>type` (a short type without spaces) or the none answer."""
    line_pattern = re.compile(rf".+{re.escape(sep)}[^\s{re.escape(sep)}]{{1,16}}")
    lines = [line.strip() for line in reference.splitlines() if line.strip()]
    return bool(lines) and all(line == none_answer or line_pattern.fullmatch(line) for line in lines)


def choose_metrics(references: list[str | None], cfg: EvalConfig) -> tuple[list[str], str]:
    """(metric names, why): eval.metrics when set, else decided by the references."""
    if cfg.metrics:
        return list(cfg.metrics), "set by eval.metrics"
    given = [r for r in references if r is not None]
    if not given:
        return [], "the test set has no references: predictions only, nothing scored"
    if all(looks_like_entities(r, cfg.none_answer, cfg.entity_sep) for r in given):
        return ["entity"], (f"chosen from the data: every reference is `entity{cfg.entity_sep}type` lines or "
                            f"'{cfg.none_answer}'; set eval.metrics to choose")
    return list(TEXT_METRICS), "chosen from the data: free-text references; set eval.metrics to choose"


def is_choice_data(path) -> bool:
    """A C-Eval / CMMLU / MMLU-style file or folder: question + options, one question per row."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in CHOICE_SUFFIXES)
        return bool(files) and all(_is_choice_file(p) for p in files[:1])
    return path.is_file() and path.suffix.lower() in CHOICE_SUFFIXES and _is_choice_file(path)


def _is_choice_file(path: Path) -> bool:
    try:
        if path.suffix.lower() == ".csv":
            with path.open(encoding="utf-8-sig", newline="") as handle:
                first = [cell.strip() for cell in next(csv.reader(handle), [])]
            named = {cell.lower() for cell in first}
            headerless_mmlu = len(first) >= 6 and first[-1].upper() in LETTERS
            return {"question", "a", "b"} <= named or headerless_mmlu
        text = path.read_text(encoding="utf-8-sig")
        row = json.loads(text.splitlines()[0]) if path.suffix.lower() == ".jsonl" else json.loads(text)[0]
    except (OSError, ValueError, IndexError, KeyError, UnicodeDecodeError):
        return False
    keys = {str(k).lower() for k in row} if isinstance(row, dict) else set()
    return "question" in keys and bool(keys & {"choices", "options", "a"})


def load_task(data, cfg: EvalConfig) -> GenerationTask | ChoiceTask:
    """The task for a test set: choice for question files (or metrics: [choice]), else generation."""
    path = as_spec(data).path
    if cfg.metrics == [CHOICE] or not cfg.metrics and is_choice_data(path):
        items = load_choice_items(path)[: cfg.max_samples]
        pool = load_choice_items(cfg.shot_data) if cfg.shot_data else None
        return ChoiceTask(items, cfg, pool)
    if is_choice_data(path):
        raise ConfigError(f"{path} holds multiple-choice questions, which are scored by option likelihood: "
                          "use eval.metrics: [choice] (or leave eval.metrics empty)")
    samples = load_eval_samples(data, cfg.max_samples)
    metrics, reason = choose_metrics([s.reference for s in samples], cfg)
    return GenerationTask(samples, metrics, reason, cfg)


# ---------------------------------------------------------------- running


class GenerationTask:
    kind = "generation"

    def __init__(self, samples: list[EvalSample], metrics: list[str], reason: str, cfg: EvalConfig):
        self.samples, self.metrics, self.reason, self.cfg = samples, metrics, reason, cfg
        self.scored = [i for i, s in enumerate(samples) if s.reference is not None] if metrics else []

    @property
    def headline(self) -> str | None:
        return headline_of(self.metrics) if self.metrics else None

    def describe(self) -> str:
        lines = [f"{len(self.samples)} prompts; metrics: {', '.join(self.metrics) or 'none'} ({self.reason})"]
        missing = len(self.samples) - len(self.scored) if self.metrics else 0
        if missing:
            lines.append(f"{missing} row(s) have no reference: predicted, not scored")
        return "\n".join(lines)

    def run(self, engine, label: str = "", progress: bool = True) -> TaskResult:
        replies = generate(engine, [s.messages for s in self.samples], self.cfg, label, progress)
        rows = [_generation_row(s, r) for s, r in zip(self.samples, replies)]
        if not self.scored:
            return TaskResult(rows, None)
        per_sample, summary = score_generation(
            [rows[i]["prediction"] for i in self.scored], [rows[i]["reference"] for i in self.scored],
            self.metrics, tokenize=self.cfg.tokenize, normalize_text=self.cfg.normalize,
            none_answer=self.cfg.none_answer, sep=self.cfg.entity_sep)
        for i, scores in zip(self.scored, per_sample):
            rows[i]["scores"] = scores
        return TaskResult(rows, summary, flat_scores(summary), self.headline)


def generate(engine, conversations: list[list[dict]], cfg: EvalConfig, label: str = "",
             progress: bool = True) -> list:
    """Greedy answers through `engine.batch`, a batch at a time, with a progress bar."""
    params = GenerationParams(max_new_tokens=cfg.max_new_tokens)
    size = cfg.predict_batch_size
    replies = []
    with tqdm(total=len(conversations), desc=f"generating {label}".strip(), unit="prompt",
              disable=not progress) as bar:
        for start in range(0, len(conversations), size):
            chunk = conversations[start: start + size]
            replies += engine.batch(chunk, params, batch_size=size)
            bar.update(len(chunk))
    return replies


def _generation_row(sample: EvalSample, reply) -> dict:
    """A prediction is the answer the model gave: a reasoning model's <think> part (split off by the
    template's parser, also when the prompt opened it) is kept apart as `reasoning`, never scored."""
    row = {"source": sample.source, "prompt": sample.prompt, "reference": sample.reference,
           "prediction": reply.text if reply.reasoning is None else reply.content or "", "scores": None,
           "finish_reason": reply.finish_reason, "completion_tokens": reply.completion_tokens}
    if reply.reasoning is not None:
        row["reasoning"] = reply.reasoning
    if len(sample.messages) > 1:
        row["messages"] = sample.messages
    return row


class ChoiceTask:
    kind = "choice"
    metrics = [CHOICE]
    headline = "accuracy"

    def __init__(self, items: list[ChoiceItem], cfg: EvalConfig, shot_pool: list[ChoiceItem] | None = None):
        self.items, self.cfg, self.shot_pool = items, cfg, shot_pool
        self.reason = "set by eval.metrics" if cfg.metrics else "chosen from the data: multiple-choice questions"

    def describe(self) -> str:
        unanswered = sum(item.answer is None for item in self.items)
        lines = [f"{len(self.items)} questions; metric: choice accuracy, {self.cfg.shots}-shot ({self.reason})"]
        if unanswered:
            lines.append(f"{unanswered} question(s) have no answer: predicted, not scored")
        return "\n".join(lines)

    def run(self, engine, label: str = "", progress: bool = True) -> TaskResult:
        pool = self.shot_pool if self.shot_pool is not None else self.items
        size = self.cfg.predict_batch_size
        predictions, scores, counts = [], [], {}
        with tqdm(total=len(self.items), desc=f"scoring {label}".strip(), unit="question",
                  disable=not progress) as bar:
            for start in range(0, len(self.items), size):
                chunk = self.items[start: start + size]
                part = score_choices(engine.model, engine.tokenizer, chunk, self.cfg.shots, size, shot_pool=pool)
                predictions += part["predictions"]
                scores += part["scores"]
                _add_counts(counts, part["per_subject"])
                bar.update(len(chunk))
        rows = [_choice_row(item, p, s) for item, p, s in zip(self.items, predictions, scores)]
        total = sum(c["total"] for c in counts.values())
        if not total:
            return TaskResult(rows, None)
        summary = {"accuracy": sum(c["correct"] for c in counts.values()) / total, "per_subject": counts}
        return TaskResult(rows, summary, flat_scores(summary), self.headline)


def _add_counts(counts: dict, per_subject: dict) -> None:
    for subject, part in per_subject.items():
        mine = counts.setdefault(subject, {"correct": 0, "total": 0})
        mine["correct"] += part["correct"]
        mine["total"] += part["total"]
        mine["accuracy"] = mine["correct"] / mine["total"]


def _choice_row(item: ChoiceItem, prediction: str, scores: dict) -> dict:
    prompt = "\n".join([item.question] + [f"{k}. {v}" for k, v in item.options.items()])
    score = None if item.answer is None else {"correct": float(prediction == item.answer)}
    return {"source": item.source, "subject": item.subject, "prompt": prompt, "reference": item.answer,
            "prediction": prediction, "scores": score, "option_logprobs": scores}
