"""`tunekit compare base RUN`: the fine-tuned model's task metric rises, both perplexities are
measured, and the report (Markdown, HTML, PNG) shows it; the HTML page renders in Chromium."""

import json
import math

import pytest

from tunekit.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tuned_run, word_type_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    code = main(["compare", "base", str(tuned_run), "--data", str(word_type_task[1]), "--max-new-tokens", "16",
                 "--heldout-tokens", "2048", "--output", str(out), "--quiet"])
    assert code == 0
    return out


@pytest.mark.slow
def test_tuned_model_beats_base_on_the_task_and_both_perplexities_are_reported(report):
    record = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    base, tuned = record["targets"]
    assert (base["label"], tuned["label"], record["headline"]) == ("base", "word-type", "exact_match")
    assert tuned["scores"]["exact_match"] > base["scores"]["exact_match"]
    assert record["differences"]["word-type"]["exact_match"] == (tuned["scores"]["exact_match"]
                                                                  - base["scores"]["exact_match"])
    perplexities = [t["perplexity"]["perplexity"] for t in (base, tuned)]
    assert all(math.isfinite(p) and p > 1 for p in perplexities)
    change = record["forgetting"]["word-type"]["relative_change"]
    assert change == pytest.approx(perplexities[1] / perplexities[0] - 1)
    markdown = (report / "report.md").read_text(encoding="utf-8")
    assert (f"held-out perplexity {perplexities[0]:.2f} → {perplexities[1]:.2f} ({100 * change:+.1f}%)"
            in markdown)
    assert f"| **base** | {perplexities[0]:.2f} | 2044 | — |" in markdown  # 4 blocks of 512, 511 scored each
    assert sum(line.startswith("| ") and line.split("|")[1].strip().isdigit() for line in markdown.splitlines()) == 20
    assert (report / "metrics.png").read_bytes().startswith(PNG_MAGIC)
    assert len((report / "predictions" / "base.jsonl").read_text(encoding="utf-8").splitlines()) == 20



@pytest.mark.browser
def test_html_report_renders_tables_and_chart_in_chromium(report, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get((report / "report.html").resolve().as_uri())
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings[:2] == ["Targets", "Metrics (0–100, higher is better; Δ = change from base)"]
    assert headings[2].startswith("Forgetting probe") and headings[-1] == "Per prompt"
    tables = browser.find_elements(By.TAG_NAME, "table")
    per_prompt = tables[-1].find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(per_prompt) == 20
    first = [cell.text for cell in per_prompt[0].find_elements(By.TAG_NAME, "td")]
    assert first[1].endswith("是人名还是地名？") and first[2] in ("人名", "地名") and len(first) == 5
    image = browser.find_element(By.TAG_NAME, "img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 300
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10_000
