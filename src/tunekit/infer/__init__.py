"""Inference: `engine.Engine` (load a run / model, stream, chat, batch), `params` (GenerationParams,
Reply), `target` (what a TARGET means, which tokens stop an answer), `answer` (tokens -> text),
`backends` (hf default, vllm optional)."""
