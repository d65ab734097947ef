"""Terminal chat with a model: the answer streams as it is generated, history is kept.

    tunekit chat runs/ner-lora

Type a message and press Enter. Commands: /clear forgets the conversation, /system TEXT
sets the system prompt (and starts over; /system alone goes back to the run's own), /exit
(or Ctrl-D) quits; Ctrl-C stops an answer. A run trained with a fixed system prompt is asked
with it unless --system or /system says otherwise; the first line shows which applies.
After each answer a line shows how many tokens it had and how fast they came.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from tunekit.errors import TunekitError
from tunekit.infer.params import GenerationParams

PROMPT = "you> "
ANSWER = "assistant> "
HELP = ("commands: /clear (forget the conversation), /system TEXT (set the system prompt; alone: the run's own), "
        "/exit (quit)")


@dataclass
class Conversation:
    system: str | None = None
    turns: list[dict] = field(default_factory=list)

    def messages(self, user_text: str | None = None) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        tail = [{"role": "user", "content": user_text}] if user_text is not None else []
        return head + self.turns + tail

    def add(self, user_text: str, answer: str) -> None:
        self.turns += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]


def run_chat(engine, params: GenerationParams, adapter: str | None = None, system: str | None = None,
             read=input, out=sys.stdout) -> None:
    """The chat loop: read a line, run a command or answer it, until /exit or end of input."""
    default = engine.system_prompt(adapter)
    conversation = Conversation(system or default)
    out.write(f"chatting with {engine.name}{f' (adapter {adapter})' if adapter else ''}; {HELP}\n")
    if conversation.system:
        source = "the run's own" if conversation.system == default else "--system"
        out.write(f"system prompt ({source}): {conversation.system}\n")
    while True:
        try:
            line = read(PROMPT).strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        if not line:
            continue
        if line.startswith("/"):
            if not run_command(line, conversation, out, default):
                return
            continue
        answer(engine, conversation, line, params, adapter, out)


def run_command(line: str, conversation: Conversation, out, default_system: str | None = None) -> bool:
    """Apply a /command; False means quit."""
    name, _, rest = line.partition(" ")
    if name in ("/exit", "/quit"):
        return False
    if name == "/clear":
        conversation.turns.clear()
        out.write("(conversation cleared)\n")
    elif name == "/system":
        conversation.system = rest.strip() or default_system
        conversation.turns.clear()
        what = "set" if rest.strip() else "back to the run's own" if default_system else "removed"
        out.write(f"(system prompt {what}; conversation cleared)\n")
    else:
        out.write(f"unknown command {name}; {HELP}\n")
    return True


def answer(engine, conversation: Conversation, user_text: str, params: GenerationParams, adapter, out) -> None:
    """Stream one answer to the terminal, then show its token count and speed."""
    start = time.perf_counter()
    try:
        generation = engine.stream(conversation.messages(user_text), params, adapter)
    except TunekitError as exc:
        out.write(f"error: {exc}\n")
        return
    out.write(ANSWER)
    try:
        for piece in generation:
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        generation.close()
        out.write("\n(answer stopped; not kept in the conversation)\n")
        return
    reply = generation.reply
    conversation.add(user_text, reply.text)
    out.write("\n" + speed_line(reply, time.perf_counter() - start) + "\n")


def speed_line(reply, seconds: float) -> str:
    rate = reply.completion_tokens / seconds if seconds > 0 else 0.0
    cut = ", cut at max_new_tokens" if reply.finish_reason == "length" else ""
    return f"[{reply.completion_tokens} tokens in {seconds:.2f}s, {rate:.1f} tokens/s{cut}]"
