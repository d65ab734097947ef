"""Evaluate one target (run directory, model directory or hub id) on a task, and write it down.

    task = load_task("data/ner_test.jsonl", cfg.eval)
    evaluation = evaluate_target("runs/ner", task, heldout=heldout_text())
    write_evaluation("runs/ner/eval", evaluation, task, data="data/ner_test.jsonl")
    # -> predictions.jsonl (prompt, reference, prediction, scores per row) and metrics.json

Answers come from `Engine.batch`, so prompts are rendered with the template the target
was trained with and stop where training ended a turn. The perplexity probe (when a
held-out text is given) runs on the same loaded model.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tunekit.eval.perplexity import DEFAULT_MAX_TOKENS, perplexity
from tunekit.eval.tasks import TaskResult
from tunekit.rundir import is_run_dir, read_run, write_json_atomic

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"


@dataclass
class Evaluation:
    label: str  # short name in tables
    target: str  # what was loaded
    description: str  # "run directory (full, 40 steps) on tiny-qwen2", "model directory", ...
    system_prompt: str | None  # what the engine used for conversations that bring none
    result: TaskResult
    perplexity: dict | None  # {"perplexity", "tokens", "nll", "text"} or None without a held-out text
    seconds: float
    preference: object | None = None  # PreferenceScores on held-out pairs (tunekit.eval.preference), or None
    preference_rows: str | None = None  # fingerprint of the pairs' token ids: implicit rewards need equal ones
    reward_model_score: float | None = None  # mean reward-model score of the answers (compare/eval --reward-model)


def describe_target(target: str, base: bool = False) -> str:
    path = Path(target)
    if is_run_dir(path):
        run = read_run(path)
        if base:
            return f"base model {Path(run.base_model).name}, asked with the template of {path.name}"
        return f"run directory ({run.method}, {run.record.steps} steps) on {Path(run.base_model).name}"
    return "model directory" if path.is_dir() else "hub model"


def evaluate_target(target: str, task, label: str | None = None, heldout: tuple[str, str] | None = None,
                    heldout_tokens: int = DEFAULT_MAX_TOKENS, progress: bool = True, base: bool = False,
                    trust_remote_code: bool = False, pairs=None) -> Evaluation:
    """Load the target once, run the task on it, then (with heldout=(text, name)) the perplexity probe
    and (with pairs, a HeldOutPairs) the completion log-likelihoods of each held-out pair.
    base=True: a run directory's base model, asked with the run's template and system prompt."""
    from tunekit.infer.engine import Engine

    label = label or Path(str(target)).resolve().name or str(target)
    start = time.perf_counter()
    preference = fingerprint = None
    with Engine.load(str(target), trust_remote_code=trust_remote_code, base=base) as engine:
        system = engine.system_prompt()
        result = task.run(engine, label, progress)
        probe = None
        if heldout is not None:
            probe = {**perplexity(engine.model, engine.tokenizer, heldout[0], max_tokens=heldout_tokens),
                     "text": heldout[1]}
        if pairs is not None:
            preference, fingerprint = _preference(engine, pairs)
    _free_memory()
    return Evaluation(label, str(target), describe_target(str(target), base), system, result, probe,
                      time.perf_counter() - start, preference, fingerprint)


def _preference(engine, pairs):
    """(PreferenceScores, fingerprint of the rendered pairs) with the engine's model as it answers."""
    import hashlib

    from tunekit.eval.preference import preference_scores

    rows, _ = pairs.rows(engine.template)
    ids = [[row[key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")] for row in rows]
    return preference_scores(engine.model, rows, reference=False), hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def score_answers(evaluations: list[Evaluation], reward_model: str) -> None:
    """Each evaluation's mean reward-model score over its answers; every row gets its `reward_score`.
    The reward model is loaded once, after the targets (one model in memory at a time)."""
    from tunekit.errors import ConfigError
    from tunekit.train.rewards import RewardModelScore

    if any("option_logprobs" in row for e in evaluations for row in e.result.rows):
        raise ConfigError("--reward-model scores generated answers; a multiple-choice test set has none")
    scorer = RewardModelScore(reward_model, what="--reward-model")
    for e in evaluations:
        prompts = [row.get("messages") or [{"role": "user", "content": row["prompt"]}] for row in e.result.rows]
        scores = scorer.score_answers(prompts, [row["prediction"] for row in e.result.rows])
        for row, score in zip(e.result.rows, scores):
            row["reward_score"] = score
        e.reward_model_score = sum(scores) / len(scores) if scores else None
    del scorer
    _free_memory()


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_predictions(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def metrics_record(evaluation: Evaluation, task, data: str) -> dict:
    """What metrics.json holds for one target."""
    result = evaluation.result
    return {
        "target": evaluation.target, "label": evaluation.label, "description": evaluation.description,
        "system_prompt": evaluation.system_prompt,
        "data": str(data), "task": task.kind, "metrics": task.metrics, "metrics_reason": task.reason,
        "rows": len(result.rows), "scored_rows": sum(row["scores"] is not None for row in result.rows),
        "headline": result.headline, "scores": result.scores, "summary": result.summary,
        "perplexity": evaluation.perplexity, "seconds": round(evaluation.seconds, 2),
        "preference": evaluation.preference.record() if evaluation.preference is not None else None,
        "reward_model_score": evaluation.reward_model_score,
    }


def write_evaluation(out_dir: str | Path, evaluation: Evaluation, task, data: str) -> tuple[Path, Path]:
    """predictions.jsonl and metrics.json in out_dir."""
    out = Path(out_dir)
    predictions = write_predictions(out / PREDICTIONS_FILE, evaluation.result.rows)
    write_json_atomic(out / METRICS_FILE, metrics_record(evaluation, task, data))
    return predictions, out / METRICS_FILE


def format_scores(evaluation: Evaluation) -> str:
    """A few lines for the terminal: each score, the perplexity, or why nothing was scored."""
    result = evaluation.result
    if result.summary is None:
        lines = ["no references: predictions written, nothing scored"]
    else:
        lines = [f"  {name:<18} {value:7.2f}{'   <- task metric' if name == result.headline else ''}"
                 for name, value in result.scores.items()]
    if evaluation.perplexity:
        p = evaluation.perplexity
        lines.append(f"  {'perplexity':<18} {p['perplexity']:7.2f}   ({p['tokens']} tokens of {p['text']})")
    if evaluation.reward_model_score is not None:
        lines.append(f"  {'reward model':<18} {evaluation.reward_model_score:7.2f}   (mean score of the answers)")
    return "\n".join(lines)
