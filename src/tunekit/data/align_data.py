"""Preference / prompt records -> the token columns TRL's trainers read, rendered by our template.

    data = prepare_align_data(cfg, template, kind="pairs", layout="prompt")   # PreparedData, as for sft

Every completion is rendered by `ChatTemplate.encode` exactly as an sft answer: the prompt
plus one assistant turn, whose trained tokens (the answer and its end-of-turn) are the
completion; the prompt ids are the tokens before them. TRL receives ids only, so it
never renders a conversation a second time:

  layout "prompt"   prompt_ids, chosen_ids, rejected_ids          (dpo, orpo, simpo)
  layout "joined"   chosen_ids, rejected_ids = prompt + completion (rm)
  unpaired          prompt_ids, completion_ids, label             (kto)
  prompts           prompt (the rendered text), prompt_ids, answer, messages (grpo)

Lengths: a prompt longer than align.max_prompt_len is dropped (counted `prompt_too_long`);
a row whose completion does not fit data.cutoff_len after its prompt follows
data.overlength, as in sft: dropped (`dropped_overlength`) or cut (`truncated`; the cut
completion has no end-of-turn). A pair whose two renderings disagree on the
prompt tokens (a token joining prompt and answer) is a bad row. Preference data is small
and rendered in memory each run (no tokenized cache).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from datasets import Dataset

from tunekit.data.preferences import Pair, PromptRow, Unpaired, load_preference_records
from tunekit.data.records import Conversation, Problem
from tunekit.data.templates import IGNORE_INDEX, ChatTemplate, TemplateError
from tunekit.errors import DataError


@dataclass
class _Limits:
    max_prompt: int
    max_total: int
    overlength: str = "drop"
    counts: dict = field(default_factory=lambda: {"prompt_too_long": 0, "dropped_overlength": 0, "truncated": 0})


def prepare_align_data(cfg, template: ChatTemplate, kind: str, layout: str = "prompt"):
    from tunekit.data.pipeline import PreparedData

    train, stats, problems = build_dataset(cfg, cfg.data.datasets, template, kind, layout)
    evaluation = None
    if cfg.data.eval_datasets:
        evaluation, _, more = build_dataset(cfg, cfg.data.eval_datasets, template, kind, layout)
        problems += more
    elif cfg.data.val_size > 0 and len(train) > 1:
        size = cfg.data.val_size if cfg.data.val_size < 1 else int(cfg.data.val_size)
        split = train.train_test_split(test_size=size, seed=cfg.train.seed)
        train, evaluation = split["train"], split["test"]
    return PreparedData(train, evaluation, stats, problems, fingerprint(cfg, template))


def fingerprint(cfg, template: ChatTemplate) -> str:
    """Hash of what the rows depend on: tokenizer, template, length options, the align section, the files."""
    from tunekit.data.formats import source_files
    from tunekit.data.pipeline import _base_key

    h = hashlib.sha256(_base_key(cfg, template.tokenizer, template).encode())
    h.update(json.dumps([asdict(cfg.align), cfg.data.overlength], sort_keys=True).encode())
    for spec in cfg.data.datasets:
        h.update(json.dumps(asdict(spec), sort_keys=True).encode())
        for path in source_files(spec):
            h.update(path.read_bytes())
    return h.hexdigest()[:20]


def build_dataset(cfg, specs, template: ChatTemplate, kind: str, layout: str = "prompt"):
    """(Dataset, stats, problems) for the records of `specs`."""
    loaded = load_preference_records(specs, kind)
    problems = list(loaded.problems)
    limits = _Limits(cfg.align.max_prompt_len or cfg.data.cutoff_len // 2, cfg.data.cutoff_len,
                     cfg.data.overlength)
    rows = []
    for record in loaded.records:
        try:
            row = ROW_BUILDERS[kind](record, template, limits, layout)
        except (TemplateError, _Bad) as exc:  # a row the template cannot render, or whose two answers disagree
            row, problems = None, problems + [_problem(record.source, str(exc))]
        if row is not None:
            rows.append(row)
    if not rows:
        shown = "".join(f"\n  {p}" for p in problems[:10])
        raise DataError("no usable rows in " + ", ".join(s.path for s in specs) + _dropped(limits) + shown)
    stats = dict(rows_read=loaded.rows_read, kept=len(rows), skipped=len(problems), overlength=limits.overlength,
                 **limits.counts)
    return Dataset.from_list(rows), stats, problems


def _dropped(limits: _Limits) -> str:
    """Why rows went missing for their length, if they did: what to raise."""
    counts = limits.counts
    parts = [f"{counts['prompt_too_long']} prompt(s) longer than align.max_prompt_len ({limits.max_prompt} "
             "tokens)" if counts["prompt_too_long"] else "",
             f"{counts['dropped_overlength']} row(s) longer than data.cutoff_len ({limits.max_total} tokens)"
             if counts["dropped_overlength"] else ""]
    parts = [p for p in parts if p]
    return f": dropped {' and '.join(parts)}; raise the limit" if parts else ""


class _Bad(Exception):
    pass


def _problem(source: str, message: str) -> Problem:
    file, _, line = source.rpartition(":")
    return Problem(file, int(line) if line.isdigit() else 0, message)


def encode_completion(template: ChatTemplate, prompt: list[dict], answer: str, tools=None,
                      source: str = "") -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids): one assistant turn rendered as sft renders it; the completion
    is the trained tokens (the answer and its end-of-turn), the prompt everything before them."""
    conv = Conversation(prompt + [{"role": "assistant", "content": answer}], tools, source)
    enc = template.encode(conv, mask_history=True)
    trained = [i for i, label in enumerate(enc.labels) if label != IGNORE_INDEX]
    return enc.input_ids[: trained[0]], enc.input_ids[trained[0]: trained[-1] + 1]


