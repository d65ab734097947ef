"""The default backend: a transformers model, with peft adapters switched by name
(model/multi.py loads them onto the model and activates one).

Generation is `model.generate`, fed token by token to a callback (streaming) or run on a
left-padded batch; `forward` is one step over a shared KV cache for the batching scheduler
(infer/batching.py), with one adapter per row. Not thread-safe by itself: the engine calls
it from one thread only.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch
from transformers import DynamicCache, GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from tunekit.config import ModelConfig
from tunekit.infer.params import GenerationParams
from tunekit.dtypes import resolve_name
from tunekit.model.load import load_model
from tunekit.model.multi import activate, load_adapters
from tunekit.model.padding import left_padded

BASE_ROW = "__base__"  # peft's adapter name for a row with every adapter off


class HFBackend:
    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, model_path: str, tokenizer, adapters: dict[str, Path], dtype: str = "auto",
             trust_remote_code: bool = False) -> HFBackend:
        """The model at model_path; with adapters (run directories by name), a PeftModel holding them all."""
        if adapters:
            model, _ = load_adapters(adapters, dtype=resolve_name(dtype), base=model_path,
                                     trust_remote_code=trust_remote_code)
        else:
            cfg = ModelConfig(name_or_path=model_path, dtype=dtype, trust_remote_code=trust_remote_code)
            model = load_model(cfg, tokenizer)
        if torch.cuda.is_available() and not getattr(model, "hf_device_map", None):
            model.to("cuda")
        model.eval()
        return cls(model, tokenizer)

    @property
    def context_length(self) -> int:
        config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") \
            else self.model.config
        for key in ("max_position_embeddings", "seq_length", "n_positions"):
            if getattr(config, key, None):
                return int(getattr(config, key))
        return int(min(self.tokenizer.model_max_length, 1 << 20))

    @property
    def generation_config(self):
        return getattr(self.model, "generation_config", None)

    # -- one step at a time, for the batching scheduler -------------------------------------
    @property
    def device(self):
        return self.model.device

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @property
    def batchable(self) -> bool:
        """Whether answers can share a batch (infer/batching.py): a cache of plain full-attention layers
        (no sliding window), and no prefix / prompt-tuning adapter (they bring their own cache entries)."""
        if any(c.is_prompt_learning for c in getattr(self.model, "peft_config", {}).values()):
            return False
        try:
            layers = self.new_cache().layers
        except Exception:  # noqa: BLE001 - a cache transformers cannot build from this config
            return False
        return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)

    @property
    def adapters_mixable(self) -> bool:
        """Rows with different adapters in one forward pass: peft's mixed batches, LoRA (not DoRA) only."""
        configs = getattr(self.model, "peft_config", {}).values()
        return all(str(c.peft_type) in ("LORA", "PeftType.LORA") and not getattr(c, "use_dora", False)
                   for c in configs)

    def new_cache(self):
        return DynamicCache(config=self.model.config)

    @torch.inference_mode()
    def forward(self, input_ids, attention_mask, position_ids, cache, adapters: list[str | None]):
        """Last-position logits [rows, vocab] after feeding input_ids; `cache` grows by their width."""
        kwargs = {}
        if hasattr(self.model, "peft_config"):
            names = {a for a in adapters}
            if len(names) == 1 or not self.adapters_mixable:
                context = self._adapter(adapters[0])
            else:
                context = nullcontext()
                kwargs["adapter_names"] = [a or BASE_ROW for a in adapters]
        else:
            context = nullcontext()
        if input_ids.shape[1] == 1 and self._sdpa:
            attention_mask = _one_query_mask(attention_mask)
        with context:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True, logits_to_keep=1, **kwargs)
        return out.logits[:, -1]

    @cached_property
    def _sdpa(self) -> bool:
        return getattr(self.model.config, "_attn_implementation", None) == "sdpa"

    @torch.inference_mode()
    def generate(self, prompt_ids: list[int], params: GenerationParams, stop_ids: list[int], adapter: str | None,
                 on_token: Callable[[int], bool]) -> None:
        """Generate for one prompt, calling on_token(id) per new token until it returns False."""
        feed = _TokenFeed(on_token)
        inputs = torch.tensor([prompt_ids], device=self.model.device)
        with self._adapter(adapter):
            _seed(params)
            self.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                                generation_config=self._config(params, stop_ids), streamer=feed,
                                stopping_criteria=StoppingCriteriaList([_StopWhenFed(feed)]))

    @torch.inference_mode()
    def generate_batch(self, prompts: list[list[int]], params: GenerationParams, stop_ids: list[int],
                       adapter: str | None) -> list[list[int]]:
        """One generate call for all prompts, left-padded; the new tokens of each row."""
        inputs, mask = left_padded(prompts, self.tokenizer.pad_token_id, self.model.device)
        width = inputs.shape[1]
        with self._adapter(adapter):
            _seed(params)
            out = self.model.generate(input_ids=inputs, attention_mask=mask,
                                      generation_config=self._config(params, stop_ids))
        return [row[width:].tolist() for row in out]

    def _config(self, params: GenerationParams, stop_ids: list[int]) -> GenerationConfig:
        """Every knob that matters set explicitly, so a model's own generation_config cannot change them
        (greedy decoding ignores temperature, top_p and top_k)."""
        sampling = {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k} \
            if params.temperature > 0 else {}
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens, do_sample=params.temperature > 0, **sampling,
            repetition_penalty=params.repetition_penalty, eos_token_id=list(stop_ids),
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def _adapter(self, adapter: str | None):
        """Run with the named adapter active, or with all adapters off (None)."""
        if not hasattr(self.model, "peft_config"):
            return nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        activate(self.model, adapter)
        return nullcontext()


def _one_query_mask(mask: torch.Tensor) -> torch.Tensor | None:
    """The 4D mask sdpa gets when each row feeds one token: it sees every real column of its row
    (as transformers builds it, without rebuilding it through its mask functions at every step);
    None where no row has padding, as transformers gives then."""
    return None if bool(mask.all()) else mask.bool()[:, None, None, :]


def _seed(params: GenerationParams) -> None:
    if params.seed is not None and params.temperature > 0:
        torch.manual_seed(params.seed)


class _TokenFeed(BaseStreamer):
    """Hands each generated token to a callback; remembers when the callback wants no more."""

    def __init__(self, on_token: Callable[[int], bool]):
        self.on_token = on_token
        self.prompt_seen = False
        self.stopped = False

    def put(self, value):
        if not self.prompt_seen:  # generate first passes the prompt
            self.prompt_seen = True
            return
        for token in value.view(-1).tolist():
            if not self.stopped and self.on_token(token) is False:
                self.stopped = True

    def end(self):
        pass


class _StopWhenFed(StoppingCriteria):
    def __init__(self, feed: _TokenFeed):
        self.feed = feed

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.feed.stopped, dtype=torch.bool, device=input_ids.device)


Backend = HFBackend
