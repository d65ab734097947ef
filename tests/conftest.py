"""Shared fixtures: tiny models and runs built once per session; the tests/ folder on sys.path.

Nothing is downloaded: models come from `tunekit init-model` on the corpus the project ships.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from helpers import ASSETS, CORPUS, FIXTURES, NER_TEST, NER_TRAIN, ROOT, SHARED, make_config  # noqa: E402,F401  (tests/ is on sys.path now)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random qwen2 chat model (ChatML, <|im_end|>) saved in Hugging Face format."""
    from tunekit.model.init_model import init_model

    return init_model("qwen2", "tiny", CORPUS, tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    from tunekit.model.init_model import init_model

    return init_model("llama", "tiny", CORPUS, tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One tokenized-data cache for the session (tests that count cache hits make their own)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_lora_run(tiny_model_dir, tmp_path_factory, cache_dir) -> Path:
    """A finished LoRA run directory on the tiny model (a few steps; weights barely moved)."""
    from tunekit.train.run import train

    out = tmp_path_factory.mktemp("runs") / "lora"
    return train(make_config(tiny_model_dir, out, cache_dir))


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
OFFLINE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000"]


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by selenium, offline, with a fresh profile."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromedriver are missing: `make browser` installs them (apt)")
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


@pytest.fixture(scope="session")
def remote_code_model(tiny_model_dir, tmp_path_factory):
    """A ChatGLM-style model folder with its own modeling code and a fused query_key_value."""
    import json
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("remote") / "tinyglm"
    shutil.copytree(FIXTURES / "remote_code", folder)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "tinyglm", "vocab_size": len(tok), "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "auto_map": {"AutoConfig": "configuration_tinyglm.TinyGLMConfig",
                     "AutoModelForCausalLM": "modeling_tinyglm.TinyGLMForCausalLM"}}))
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    AutoModelForCausalLM.from_config(config, trust_remote_code=True).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# -- tiers and their time budgets ---------------------------------------------------------------
# Seconds of test time per folder on a 2-core machine; the summary at the end of `make test`
# shows each tier's time against its budget (a report for people, not an assertion).
TIER_BUDGETS = {"unit": 60, "adapters": 150, "eval": 90, "serve": 120, "integration": 180, "throughput": 90,
                "distributed": 240, "real": 180, "reliability": 180, "align": 180, "board": 120, "export": 120}
_tier_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    parts = report.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    _tier_seconds[tier] = _tier_seconds.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not _tier_seconds:
        return
    terminalreporter.section("time per tier (budget on 2 cores)")
    for tier, seconds in sorted(_tier_seconds.items(), key=lambda kv: -kv[1]):
        budget = TIER_BUDGETS.get(tier)
        flag = "  OVER BUDGET" if budget and seconds > budget else ""
        terminalreporter.write_line(f"{tier:<14}{seconds:8.1f} s   budget {budget or '-'} s{flag}")
    terminalreporter.write_line(f"{'all':<14}{sum(_tier_seconds.values()):8.1f} s   budget 1200 s")
