"""The vllm backend (GPU only; skipped without vllm and CUDA): vLLM batches concurrent answers
itself, and they equal the answers given one at a time; a cancelled answer is aborted."""

import importlib.util

import pytest

from tunekit.infer.engine import Engine
from tunekit.infer.params import GenerationParams

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")


@pytest.fixture(scope="module")
def vllm_engine(brief_run):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vllm needs a GPU")
    with Engine.load(str(brief_run), backend="vllm") as engine:
        yield engine


def test_concurrent_answers_equal_answers_alone_and_cancel_aborts(vllm_engine):
    from serve_helpers import QUESTIONS

    params = GenerationParams(max_new_tokens=24)
    asks = [[{"role": "user", "content": q}] for q in QUESTIONS]
    alone = [vllm_engine.chat(m, params).text for m in asks]
    generations = [vllm_engine.stream(m, params) for m in asks]
    assert ["".join(g) for g in generations] == alone
    long = vllm_engine.stream(asks[0], GenerationParams(max_new_tokens=2000, temperature=1.0, seed=1))
    next(long, None)
    long.close()
    list(long)
    assert len(long.token_times) < 2000
