"""Terminal chat with a model: the answer streams as it is generated, history is kept.

    tunekit chat runs/ner-lora

Type a message and press Enter. Commands: /clear forgets the conversation, /system TEXT
sets the system prompt (and starts over; /system alone goes back to the run's own), /think
shows or folds reasoning, /exit (or Ctrl-D) quits; Ctrl-C stops an answer. A run trained with
a fixed system prompt is asked with it unless --system or /system says otherwise; the first
line shows which applies. After each answer a line shows how many tokens it had and how fast
they came. Reasoning is folded by default (a `(thinking: N chars, /think shows it)` line);
tool calls the model makes are shown as `-> call NAME {arguments}`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

from tunekit.errors import TunekitError
from tunekit.infer.params import GenerationParams
from tunekit.infer.parsers import NO_CALLS, Splitter

PROMPT = "you> "
ANSWER = "assistant> "
HELP = ("commands: /clear (forget the conversation), /system TEXT (set the system prompt; alone: the run's own), "
        "/think (show or fold reasoning), /exit (quit)")


@dataclass
class Conversation:
    system: str | None = None
    turns: list[dict] = field(default_factory=list)
    show_reasoning: bool = False

    def messages(self, user_text: str | None = None) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        tail = [{"role": "user", "content": user_text}] if user_text is not None else []
        return head + self.turns + tail

    def add(self, user_text: str, reply) -> None:
        """The answer as history: its content and calls (reasoning stays out, as templates expect)."""
        answer = {"role": "assistant", "content": reply.content if reply.content is not None else reply.text}
        if reply.tool_calls:
            answer["tool_calls"] = reply.tool_calls
        self.turns += [{"role": "user", "content": user_text}, answer]


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
    elif name == "/think":
        conversation.show_reasoning = not conversation.show_reasoning
        out.write(f"(reasoning {'shown' if conversation.show_reasoning else 'folded'})\n")
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
    view = AnswerView(generation.turn, conversation.show_reasoning, out)
    try:
        for piece in generation:
            view.push(piece)
    except KeyboardInterrupt:
        generation.close()
        out.write("\n(answer stopped; not kept in the conversation)\n")
        return
    reply = generation.reply
    view.finish(reply)
    conversation.add(user_text, reply)
    out.write("\n" + speed_line(reply, time.perf_counter() - start) + "\n")


class AnswerView:
    """Writes one streamed answer: content as it comes, reasoning folded (or shown), calls at the end."""

    def __init__(self, turn, show_reasoning: bool, out):
        self.splitter = Splitter(turn.family if turn.calls else NO_CALLS, turn.thinking)
        self.show_reasoning, self.out = show_reasoning, out
        self.reasoning = 0  # characters of reasoning so far
        self.answering = False
        self._write(self.splitter.push(turn.prefill))

    def push(self, piece: str) -> None:
        self._write(self.splitter.push(piece))

    def finish(self, reply) -> None:
        self._write(self.splitter.finish()[1])
        if self.reasoning and not self.show_reasoning:
            self.out.write(f"\n(thinking: {self.reasoning} chars, /think shows it)")
        for call in reply.tool_calls:
            arguments = json.dumps(call["function"]["arguments"], ensure_ascii=False)
            self.out.write(f"\n-> call {call['function']['name']} {arguments}")
        for warning in reply.warnings:
            self.out.write(f"\n(warning: {warning})")

    def _write(self, pieces) -> None:
        for kind, text in pieces:
            if kind == "reasoning":
                if self.show_reasoning:
                    self.out.write(("(thinking) " if not self.reasoning else "") + text)
                self.reasoning += len(text)
            else:
                if self.show_reasoning and self.reasoning and not self.answering:
                    self.out.write("\n(answer) ")
                self.answering = True
                self.out.write(text)
        self.out.flush()


def speed_line(reply, seconds: float) -> str:
    rate = reply.completion_tokens / seconds if seconds > 0 else 0.0
    cut = ", cut at max_new_tokens" if reply.finish_reason == "length" else ""
    return f"[{reply.completion_tokens} tokens in {seconds:.2f}s, {rate:.1f} tokens/s{cut}]"
