"""The web chat page in a real headless Chromium: type a message, watch the answers stream in."""

import shutil
from pathlib import Path

import pytest
from serve_helpers import BRIEF_ANSWER, UNSEEN_QUESTION

from tunekit.infer.params import GenerationParams

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
OFFLINE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000"]

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and not shutil.which("chromium"):
        pytest.skip("chromium and chromedriver are not installed (make test installs them with apt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in OFFLINE_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_typed_message_gets_streamed_answers_side_by_side(webui_server, engine, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    params = GenerationParams(max_new_tokens=64)
    expected = [engine.chat([{"role": "user", "content": UNSEEN_QUESTION}], params, adapter=a).text
                for a in ("base", "lora")]
    browser.get(webui_server.url)
    wait = WebDriverWait(browser, 60)
    box = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "#message textarea")))
    box.send_keys(UNSEEN_QUESTION)
    browser.find_element(By.CSS_SELECTOR, "#send").click()

    def panel_text(index: int) -> str:
        return browser.find_element(By.CSS_SELECTOR, f"#chatbot-{index}").text

    wait.until(lambda _: BRIEF_ANSWER in panel_text(0))
    wait.until(lambda _: expected[1] in panel_text(1))
    browser.save_screenshot(str(tmp_path / "webui.png"))
    assert expected[0] == BRIEF_ANSWER
    assert UNSEEN_QUESTION in panel_text(0) and UNSEEN_QUESTION in panel_text(1)
    assert (tmp_path / "webui.png").stat().st_size > 10_000
