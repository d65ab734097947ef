"""Validation report and preview: file:line problems, counts, token-length percentiles.

    tunekit data check CONFIG.yaml     -> exit 1 if any row is invalid
    tunekit data preview CONFIG.yaml   -> rendered samples with the trained spans marked

`data check` and `train` report bad rows the same way (`problem_report`): the first
SHOWN_PROBLEMS as FILE:LINE lines, the count, and the full list in a file beside the
tokenized cache. `train` refuses to start on bad rows unless data.skip_bad_rows is true
(`refuse_bad_rows`).
"""

from __future__ import annotations

from pathlib import Path

from tunekit.data.records import Conversation, Problem
from tunekit.data.templates import IGNORE_INDEX, ChatTemplate
from tunekit.errors import DataError
from tunekit.export.atomic import write_text_atomic

SHOWN_PROBLEMS = 20

TRAINED_OPEN, TRAINED_CLOSE = "\x1b[42;30m", "\x1b[0m"  # green background on a terminal
PLAIN_OPEN, PLAIN_CLOSE = "[[", "]]"
SAMPLE_SEPARATOR = "\n--- next sample (same conversation, next turn) ---\n"


def format_report(stats: dict, problems, cutoff_len: int, problems_file: Path | None = None) -> str:
    lines = [problem_report(problems, problems_file)] if problems else []
    counts = f"rows read: {stats.get('rows_read', 0)}  kept: {stats.get('kept', 0)}  skipped: {stats.get('skipped', 0)}"
    if "blocks" in stats:
        counts += f"  blocks: {stats['blocks']}  tokens: {stats['tokens']}"
    else:
        counts += (f"  longer than cutoff_len {cutoff_len}: dropped {stats.get('dropped_overlength', 0)}, "
                   f"truncated {stats.get('truncated', 0)} (data.overlength: {stats.get('overlength', 'drop')})  "
                   f"answer truncated away: {stats.get('answers_lost', 0)}")
    lines.append(counts)
    lines.append("token lengths: " + "  ".join(f"{k} {stats.get(k, 0)}" for k in ("p50", "p90", "p99", "max")))
    if stats.get("split"):
        lines.append(f"per-turn samples: {stats['split']} conversations are trained one sample per turn (the "
                     "template renders earlier turns differently once later ones follow), costing "
                     f"{stats.get('split_extra_tokens', 0)} extra tokens of repeated history (of "
                     f"{stats.get('sample_tokens', 0)} tokens in all samples)")
    if stats.get("answers_lost"):
        lines.append(f"hint: {stats['answers_lost']} samples lost their whole answer to truncation; "
                     "raise data.cutoff_len")
    if stats.get("dropped_overlength"):
        lines.append(f"hint: {stats['dropped_overlength']} samples are longer than data.cutoff_len and are not "
                     "trained; raise data.cutoff_len, or set data.overlength: truncate to keep their beginnings")
    return "\n".join(lines)


def problem_report(problems: list[Problem], problems_file: Path | None) -> str:
    """The first SHOWN_PROBLEMS bad rows as FILE:LINE lines, then the count and where the full list is."""
    lines = [str(p) for p in problems[:SHOWN_PROBLEMS]]
    more = len(problems) - SHOWN_PROBLEMS
    if more > 0:
        lines.append(f"... and {more} more")
    where = f"; full list in {problems_file}" if problems_file else ""
    lines.append(f"{len(problems)} bad row{'s' if len(problems) != 1 else ''}{where}")
    return "\n".join(lines)


def problems_file(cfg, data, write: bool = True) -> Path | None:
    """<cache>/problems/<fingerprint>.txt with every bad row of the prepared data (None when there are none)."""
    from tunekit.data.pipeline import problems_folder

    if not data.problems:
        return None
    path = problems_folder(cfg) / f"{data.fingerprint}.txt"
    return write_text_atomic(path, "".join(f"{p}\n" for p in data.problems)) if write else path


def refuse_bad_rows(problems: list[Problem], problems_file: Path | None, skip: bool) -> None:
    """train, after the report was shown: refuse bad rows unless data.skip_bad_rows accepts skipping them."""
    if problems and not skip:
        where = f"; full list in {problems_file}" if problems_file else ""
        raise DataError(f"{len(problems)} bad dataset row{'s' if len(problems) != 1 else ''} (shown above{where}), "
                        "so training did not start: fix them (`tunekit data check CONFIG` lists them), or set "
                        "data.skip_bad_rows=true to train without them")


def render_marked(template: ChatTemplate, conv: Conversation, color: bool, **options) -> tuple[str, int, int]:
    """The samples' text with each trained span wrapped in markers; (text, tokens, trained tokens).
    A conversation trained one sample per turn shows each sample, separated by a line."""
    marked = [_marked(template, enc, color) for enc in template.encode_samples(conv, **options)]
    return (SAMPLE_SEPARATOR.join(text for text, _, _ in marked), sum(m[1] for m in marked),
            sum(m[2] for m in marked))


def _marked(template: ChatTemplate, enc, color: bool) -> tuple[str, int, int]:
    opener, closer = (TRAINED_OPEN, TRAINED_CLOSE) if color else (PLAIN_OPEN, PLAIN_CLOSE)
    pieces, total, trained = trained_spans(template, enc)
    return "".join(_wrap(text, is_trained, opener, closer) for text, is_trained in pieces), total, trained


def trained_spans(template: ChatTemplate, enc) -> tuple[list[tuple[str, bool]], int, int]:
    """One encoded sample's text cut where training starts or stops: ([(text, trained)], tokens, trained)."""
    tok = template.tokenizer
    pieces, run, trained = [], [], None
    for token, label in zip(enc.input_ids, enc.labels):
        is_trained = label != IGNORE_INDEX
        if trained is not None and is_trained != trained:
            pieces.append((tok.decode(run), trained))
            run = []
        run.append(token)
        trained = is_trained
    if run:
        pieces.append((tok.decode(run), trained))
    return pieces, len(enc.input_ids), sum(label != IGNORE_INDEX for label in enc.labels)


def _wrap(text: str, trained: bool, opener: str, closer: str) -> str:
    return f"{opener}{text}{closer}" if trained else text
