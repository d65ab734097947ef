"""The comparison report: Markdown, one self-contained HTML page, and a bar chart PNG.

    plot_metrics(comparison, "metrics.png")          # scores per target, and perplexity per target
    render_markdown(comparison, "metrics.png")       # summary, targets, metrics, forgetting, per prompt
    render_html(comparison, Path("metrics.png"))     # the same, chart inlined, no external files

Both documents hold the same sections in the same order: a summary line per target
(task metric and perplexity change against the first target), the targets, every metric
with its difference, the forgetting probe, the preference section (held-out pairs: accuracy,
and DPO's implicit reward against the first target) and the reward-model scores when
measured, and the per-prompt side-by-side table with each answer's task-metric score.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tunekit.eval.tasks import row_score

CELL_CHARS = 200  # longer prompts and answers are cut in the per-prompt table (predictions/*.jsonl has all)
LOG_SCALE_RATIO = 20  # the perplexity panel turns logarithmic when the largest is this many times the smallest


# ---------------------------------------------------------------- shared content


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:+.1f}%"


def _cut(text: str | None) -> str:
    """At most CELL_CHARS characters; an answer of only whitespace says so instead of showing blank."""
    if text is None:
        return "—"
    text = str(text)
    if not text.strip():
        return f"(whitespace only: {len(text)} characters)" if text else "(empty)"
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def summary_lines(comparison) -> list[str]:
    """One plain sentence per target after the first: task metric and perplexity, before -> after."""
    first, headline, forgetting = comparison.evaluations[0], comparison.headline, comparison.forgetting()
    lines = []
    for e in comparison.evaluations[1:]:
        parts = []
        if headline and headline in e.result.scores:
            before, after = first.result.scores[headline], e.result.scores[headline]
            parts.append(f"{headline} {before:.2f} → {after:.2f} ({after - before:+.2f})")
        if forgetting:
            p0, p1 = first.perplexity["perplexity"], e.perplexity["perplexity"]
            change = _percent(forgetting[e.label]["relative_change"])
            parts.append(f"held-out perplexity {p0:.2f} → {p1:.2f} ({change})")
        parts += _preference_summary(comparison, first.label, e.label)
        lines.append(f"{e.label} vs {first.label}: " + ("; ".join(parts) or "predictions only, nothing scored"))
    return lines


def _preference_summary(comparison, first: str, label: str) -> list[str]:
    parts = []
    preferences, rewards = comparison.preferences(), comparison.reward_scores()
    if preferences:
        before, after = preferences[first], preferences[label]
        text = (f"preference accuracy {100 * before['preference_accuracy']:.1f}% → "
                f"{100 * after['preference_accuracy']:.1f}%")
        if "implicit_reward_accuracy" in after:
            text += f", implicit-reward accuracy {100 * after['implicit_reward_accuracy']:.1f}%"
        parts.append(text + f" ({after['pairs']} held-out pairs)")
    if rewards:
        parts.append(f"reward-model score {rewards[first]:.2f} → {rewards[label]:.2f} "
                     f"({rewards[label] - rewards[first]:+.2f})")
    return parts


PREFERENCE_HEADER = ["pairs", "preference accuracy", "log-prob margin", "implicit-reward accuracy",
                     "implicit-reward margin"]


def _preference_rows(comparison) -> list[tuple[str, list[str]]]:
    """(label, cells) per target: pairs, accuracy, log-prob margin, and the implicit reward against the first."""
    rows = []
    for i, (label, r) in enumerate(comparison.preferences().items()):
        implicit = ["—", "—"] if "implicit_reward_accuracy" not in r else [
            f"{100 * r['implicit_reward_accuracy']:.1f}%", _number(r["implicit_reward_margin"], signed=True)]
        if i and "implicit_reward_accuracy" not in r:
            implicit = ["(other template)", "—"]
        rows.append((label, [str(r["pairs"]), f"{100 * r['preference_accuracy']:.1f}%",
                             _number(r["logp_margin"], signed=True), *implicit]))
    return rows


def _reward_rows(comparison) -> list[tuple[str, list[str]]]:
    """(label, cells) per target: mean reward-model score and its change from the first."""
    scores = list(comparison.reward_scores().items())
    return [(label, [_number(score), "—" if i == 0 else _number(score - scores[0][1], signed=True)])
            for i, (label, score) in enumerate(scores)]


def _preference_title(comparison) -> str:
    first = comparison.evaluations[0].label
    return (f"Preference: held-out pairs of {comparison.pairs} (implicit reward = log-prob gain over {first}; "
            "higher is better)")


def _reward_title(comparison) -> str:
    return f"Reward model {comparison.reward_model}: mean score of each target's answers (higher is better)"


def _metric_rows(comparison) -> list[tuple[str, list[float | None], list[float | None]]]:
    """(metric, score per target, difference per later target)."""
    names = list(comparison.evaluations[0].result.scores)
    differences = comparison.differences()
    return [(name, [e.result.scores.get(name) for e in comparison.evaluations],
             [differences[e.label].get(name) for e in comparison.evaluations[1:]]) for name in names]


def _prompt_rows(comparison) -> list[tuple[dict, list[tuple[str, float | None]]]]:
    """(first target's row, [(prediction, task-metric score) per target]) per prompt."""
    headline = comparison.headline
    columns = [e.result.rows for e in comparison.evaluations]
    return [(rows[0], [(row["prediction"], row_score(row, headline)) for row in rows]) for rows in zip(*columns)]


def _intro(comparison) -> str:
    task = comparison.task
    rows = len(comparison.evaluations[0].result.rows)
    metrics = ", ".join(task.metrics) or "none"
    return f"Test set {comparison.data}: {rows} rows; metrics: {metrics} ({task.reason})."


# ---------------------------------------------------------------- Markdown


def _md(text) -> str:
    """Safe inside a Markdown table cell: pipes escaped, HTML neutralised, newlines as <br>."""
    text = html.escape(_cut(text), quote=False).replace("|", "\\|")
    return text.replace("\r", "").replace("\n", "<br>") or " "


def _md_table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_markdown(comparison, chart_name: str | None = None) -> str:
    evals, labels = comparison.evaluations, [e.label for e in comparison.evaluations]
    out = ["# tunekit comparison", "", _intro(comparison), ""]
    out += [f"- {line}" for line in summary_lines(comparison)] + [""]
    out += ["## Targets", ""]
    out += _md_table(["", "target", "what", "system prompt"],
                     [[f"**{_md(e.label)}**", f"`{e.target}`", e.description, _md(e.system_prompt or "—")]
                      for e in evals], ["---"] * 4) + [""]
    if evals[0].result.scores:
        out += [f"## Metrics (0–100, higher is better; Δ = change from {labels[0]})", ""]
        rows = [[f"**{name}** (task)" if name == comparison.headline else name]
                + [_number(v) for v in scores] + [_number(d, signed=True) for d in diffs]
                for name, scores, diffs in _metric_rows(comparison)]
        out += _md_table(["metric", *map(_md, labels), *[f"Δ {_md(label)}" for label in labels[1:]]], rows,
                         ["---"] + ["---:"] * (2 * len(labels) - 1)) + [""]
    if comparison.heldout:
        out += [f"## Forgetting probe: perplexity on {comparison.heldout} (lower is better)", ""]
        rows = [[f"**{_md(e.label)}**", _number(f["perplexity"]), str(e.perplexity["tokens"]),
                 "—" if i == 0 else f"{_number(f['change'], signed=True)} ({_percent(f['relative_change'])})"]
                for i, (e, f) in enumerate(zip(evals, comparison.forgetting().values()))]
        out += _md_table(["", "perplexity", "tokens", f"change from {_md(labels[0])}"], rows,
                         ["---", "---:", "---:", "---:"]) + [""]
    if comparison.pairs:
        out += [f"## {_md(_preference_title(comparison))}", ""]
        out += _md_table(["", *PREFERENCE_HEADER], [[f"**{_md(label)}**", *cells]
                                                    for label, cells in _preference_rows(comparison)],
                         ["---"] + ["---:"] * len(PREFERENCE_HEADER)) + [""]
    if comparison.reward_model:
        out += [f"## {_md(_reward_title(comparison))}", ""]
        out += _md_table(["", "mean score", f"change from {_md(labels[0])}"],
                         [[f"**{_md(label)}**", *cells] for label, cells in _reward_rows(comparison)],
                         ["---", "---:", "---:"]) + [""]
    if chart_name:
        out += [f"![metrics]({chart_name})", ""]
    out += ["## Per prompt", ""]
    score_note = f" (score: {comparison.headline})" if comparison.headline else ""
    rows = [[str(n), _md(first["prompt"]), _md(first["reference"])]
            + [_md(text) + ("" if score is None else f"<br>*{score:.0f}*") for text, score in answers]
            for n, (first, answers) in enumerate(_prompt_rows(comparison), 1)]
    out += [f"Answers of each target{score_note}.", ""]
    out += _md_table(["#", "prompt", "reference", *map(_md, labels)], rows, ["---:"] + ["---"] * (len(labels) + 2))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- HTML

STYLE = """
body { font-family: system-ui, "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif;
       margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .35em .6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.better { background: #e3f4e1; } td.worse { background: #fbe3e1; }
td pre { margin: 0; white-space: pre-wrap; font-family: inherit; }
.score { color: #555; font-size: .85em; } ul.summary li { margin: .2em 0; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def _h(text) -> str:
    return html.escape(_cut(text))


def _delta_cell(value: float | None, higher_is_better: bool, text: str) -> str:
    if value is None or abs(value) < 1e-9:
        return f'<td class="num">{text}</td>'
    good = (value > 0) == higher_is_better
    return f'<td class="num {"better" if good else "worse"}">{text}</td>'


def _html_table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html_metrics(comparison, labels: list[str]) -> str:
    rows = []
    for name, scores, diffs in _metric_rows(comparison):
        title = f"<b>{_h(name)}</b> (task)" if name == comparison.headline else _h(name)
        cells = "".join(f'<td class="num">{_number(v)}</td>' for v in scores)
        cells += "".join(_delta_cell(d, True, _number(d, signed=True)) for d in diffs)
        rows.append(f"<tr><td>{title}</td>{cells}</tr>")
    return _html_table(["metric", *map(_h, labels), *[f"Δ {_h(label)}" for label in labels[1:]]], rows)


def _html_forgetting(comparison, labels: list[str]) -> str:
    rows = []
    for i, (e, f) in enumerate(zip(comparison.evaluations, comparison.forgetting().values())):
        change = "<td class=\"num\">—</td>" if i == 0 else _delta_cell(
            f["change"], False, f"{_number(f['change'], signed=True)} ({_percent(f['relative_change'])})")
        rows.append(f"<tr><td><b>{_h(e.label)}</b></td><td class=\"num\">{_number(f['perplexity'])}</td>"
                    f"<td class=\"num\">{e.perplexity['tokens']}</td>{change}</tr>")
    return _html_table(["", "perplexity", "tokens", f"change from {_h(labels[0])}"], rows)


def _html_cells(header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """A table of (label, cells) rows: the label in bold, the cells as numbers."""
    body = [f"<tr><td><b>{_h(label)}</b></td>" + "".join(f'<td class="num">{_h(c)}</td>' for c in cells) + "</tr>"
            for label, cells in rows]
    return _html_table([_h(h) for h in header], body)


def _html_prompts(comparison, labels: list[str]) -> str:
    rows = []
    for n, (first, answers) in enumerate(_prompt_rows(comparison), 1):
        base_score = answers[0][1]
        cells = ""
        for i, (text, score) in enumerate(answers):
            css = ""
            if i and score is not None and base_score is not None and score != base_score:
                css = ' class="better"' if score > base_score else ' class="worse"'
            note = "" if score is None else f'<div class="score">{score:.0f}</div>'
            cells += f"<td{css}><pre>{_h(text)}</pre>{note}</td>"
        rows.append(f'<tr><td class="num">{n}</td><td><pre>{_h(first["prompt"])}</pre></td>'
                    f'<td><pre>{_h(first["reference"])}</pre></td>{cells}</tr>')
    return _html_table(["#", "prompt", "reference", *map(_h, labels)], rows)


def render_html(comparison, chart: Path | None = None) -> str:
    evals, labels = comparison.evaluations, [e.label for e in comparison.evaluations]
    parts = ["<h1>tunekit comparison</h1>", f"<p>{_h(_intro(comparison))}</p>",
             '<ul class="summary">' + "".join(f"<li>{_h(line)}</li>" for line in summary_lines(comparison)) + "</ul>",
             "<h2>Targets</h2>",
             _html_table(["", "target", "what", "system prompt"],
                         [f"<tr><td><b>{_h(e.label)}</b></td><td><code>{_h(e.target)}</code></td>"
                          f"<td>{_h(e.description)}</td><td>{_h(e.system_prompt or '—')}</td></tr>" for e in evals])]
    if evals[0].result.scores:
        parts += [f"<h2>Metrics (0–100, higher is better; Δ = change from {_h(labels[0])})</h2>",
                  _html_metrics(comparison, labels)]
    if comparison.heldout:
        parts += [f"<h2>Forgetting probe: perplexity on {_h(comparison.heldout)} (lower is better)</h2>",
                  _html_forgetting(comparison, labels)]
    if comparison.pairs:
        parts += [f"<h2>{_h(_preference_title(comparison))}</h2>",
                  _html_cells(["", *PREFERENCE_HEADER], _preference_rows(comparison))]
    if comparison.reward_model:
        parts += [f"<h2>{_h(_reward_title(comparison))}</h2>",
                  _html_cells(["", "mean score", f"change from {labels[0]}"], _reward_rows(comparison))]
    if chart is not None:
        data = base64.b64encode(Path(chart).read_bytes()).decode("ascii")
        parts.append(f'<p><img alt="metrics chart" src="data:image/png;base64,{data}"></p>')
    score_note = f" (score: {_h(comparison.headline)})" if comparison.headline else ""
    parts += ["<h2>Per prompt</h2>", f"<p>Answers of each target{score_note}.</p>",
              _html_prompts(comparison, labels)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tunekit comparison</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


# ---------------------------------------------------------------- chart


def plot_metrics(comparison, path: str | Path) -> Path | None:
    """Grouped bars of every score per target, and (when probed) a panel of perplexity per target."""
    evals = comparison.evaluations
    names = list(evals[0].result.scores)
    if not names and not comparison.heldout:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (["scores"] if names else []) + (["perplexity"] if comparison.heldout else [])
    ratios = [max(len(names), 2) if panel == "scores" else 1.5 for panel in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(2 + 1.1 * len(names) + 3 * bool(comparison.heldout), 4.2),
                             gridspec_kw={"width_ratios": ratios}, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "scores":
            _score_bars(ax, evals, names)
        else:
            _perplexity_bars(ax, evals, comparison.heldout)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _score_bars(ax, evals, names: list[str]) -> None:
    width = 0.8 / len(evals)
    for i, e in enumerate(evals):
        positions = [x + (i - (len(evals) - 1) / 2) * width for x in range(len(names))]
        bars = ax.bar(positions, [e.result.scores.get(n, 0.0) for n in names], width, label=e.label)
        ax.bar_label(bars, fmt="%.1f", fontsize="x-small")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("score (0–100)")
    ax.set_ylim(0, 100)
    ax.set_title("task metrics")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")


def _perplexity_bars(ax, evals, heldout: str) -> None:
    values = [e.perplexity["perplexity"] for e in evals]
    bars = ax.bar([e.label for e in evals], values, color=[f"C{i}" for i in range(len(evals))])
    ax.bar_label(bars, fmt="%.1f", fontsize="small")
    log_scale = max(values) > LOG_SCALE_RATIO * min(values)
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(f"perplexity on {heldout}\n(lower is better{', log scale' if log_scale else ''})", fontsize="medium")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(axis="y", alpha=0.3)
