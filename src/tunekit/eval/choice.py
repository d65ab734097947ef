"""Multiple-choice accuracy for C-Eval / CMMLU / MMLU-style question files.

`load_choice_items` reads a CSV / JSON / JSONL file, or a folder of them (one subject per
file), into `ChoiceItem`s and refuses bad rows with FILE:LINE and what to fix.
`build_choice_prompt` writes "question / A. .. / 答案：" with few-shot examples first.
`score_choices` asks the model which option letter comes next: for each letter it takes
the next-token log-probability of the letter token, with and without a leading space
(log-sum-exp of the distinct single tokens that decode to the letter), and picks the
highest-scoring option. Prompts are batched with left padding and explicit position ids,
so a batch scores the same as one prompt at a time. Works with any causal LM, on CPU too.

    items = load_choice_items("ceval/val")
    result = score_choices(model, tokenizer, items, shots=5, shot_pool=load_choice_items("ceval/dev"))
    result["accuracy"], result["per_subject"]["accountant"]["accuracy"]
"""

from __future__ import annotations

import csv
import inspect
import json
import re
from dataclasses import dataclass
from itertools import chain, takewhile
from pathlib import Path

import torch

from tunekit.data.formats import BadRow  # one row that cannot be used; collected into one DataError
from tunekit.errors import DataError, TunekitError
from tunekit.model.padding import left_padded, positions

LETTERS = "ABCDEFGHIJ"
CHOICE_SUFFIXES = (".csv", ".json", ".jsonl")
_SPLIT_SUFFIX = re.compile(r"_(val|dev|test|train)$")
_MAX_PROBLEMS_SHOWN = 10


@dataclass
class ChoiceItem:
    question: str
    options: dict[str, str]  # {"A": ..., "B": ...}
    answer: str | None  # an option letter; None when the file has no answers (e.g. C-Eval test)
    source: str  # "file:line"
    subject: str = ""


# ---------------------------------------------------------------- loading


def _subject_of(path: Path) -> str:
    return _SPLIT_SUFFIX.sub("", path.stem)


def _make_item(question, options: dict, answer, source: str, subject: str) -> ChoiceItem:
    """A validated item; raises BadRow saying what to fix."""
    if not str(question or "").strip():
        raise BadRow("the question is empty; fill it in or delete the row")
    for letter, text in options.items():
        if not str(text if text is not None else "").strip():
            raise BadRow(f"option {letter} is empty; fill it in or delete the row")
    if len(options) < 2:
        raise BadRow("fewer than two options; a row needs question, A, B[, C, D...] and answer")
    if answer is not None:
        answer = str(answer).strip().upper()
        if answer not in options:
            raise BadRow(
                f"answer {answer!r} is not one of the options {', '.join(options)}; "
                "write the letter of the correct option"
            )
    options = {letter: str(text).strip() for letter, text in options.items()}
    return ChoiceItem(str(question).strip(), options, answer, source, subject)


def _header_columns(header: list[str]) -> dict | None:
    """Column indices of a C-Eval / CMMLU header row, or None when the row is not a header."""
    names = [cell.strip().lower() for cell in header]
    if "question" not in names or "a" not in names:
        return None
    letters = list(takewhile(lambda letter: letter.lower() in names, LETTERS))
    return {
        "question": names.index("question"),
        "options": {letter: names.index(letter.lower()) for letter in letters},
        "answer": names.index("answer") if "answer" in names else None,
    }


def _csv_item(row: list[str], columns: dict | None, source: str, subject: str) -> ChoiceItem:
    if columns is None:  # MMLU: question, A, B, C, D, answer without a header
        if len(row) < 4:
            raise BadRow(f"{len(row)} columns; an MMLU-style row is question,A,B,C,D,answer")
        options = dict(zip(LETTERS, row[1:-1]))
        return _make_item(row[0], options, row[-1], source, subject)
    cell = dict(enumerate(row))  # a short row reads as empty cells
    options = {letter: cell.get(i, "") for letter, i in columns["options"].items()}
    answer = None if columns["answer"] is None else cell.get(columns["answer"], "")
    return _make_item(cell.get(columns["question"], ""), options, answer, source, subject)


