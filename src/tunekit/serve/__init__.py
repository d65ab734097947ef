"""Front ends over the engine: `chat_cli` (terminal), `webui` (Gradio page), `api` (OpenAI-compatible
HTTP API); `options` holds the command-line options they share."""
