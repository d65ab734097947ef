"""`tunekit compare`: the same prompts through several targets, and what changed.

    task = load_task("data/ner_test.jsonl", cfg.eval)
    comparison = compare(["base", "runs/ner"], task, data="data/ner_test.jsonl", heldout=heldout_text())
    write_comparison("runs/ner/compare", comparison)
    # -> report.md, report.html (self-contained), metrics.png, metrics.json, predictions/<label>.jsonl

A target is a run directory, a model directory or a hub id; the word `base` stands for
the base model of the first run directory among the targets, asked exactly as that run
is (its template, stop tokens and system prompt), with the adapter off. Differences are each
target's score minus the first target's (list the base model first); the forgetting
probe is each target's perplexity on held-out general text and its relative change from
the first: (ppl - ppl_first) / ppl_first, so +25% means the text became 25% less likely
per token, general ability lost.

Beside the probe, for preference tuning (dpo and its family):
  * pairs=HeldOutPairs(FILE, cfg): each target's preference accuracy on held-out pairs (the
    chosen completion more likely than the rejected one) and, for every target after the
    first, DPO's implicit reward against the first as the reference: r = log pi(y|x) -
    log pi_first(y|x), its accuracy (r_chosen > r_rejected) and mean margin. The first
    target's own template renders the pairs for it, as every target's for itself; the
    implicit reward needs equal token ids, so targets with another template get none.
  * reward_model=RUN: a reward model (stage rm) scores every target's answers to the test
    prompts; the report shows each target's mean score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunekit.errors import TunekitError
from tunekit.eval.perplexity import DEFAULT_MAX_TOKENS
from tunekit.eval.predict import Evaluation, evaluate_target, metrics_record, score_answers, write_predictions
from tunekit.eval.preference import PreferenceScores
from tunekit.infer.target import unique_name
from tunekit.rundir import is_run_dir, write_json_atomic

BASE_KEYWORD = "base"
REPORT_MD, REPORT_HTML, CHART_PNG, METRICS_JSON = "report.md", "report.html", "metrics.png", "metrics.json"


@dataclass
class Comparison:
    data: str
    task: object  # GenerationTask or ChoiceTask
    evaluations: list[Evaluation]
    heldout: str | None  # name of the held-out text, None when the probe was skipped
    pairs: str | None = None  # the held-out preference pairs, None when not given
    reward_model: str | None = None  # the reward-model run that scored the answers, None when not given

    @property
    def headline(self) -> str | None:
        return self.evaluations[0].result.headline

    def differences(self) -> dict[str, dict[str, float]]:
        """{label: {metric: score - first target's score}} for every target after the first."""
        first = self.evaluations[0].result.scores
        return {e.label: {name: value - first[name] for name, value in e.result.scores.items() if name in first}
                for e in self.evaluations[1:]}

    def forgetting(self) -> dict[str, dict]:
        """{label: {"perplexity", "change" (absolute), "relative_change" (fraction)}} from the first target."""
        if self.heldout is None:
            return {}
        reference = self.evaluations[0].perplexity["perplexity"]
        out = {}
        for e in self.evaluations:
            value = e.perplexity["perplexity"]
            out[e.label] = {"perplexity": value, "change": value - reference,
                            "relative_change": (value - reference) / reference}
        return out


    def preferences(self) -> dict[str, dict]:
        """{label: PreferenceScores.record()} on the held-out pairs; after the first target, with the
        implicit reward against the first (implicit_reward_accuracy, implicit_reward_margin)."""
        if self.pairs is None:
            return {}
        first, out = self.evaluations[0], {}
        for e in self.evaluations:
            scores = e.preference
            if e is not first and e.preference_rows == first.preference_rows:
                scores = PreferenceScores(scores.chosen, scores.rejected, first.preference.chosen,
                                          first.preference.rejected)
            out[e.label] = scores.record()
        return out

    def reward_scores(self) -> dict[str, float]:
        """{label: mean reward-model score of its answers}; {} without a reward model."""
        return {e.label: e.reward_model_score for e in self.evaluations} if self.reward_model else {}


def resolve_targets(targets: list[str]) -> list[tuple[str, str, bool]]:
    """(label, target, as_base) with unique labels; `base` -> the first run directory, as its base."""
    if len(targets) < 2:
        raise TunekitError("compare needs at least two targets, e.g. tunekit compare base runs/my-run --data FILE")
    runs = [t for t in targets if t != BASE_KEYWORD and is_run_dir(t)]
    pairs, taken = [], set()
    for target in targets:
        if target == BASE_KEYWORD:
            if not runs:
                raise TunekitError("'base' means the base model of a run directory, and no target is one: "
                                   "give the base model's path or hub id instead")
            pairs.append((_unique(BASE_KEYWORD, taken), runs[0], True))
            continue
        label = Path(target).resolve().name if Path(target).exists() else target.rsplit("/", 1)[-1]
        pairs.append((_unique(label, taken), target, False))
    return pairs


def _unique(label: str, taken: set[str]) -> str:
    name = unique_name(label, taken)
    taken.add(name)
    return name


def compare(targets: list[str], task, data: str, heldout: tuple[str, str] | None = None,
            heldout_tokens: int = DEFAULT_MAX_TOKENS, progress: bool = True,
            trust_remote_code: bool = False, pairs=None, reward_model: str | None = None) -> Comparison:
    """Run the task (the perplexity probe, the held-out pairs) on each target in turn, one model in
    memory at a time; then the reward model, when given, scores every target's answers."""
    evaluations = [evaluate_target(target, task, label, heldout, heldout_tokens, progress, base, trust_remote_code,
                                   pairs)
                   for label, target, base in resolve_targets(targets)]
    if reward_model:
        score_answers(evaluations, reward_model)
    return Comparison(str(data), task, evaluations, heldout[1] if heldout else None,
                      pairs.path if pairs is not None else None, reward_model)


def comparison_record(comparison: Comparison) -> dict:
    """What metrics.json holds: every target's record, the differences and the forgetting probe."""
    return {
        "data": comparison.data, "task": comparison.task.kind, "metrics": comparison.task.metrics,
        "metrics_reason": comparison.task.reason, "headline": comparison.headline, "heldout": comparison.heldout,
        "targets": [metrics_record(e, comparison.task, comparison.data) for e in comparison.evaluations],
        "differences": comparison.differences(), "forgetting": comparison.forgetting(),
        "pairs": comparison.pairs, "preference": comparison.preferences(),
        "reward_model": comparison.reward_model, "reward_model_scores": comparison.reward_scores(),
    }


def write_comparison(out_dir: str | Path, comparison: Comparison) -> dict[str, Path]:
    """The report (Markdown, HTML, chart), metrics.json and each target's predictions."""
    from tunekit.eval.report import plot_metrics, render_html, render_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for e in comparison.evaluations:
        write_predictions(out / "predictions" / f"{e.label}.jsonl", e.result.rows)
    write_json_atomic(out / METRICS_JSON, comparison_record(comparison))
    chart = plot_metrics(comparison, out / CHART_PNG)
    (out / REPORT_MD).write_text(render_markdown(comparison, chart.name if chart else None), encoding="utf-8")
    (out / REPORT_HTML).write_text(render_html(comparison, chart), encoding="utf-8")
    paths = {"markdown": out / REPORT_MD, "html": out / REPORT_HTML, "metrics": out / METRICS_JSON}
    if chart:
        paths["chart"] = chart
    return paths