def _read_csv(path: Path, problems: list[str]) -> list[ChoiceItem]:
    items, subject = [], _subject_of(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        first = next(reader, [])
        columns = _header_columns(first)
        rows = reader if columns is not None else chain([first], reader)
        last_line = reader.line_num if columns is not None else 0
        for row in rows:
            start, last_line = last_line + 1, reader.line_num  # a quoted cell may span lines
            if not any(cell.strip() for cell in row):
                continue
            try:
                items.append(_csv_item(row, columns, f"{path}:{start}", subject))
            except BadRow as bad:
                problems.append(f"{path}:{start}: {bad}")
    return items


def _json_options(record: dict) -> dict:
    listed = record.get("choices", record.get("options"))
    if isinstance(listed, dict):
        return {str(k).strip().upper(): v for k, v in listed.items()}
    if isinstance(listed, list):
        return dict(zip(LETTERS, listed))
    return {letter: record[letter.lower()] for letter in LETTERS if letter.lower() in record}


def _json_item(record, source: str, subject: str) -> ChoiceItem:
    if not isinstance(record, dict):
        raise BadRow("expected an object with question, options (A, B, ... or choices) and answer")
    record = {str(key).strip().lower(): value for key, value in record.items()}
    answer = record.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool):  # HF MMLU: index into choices
        answer = LETTERS[answer] if 0 <= answer < len(LETTERS) else str(answer)
    return _make_item(record.get("question"), _json_options(record), answer, source, record.get("subject") or subject)


def _parse_json(text: str, where: str, line_offset: int = 0):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}:{error.lineno + line_offset}: not valid JSON ({error.msg}); fix the file") from error


def _json_rows(path: Path) -> list[tuple[str, object]]:
    """(source, record) pairs: "file:line" for JSONL, "file:item N" for a JSON list."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".jsonl":
        lines = enumerate(text.splitlines(), 1)
        return [(f"{path}:{n}", _parse_json(line, str(path), n - 1)) for n, line in lines if line.strip()]
    records = _parse_json(text, str(path))
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of questions (or JSONL, one per line)")
    return [(f"{path}:item {n}", record) for n, record in enumerate(records, 1)]


def _read_json(path: Path, problems: list[str]) -> list[ChoiceItem]:
    items, subject = [], _subject_of(path)
    for source, record in _json_rows(path):
        try:
            items.append(_json_item(record, source, subject))
        except BadRow as bad:
            problems.append(f"{source}: {bad}")
    return items


def _choice_files(path: Path) -> list[Path]:
    if not path.exists():
        raise DataError(f"{path} does not exist; give a C-Eval / CMMLU / MMLU CSV, JSON or JSONL file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in CHOICE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path} holds no .csv, .json or .jsonl files")
    for file in files:
        if file.suffix.lower() not in CHOICE_SUFFIXES:
            raise DataError(f"{file}: unsupported file type; use .csv, .json or .jsonl")
    return files


def load_choice_items(path: str | Path) -> list[ChoiceItem]:
    """Read every question of a file, or of a folder of files (one subject per file)."""
    items: list[ChoiceItem] = []
    problems: list[str] = []
    for file in _choice_files(Path(path)):
        read = _read_csv if file.suffix.lower() == ".csv" else _read_json
        items.extend(read(file, problems))
    if problems:
        shown = "\n".join(problems[:_MAX_PROBLEMS_SHOWN])
        more = f"\n... and {len(problems) - _MAX_PROBLEMS_SHOWN} more" if len(problems) > _MAX_PROBLEMS_SHOWN else ""
        raise DataError(f"{len(problems)} question row(s) cannot be scored:\n{shown}{more}")
    if not items:
        raise DataError(f"{path} holds no questions")
    return items


# ---------------------------------------------------------------- prompts


def _format_question(item: ChoiceItem) -> str:
    lines = [item.question] + [f"{letter}. {text}" for letter, text in item.options.items()]
    return "\n".join(lines) + "\n答案："


def build_choice_prompt(item: ChoiceItem, shots: list[ChoiceItem] = (), subject: str | None = None) -> str:
    """Header (when a subject is given), answered examples, then the question ending in "答案："."""
    header = ""
    if subject:
        header = f"以下是关于{subject.replace('_', ' ')}的单项选择题，请直接给出正确答案的选项。\n\n"
    examples = []
    for shot in shots:
        if shot.answer is None:
            raise TunekitError(f"{shot.source}: a few-shot example needs an answer; use a labelled split (dev)")
        examples.append(f"{_format_question(shot)}{shot.answer}\n\n")
    return header + "".join(examples) + _format_question(item)


def _shots_for(item: ChoiceItem, pool: list[ChoiceItem], count: int) -> list[ChoiceItem]:
    """The first `count` answered items of the same subject, never the item itself."""
    same = [s for s in pool if s.subject == item.subject and s.answer is not None and s.source != item.source]
    return same[:count]


def _prompt_ids(tokenizer, prompt: str, chat_template: str | bool | None) -> list[int]:
    if not chat_template:
        return tokenizer(prompt)["input_ids"]
    template = None if chat_template is True else chat_template
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], chat_template=template, add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- scoring


def _letter_token_ids(tokenizer, letter: str) -> list[int]:
    """Distinct single tokens that decode to the letter: "A" and " A" (or SentencePiece "▁A")."""
    ids = set()
    for text in (letter, " " + letter):
        pieces = tokenizer.encode(text, add_special_tokens=False)
        if pieces and tokenizer.decode(pieces[-1:]).strip() == letter:
            ids.add(pieces[-1])
    if not ids:
        raise TunekitError(
            f"the tokenizer has no token for option letter {letter!r}; this model cannot be scored by letter"
        )
    return sorted(ids)


def _forward_options(model) -> set[str]:
    """Which of position_ids / logits_to_keep the (base) model's forward names explicitly."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"position_ids", "logits_to_keep"} & set(inspect.signature(base.forward).parameters)


