"""A chat page in the browser (Gradio): streaming answers, a system prompt, sampling sliders,
and, when adapters are loaded, two answers side by side (e.g. fine-tuned vs base).

    tunekit webui runs/ner-lora            # http://127.0.0.1:7860

Each panel picks an adapter (or the base model alone) and keeps its own conversation; a
message goes to both panels, which answer one after the other through the same engine.
The page binds 127.0.0.1 unless told otherwise and opens a public share link only with
--share.
"""

from __future__ import annotations

import os

from tunekit.errors import TunekitError
from tunekit.infer.engine import BASE
from tunekit.infer.params import GenerationParams


def variant_choices(engine) -> list[tuple[str, str]]:
    """(label, adapter choice) for each way the engine can answer: adapters first, then base."""
    base = f"{engine.name} (no adapter)" if engine.default_adapter == BASE else "base model (adapter off)"
    return [(name, name) for name in engine.adapter_names] + [(base, BASE)]


def panel_defaults(engine) -> list[str]:
    """One panel per way to answer, at most two: the default adapter, then base (or the next one)."""
    choices = [value for _, value in variant_choices(engine)]
    first = engine.default_adapter
    return [first] + [c for c in choices if c != first][:1]


def build_app(engine, defaults: GenerationParams):
    import gradio as gr

    with gr.Blocks(title=f"tunekit · {engine.name}", analytics_enabled=False) as app:
        gr.Markdown(f"### tunekit chat · {engine.name}")
        # The run's own system prompt is shown and used; editing the box overrides it.
        system = gr.Textbox(label="system prompt", value=engine.system_prompt() or "", placeholder="(none)",
                            lines=1, elem_id="system",
                            info="the one the run was trained with" if engine.system_prompt() else None)
        sliders = sampling_controls(gr, engine, defaults)
        with gr.Row(equal_height=True):
            panels = [chat_panel(gr, engine, value, i) for i, value in enumerate(panel_defaults(engine))]
        with gr.Row():
            message = gr.Textbox(show_label=False, placeholder="type a message and press Enter", scale=5,
                                 elem_id="message")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
            clear = gr.Button("Clear", scale=1, elem_id="clear")

        histories = [p["history"] for p in panels]
        chatbots = [p["chatbot"] for p in panels]
        for trigger in (message.submit, send.click):
            event = trigger(add_user_message, [message, *histories], [message, *histories, *chatbots])
            for p in panels:
                event = event.then(answer_fn(engine), [p["history"], p["choice"], system, *sliders],
                                   [p["history"], p["chatbot"]])
        clear.click(lambda: [[]] * (2 * len(panels)), None, [*histories, *chatbots])
    return app


def sampling_controls(gr, engine, defaults: GenerationParams) -> list:
    with gr.Accordion("sampling", open=False):
        with gr.Row():
            max_new = gr.Slider(1, max(defaults.max_new_tokens, min(4096, engine.context_length)),
                                value=defaults.max_new_tokens, step=1, label="max new tokens")
            temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="temperature (0 = greedy)")
            top_p = gr.Slider(0.01, 1.0, value=defaults.top_p, step=0.01, label="top p")
        with gr.Row():
            top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label="top k (0 = off)")
            repetition = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.01, label="repetition penalty")
            seed = gr.Number(value=defaults.seed, precision=0, label="seed (empty = random)")
    stop = gr.State(list(defaults.stop))
    return [max_new, temperature, top_p, top_k, repetition, seed, stop]


def chat_panel(gr, engine, value: str, index: int) -> dict:
    with gr.Column():
        choice = gr.Dropdown(variant_choices(engine), value=value, label="answer with", elem_id=f"choice-{index}")
        chatbot = gr.Chatbot(show_label=False, height=360, elem_id=f"chatbot-{index}")
    return {"choice": choice, "chatbot": chatbot, "history": gr.State([])}


def add_user_message(text: str, *histories):
    """Append the message to every panel's conversation and empty the box."""
    updated = [list(h) + [{"role": "user", "content": text}] for h in histories] if text.strip() else list(histories)
    return ["", *updated, *updated]


def answer_fn(engine):
    """The streaming handler of one panel: yields (history, chatbot) as the answer grows."""
    import gradio as gr

    def answer(history, choice, system, max_new, temperature, top_p, top_k, repetition, seed, stop):
        if not history or history[-1]["role"] != "user":
            yield history, history
            return
        params = GenerationParams(max_new_tokens=int(max_new), temperature=float(temperature), top_p=float(top_p),
                                  top_k=int(top_k), repetition_penalty=float(repetition), stop=list(stop),
                                  seed=None if seed is None else int(seed))
        messages = ([{"role": "system", "content": system}] if system and system.strip() else []) + history
        try:
            generation = engine.stream(messages, params, choice)
        except TunekitError as exc:
            raise gr.Error(str(exc)) from None
        text = ""
        try:
            for piece in generation:
                text += piece
                shown = history + [{"role": "assistant", "content": text}]
                yield shown, shown
        finally:
            generation.close()  # the page went away or the event was cancelled: stop generating
        final = history + [{"role": "assistant", "content": text}]
        yield final, final

    return answer


def launch(engine, defaults: GenerationParams, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True):
    """Serve the page; with block=False return at once (the server runs in the background)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(engine, defaults)
    app.queue(default_concurrency_limit=1)
    print(f"web chat on http://{host}:{port}{' (and a public share link)' if share else ''}; Ctrl-C stops",
          flush=True)
    app.launch(server_name=host, server_port=port, share=share, inbrowser=False, prevent_thread_lock=not block,
               quiet=True, show_error=True)
    return app
