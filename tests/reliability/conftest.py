"""Fixtures of the reliability tier: one engine on the tiny LoRA run, shared by the API and web UI tables."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lora_engine(tiny_lora_run):
    from tunekit.infer.engine import Engine

    with Engine.load(str(tiny_lora_run)) as engine:
        yield engine
