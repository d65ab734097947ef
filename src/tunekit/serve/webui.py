"""A chat page in the browser (Gradio): streaming answers, a system prompt, sampling sliders,
and, when adapters are loaded, two answers side by side (e.g. fine-tuned vs base).

    tunekit webui runs/ner-lora            # http://127.0.0.1:7860

Each panel picks an adapter (or the base model alone) and keeps its own conversation; a
message goes to both panels, which answer one after the other through the same engine.
The page binds 127.0.0.1 unless told otherwise and opens a public share link only with
--share. A message longer than --max-input-chars is refused before it joins the conversation,
and a turn that fails (prompt too long for the model, a generation error) is taken back out
of the panel's history, so the next message works without pressing Clear.
"""

from __future__ import annotations

import json
import os

from tunekit.errors import TunekitError
from tunekit.infer.engine import BASE
from tunekit.infer.params import GenerationParams
from tunekit.infer.parsers import NO_CALLS, Splitter

MAX_INPUT_CHARS = 16_000  # default cap on one message (and on the system prompt): --max-input-chars


def variant_choices(engine) -> list[tuple[str, str]]:
    """(label, adapter choice) for each way the engine can answer: adapters first, then base."""
    base = f"{engine.name} (no adapter)" if engine.default_adapter == BASE else "base model (adapter off)"
    return [(name, name) for name in engine.adapter_names] + [(base, BASE)]


def panel_defaults(engine) -> list[str]:
    """One panel per way to answer, at most two: the default adapter, then base (or the next one)."""
    choices = [value for _, value in variant_choices(engine)]
    first = engine.default_adapter
    return [first] + [c for c in choices if c != first][:1]


def build_app(engine, defaults: GenerationParams, max_input_chars: int = MAX_INPUT_CHARS):
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
            event = trigger(user_message_fn(max_input_chars), [message, *histories], [message, *histories, *chatbots])
            for p in panels:
                event = event.then(answer_fn(engine, max_input_chars), [p["history"], p["choice"], system, *sliders],
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


def check_length(text: str | None, what: str, max_chars: int) -> None:
    if text and len(text) > max_chars:
        raise TunekitError(f"the {what} has {len(text):,} characters; this page accepts at most {max_chars:,} "
                           "(shorten it, or start the web UI with a larger --max-input-chars)")


def user_message_fn(max_chars: int):
    """add_user_message, refusing (before it joins any history) a message over max_chars."""
    import gradio as gr

    def add(text, *histories):
        try:
            check_length(text, "message", max_chars)
        except TunekitError as exc:
            raise gr.Error(str(exc)) from None
        return add_user_message(text, *histories)

    return add


def answer_fn(engine, max_chars: int = MAX_INPUT_CHARS):
    """The streaming handler of one panel: yields (history, chatbot) as the answer grows.

    A turn that fails is removed again (the history goes back to what it was before the message),
    then the error is shown."""
    import gradio as gr

    def answer(history, choice, system, max_new, temperature, top_p, top_k, repetition, seed, stop):
        if not history or history[-1]["role"] != "user":
            yield history, history
            return
        before = history[:-1]
        try:
            check_length(system, "system prompt", max_chars)
            params = GenerationParams(max_new_tokens=int(max_new), temperature=float(temperature), top_p=float(top_p),
                                      top_k=int(top_k), repetition_penalty=float(repetition), stop=list(stop),
                                      seed=None if seed is None else int(seed))
            yield from _stream_answer(engine, history, system, params, choice)
        except Exception as exc:  # noqa: BLE001  (any failure: the turn must not stay in the history)
            yield before, before
            message = str(exc) if isinstance(exc, TunekitError) else f"the answer failed: {exc}"
            raise gr.Error(message) from None

    return answer


def _stream_answer(engine, history: list[dict], system: str | None, params: GenerationParams, choice: str):
    said = [m for m in history if not (m.get("metadata") or {}).get("title")]  # shown reasoning stays out
    messages = ([{"role": "system", "content": system}] if system and system.strip() else []) + said
    generation = engine.stream(messages, params, choice)
    turn = generation.turn
    splitter = Splitter(turn.family if turn.calls else NO_CALLS, turn.thinking)
    parts = {"reasoning": "", "content": ""}
    try:
        for piece in [turn.prefill, *generation] if turn.prefill else generation:
            for kind, text in splitter.push(piece):
                parts[kind] += text
            shown = history + answer_messages(parts["reasoning"], parts["content"], [], done=False)
            yield shown, shown
    finally:
        generation.close()  # the page went away or the event was cancelled: stop generating
    parsed, _ = splitter.finish()
    final = history + answer_messages(parsed.reasoning or "", parsed.content, parsed.tool_calls, done=True)
    yield final, final


def answer_messages(reasoning: str, content: str, calls: list, done: bool) -> list[dict]:
    """One answer as chat messages: reasoning folded (a closed "Reasoning" box once done), the
    content, and each tool call in a box of its own."""
    out = []
    if reasoning:
        out.append({"role": "assistant", "content": reasoning,
                    "metadata": {"title": "Reasoning", "status": "done" if done else "pending"}})
    for call in calls:
        arguments = json.dumps(call["function"]["arguments"], ensure_ascii=False, indent=1)
        out.append({"role": "assistant", "content": f"```json\n{arguments}\n```",
                    "metadata": {"title": f"Tool call: {call['function']['name']}", "status": "done"}})
    if content or not out:
        out.append({"role": "assistant", "content": content})
    return out


def launch(engine, defaults: GenerationParams, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True, max_input_chars: int = MAX_INPUT_CHARS):
    """Serve the page; with block=False return at once (the server runs in the background)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(engine, defaults, max_input_chars)
    app.queue(default_concurrency_limit=1)
    print(f"web chat on http://{host}:{port}{' (and a public share link)' if share else ''}; Ctrl-C stops",
          flush=True)
    app.launch(server_name=host, server_port=port, share=share, inbrowser=False, prevent_thread_lock=not block,
               quiet=True, show_error=True)
    return app
