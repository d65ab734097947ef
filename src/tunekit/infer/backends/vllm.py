"""Optional backend for GPU serving: vLLM (`pip install 'tunekit[vllm]'`, `--backend vllm`).

Imported only when chosen. The engine still renders prompts with the training template and
decides stop tokens and text (infer/answer.py); vLLM only turns prompt ids into new ids.
LoRA adapters are served by vLLM's multi-LoRA support, one LoRARequest per adapter name.
The test suite runs on CPU and covers the hf backend only.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest

from tunekit.dtypes import vllm_name
from tunekit.infer.params import GenerationParams

class VLLMBackend:
    def __init__(self, llm: LLM, tokenizer, adapters: dict[str, LoRARequest], generation_config=None):
        self.model = llm
        self.tokenizer = tokenizer
        self.adapters = adapters
        self.generation_config = generation_config  # for the model's eos (infer/target.py)
        self._ids = itertools.count()

    @classmethod
    def load(cls, model_path: str, tokenizer, adapters: dict[str, Path], dtype: str = "auto",
             trust_remote_code: bool = False) -> VLLMBackend:
        llm = LLM(model=model_path, tokenizer=tokenizer.name_or_path, dtype=vllm_name(dtype),
                  trust_remote_code=trust_remote_code, enable_lora=bool(adapters))
        requests = {name: LoRARequest(name, i + 1, str(path)) for i, (name, path) in enumerate(adapters.items())}
        return cls(llm, tokenizer, requests, _generation_config(model_path, trust_remote_code))

    @property
    def context_length(self) -> int:
        return int(self.model.llm_engine.model_config.max_model_len)

    def generate(self, prompt_ids: list[int], params: GenerationParams, stop_ids: list[int], adapter: str | None,
                 on_token: Callable[[int], bool]) -> None:
        """Step vLLM's engine for one request, handing each new token to on_token until it says stop."""
        engine = self.model.llm_engine
        request_id = f"tunekit-{next(self._ids)}"
        engine.add_request(request_id, {"prompt_token_ids": prompt_ids}, _sampling(params, stop_ids),
                           lora_request=self.adapters.get(adapter) if adapter else None)
        seen = 0
        while engine.has_unfinished_requests():
            for output in engine.step():
                tokens = output.outputs[0].token_ids
                for token in tokens[seen:]:
                    if on_token(token) is False:
                        engine.abort_request([request_id])
                        return
                seen = len(tokens)

    def generate_batch(self, prompts: list[list[int]], params: GenerationParams, stop_ids: list[int],
                       adapter: str | None) -> list[list[int]]:
        outputs = self.model.generate([{"prompt_token_ids": p} for p in prompts], _sampling(params, stop_ids),
                                      lora_request=self.adapters.get(adapter) if adapter else None, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]


def _generation_config(model_path: str, trust_remote_code: bool):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except OSError:
        return None


def _sampling(params: GenerationParams, stop_ids: list[int]) -> SamplingParams:
    sample = params.temperature > 0
    return SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                          top_p=params.top_p if sample else 1.0, top_k=params.top_k if sample and params.top_k else -1,
                          repetition_penalty=params.repetition_penalty, seed=params.seed, stop_token_ids=stop_ids,
                          skip_special_tokens=False)


Backend = VLLMBackend