def _fit(prompt_ids: list[int], completions: list[list[int]], limits: _Limits) -> list[list[int]] | None:
    """Completions that fit the length limit after the prompt (cut, with data.overlength: truncate);
    None when the row is dropped."""
    if len(prompt_ids) > limits.max_prompt:
        limits.counts["prompt_too_long"] += 1
        return None
    room = limits.max_total - len(prompt_ids)
    if any(len(c) > room for c in completions):
        if limits.overlength == "drop":
            limits.counts["dropped_overlength"] += 1
            return None
        limits.counts["truncated"] += 1
    return [c[:room] for c in completions]


def _pair_row(pair: Pair, template: ChatTemplate, limits: _Limits, layout: str) -> dict | None:
    prompt, chosen = encode_completion(template, pair.prompt, pair.chosen, pair.tools, pair.source)
    prompt_r, rejected = encode_completion(template, pair.prompt, pair.rejected, pair.tools, pair.source)
    if prompt != prompt_r:
        raise _Bad("chosen and rejected render the prompt into different tokens (a token joins the prompt and "
                   "the answer): start both answers with a space or a newline, or drop the row")
    fitted = _fit(prompt, [chosen, rejected], limits)
    if fitted is None:
        return None
    if layout == "joined":
        return {"chosen_ids": prompt + fitted[0], "rejected_ids": prompt + fitted[1]}
    return {"prompt_ids": prompt, "chosen_ids": fitted[0], "rejected_ids": fitted[1]}


def _unpaired_row(row: Unpaired, template: ChatTemplate, limits: _Limits, layout: str) -> dict | None:
    prompt, done = encode_completion(template, row.prompt, row.completion, row.tools, row.source)
    fitted = _fit(prompt, [done], limits)
    return None if fitted is None else {"prompt_ids": prompt, "completion_ids": fitted[0], "label": row.label}


def _prompt_row(row: PromptRow, template: ChatTemplate, limits: _Limits, layout: str) -> dict | None:
    text, ids = template.prompt(row.prompt, tools=row.tools)
    if _fit(ids, [], limits) is None:
        return None
    return {"prompt": text, "prompt_ids": ids, "answer": row.answer or "",
            "messages": json.dumps(row.prompt, ensure_ascii=False)}


ROW_BUILDERS = {"pairs": _pair_row, "unpaired": _unpaired_row, "prompts": _prompt_row}