def _next_token_logprobs(model, batch: list[list[int]], pad_id: int) -> torch.Tensor:
    """[batch, vocab] log-probabilities of the token after each prompt, prompts left-padded."""
    input_ids, mask = left_padded(batch, pad_id, model.device)
    inputs = {"input_ids": input_ids, "attention_mask": mask}
    accepted = _forward_options(model)
    if "position_ids" in accepted:
        inputs["position_ids"] = positions(mask)
    if "logits_to_keep" in accepted:
        inputs["logits_to_keep"] = 1
    return model(**inputs).logits[:, -1, :].float().log_softmax(-1)


def _option_scores(model, prompts: list[list[int]], letter_ids: dict, batch_size: int, pad_id: int) -> list[dict]:
    """Per prompt, {letter: log-sum-exp of the letter's token log-probs}; shortest prompts batched together."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    scores: list[dict] = [{} for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        logprobs = _next_token_logprobs(model, [prompts[i] for i in chunk], pad_id)
        for row, i in enumerate(chunk):
            scores[i] = {letter: torch.logsumexp(logprobs[row, ids], 0).item() for letter, ids in letter_ids.items()}
    return scores


def _accuracy(items: list[ChoiceItem], predictions: list[str]) -> tuple[float | None, dict]:
    per_subject: dict[str, dict] = {}
    for item, predicted in zip(items, predictions):
        if item.answer is None:
            continue
        counts = per_subject.setdefault(item.subject, {"correct": 0, "total": 0})
        counts["correct"] += predicted == item.answer
        counts["total"] += 1
    for counts in per_subject.values():
        counts["accuracy"] = counts["correct"] / counts["total"]
    total = sum(c["total"] for c in per_subject.values())
    accuracy = sum(c["correct"] for c in per_subject.values()) / total if total else None
    return accuracy, per_subject


def score_choices(
    model,
    tokenizer,
    items: list[ChoiceItem],
    shots: int = 0,
    batch_size: int = 8,
    chat_template: str | bool | None = None,
    shot_pool: list[ChoiceItem] | None = None,
) -> dict:
    """Pick each item's most likely option letter and measure accuracy.

    shots: answered examples per prompt, taken from shot_pool (default: items, never the
    question itself) in the same subject. chat_template: None for a plain prompt, True for
    the tokenizer's own template, or a Jinja string; the prompt becomes one user turn.
    Returns {"accuracy" (None when no item has an answer), "per_subject": {subject:
    {"accuracy", "correct", "total"}}, "predictions": [letter per item], "scores":
    [{letter: log-prob} per item]}.
    """
    pool = items if shot_pool is None else shot_pool
    prompts = [
        _prompt_ids(tokenizer, build_choice_prompt(item, _shots_for(item, pool, shots), item.subject), chat_template)
        for item in items
    ]
    letters = sorted({letter for item in items for letter in item.options})
    letter_ids = {letter: _letter_token_ids(tokenizer, letter) for letter in letters}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            all_scores = _option_scores(model, prompts, letter_ids, batch_size, pad_id)
    finally:
        model.train(was_training)
    scores = [{letter: s[letter] for letter in item.options} for item, s in zip(items, all_scores)]
    predictions = [max(s, key=s.get) for s in scores]
    accuracy, per_subject = _accuracy(items, predictions)
    return {"accuracy": accuracy, "per_subject": per_subject, "predictions": predictions, "scores": scores}
