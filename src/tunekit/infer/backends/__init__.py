"""Generation backends: `hf` (transformers + peft, the default) and `vllm` (optional, GPU).

A backend turns prompt token ids into generated token ids; the engine does everything
else (templates, stop rules, text). hf offers one decoding step at a time to the engine's
batching scheduler (infer/batching.py); vllm is its own scheduler (`submit`). Each module
is imported only when chosen.
"""

BACKENDS = {
    "hf": "tunekit.infer.backends.hf",
    "vllm": "tunekit.infer.backends.vllm",
}
