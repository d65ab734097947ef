"""The training board in a real headless Chromium: check the data, start a short training of
the tiny model, watch the loss curve grow, stop, resume, then chat with the result.

Screenshots of every step are saved under the test's tmp folder (and copied to
$TUNEKIT_SCREENS when it is set), to look at.
"""

import json
import os
import shutil

import pytest
import yaml
from serve.serve_helpers import QUESTIONS, UNSEEN_QUESTION, Server, free_port  # tests/ is on sys.path

from tunekit.infer.params import GenerationParams
from tunekit.serve.jobs import loss_points

pytestmark = [pytest.mark.browser, pytest.mark.slow]
# Long enough that Stop lands mid-run on a quiet machine too (the tiny model trains ~18 steps/s there).
STEPS, SAVE_EVERY = 300, 20


@pytest.fixture
def board(tiny_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{"instruction": q, "output": "好的，明白了。"} for q in QUESTIONS], ensure_ascii=False),
                    encoding="utf-8")
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    server = Server(["board", "--runs", str(tmp_path / "runs"), "--model", str(tiny_model_dir), "--data", str(data)],
                    free_port(), tmp_path / "board.log", "/")
    yield server.wait_ready(timeout=300)  # imports torch, transformers and gradio: slow on a busy machine
    server.stop()


def test_board_trains_stops_resumes_and_chats(board, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    shots = tmp_path / "screens"
    shots.mkdir()

    def shot(name: str, anchor: str) -> None:
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", find(anchor))
        browser.save_screenshot(str(shots / f"{name}.png"))

    def find(css: str):
        return browser.find_element(By.CSS_SELECTOR, css)

    def text(css: str) -> str:
        return find(css).text

    def fill(css: str, value) -> None:
        box = find(f"{css} input, {css} textarea")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(value), Keys.TAB)

    def points() -> list[tuple[int, float]]:
        return [(int(c.get_attribute("data-step")), float(c.get_attribute("data-loss")))
                for c in browser.find_elements(By.CSS_SELECTOR, "#loss-curve circle.point")]

    browser.set_window_size(1280, 1400)
    browser.get(board.url)
    wait = WebDriverWait(browser, 240, poll_frequency=0.3)
    wait.until(lambda _: "name_or_path" in text("#yaml"))
    for css, value in (("#run-name", "brief"), ("#max-steps", STEPS), ("#save-steps", SAVE_EVERY), ("#log-every", 1),
                       ("#lr", 0.003)):
        fill(css, value)
    wait.until(lambda _: f"max_steps: {STEPS}" in text("#yaml") and "learning_rate: 0.003" in text("#yaml"))

    find("#check-data").click()
    wait.until(lambda _: "alpaca" in text("#formats"))
    assert "no problems found" in find("#problems textarea").get_attribute("value")
    assert "好的，明白了。" in text("#preview")
    shot("1-data", "#check-data")

    find("#start").click()
    wait.until(lambda _: len(points()) >= 2)
    first = points()
    wait.until(lambda _: len(points()) >= len(first) + 3 and "checkpoint at step" in text("#status"))
    grown = points()
    shot("2-training", "#start")
    assert grown[: len(first)] == first and len(grown) > len(first)  # the curve grows, earlier points stay

    find("#stop").click()
    wait.until(lambda _: "stopped" in text("#status"))
    stopped_at = points()[-1][0]
    shot("3-stopped", "#start")
    assert stopped_at < STEPS, "the run finished before it could be stopped: raise STEPS"

    find("#resume").click()
    WebDriverWait(browser, 900, poll_frequency=0.3).until(lambda _: "finished" in text("#status"))  # the rest of
    # the STEPS: seconds on a quiet machine, minutes on a loaded one
    final = points()
    shot("4-finished", "#start")
    run_dir = tmp_path / "runs" / "brief"
    assert final == [(s, pytest.approx(v, rel=1e-5)) for s, v in loss_points(run_dir)]
    assert final[-1][0] == STEPS and [s for s, _ in final] == sorted({s for s, _ in final})
    assert "train.resume=true" in (tmp_path / "runs" / "brief.log").read_text(encoding="utf-8")
    shown = browser.execute_script("return document.querySelector('#yaml .cm-content').innerText")
    assert yaml.safe_load((tmp_path / "runs" / "brief.yaml").read_text(encoding="utf-8")) == yaml.safe_load(shown)

    from tunekit.infer.engine import BASE, Engine

    with Engine.load(str(run_dir)) as engine:
        params = GenerationParams(max_new_tokens=128)
        message = [{"role": "user", "content": UNSEEN_QUESTION}]
        expected = [engine.chat(message, params, adapter).text for adapter in (engine.default_adapter, BASE)]
    fill("#message", UNSEEN_QUESTION)
    find("#send").click()
    assert expected[0] == "好的，明白了。"  # the run trained from the page learned its data

    def shows(css: str, answer: str) -> bool:  # the page collapses whitespace
        return " ".join(answer.split()) in " ".join(text(css).split())

    wait.until(lambda _: shows("#chat-tuned", expected[0]) and shows("#chat-base", expected[1]))
    shot("5-chat", "#chat-tuned")
    for png in shots.iterdir():
        assert png.stat().st_size > 10_000
        if os.environ.get("TUNEKIT_SCREENS"):
            shutil.copy(png, os.environ["TUNEKIT_SCREENS"])
