"""The web chat page in a real headless Chromium: type a message, watch the answers stream in."""


import pytest
from serve_helpers import BRIEF_ANSWER, UNSEEN_QUESTION

from tunekit.infer.params import GenerationParams

pytestmark = pytest.mark.browser



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
