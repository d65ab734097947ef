"""`tunekit chat` driven through a pseudo-terminal as a user would, and its loop's history."""

import io
import re

from serve_helpers import BRIEF_ANSWER, UNSEEN_QUESTION, Terminal, tunekit_command

from tunekit.infer.params import GenerationParams
from tunekit.serve.chat_cli import run_chat

SPEED = re.compile(r"\[(\d+) tokens in [\d.]+s, [\d.]+ tokens/s\]")


def answer_in(screen: str) -> str:
    return screen.split("assistant> ", 1)[1].split("\r\n", 1)[0]


def test_terminal_chat_two_turns_clear_and_exit(brief_run, engine):
    reference = engine.chat([{"role": "user", "content": UNSEEN_QUESTION}], GenerationParams(max_new_tokens=32))
    terminal = Terminal(tunekit_command("chat", str(brief_run), "--max-new-tokens", "32"))
    try:
        assert "/clear" in terminal.expect("you> ")  # the greeting names the commands
        terminal.send(UNSEEN_QUESTION)
        first = terminal.expect("you> ")
        assert answer_in(first) == reference.text == BRIEF_ANSWER
        assert SPEED.search(first).group(1) == str(reference.completion_tokens)
        terminal.send("再说一遍")
        second = terminal.expect("you> ")
        assert answer_in(second) == BRIEF_ANSWER and SPEED.search(second)
        terminal.send("/clear")
        assert "conversation cleared" in terminal.expect("you> ")
        terminal.send("/exit")
    finally:
        status = terminal.close()
    assert status == 0


class RecordingEngine:
    """The real engine, remembering the conversation it was asked to continue each time."""

    def __init__(self, engine):
        self.engine, self.name, self.seen = engine, engine.name, []

    def system_prompt(self, adapter=None):
        return self.engine.system_prompt(adapter)

    def stream(self, messages, params, adapter=None):
        self.seen.append(messages)
        return self.engine.stream(messages, params, adapter)


def test_chat_loop_keeps_history_until_clear_and_applies_system(engine):
    recorder = RecordingEngine(engine)
    lines = iter(["你好", "再来", "/clear", "/system 你是助手", "第三", "/exit", "never read"])
    out = io.StringIO()
    run_chat(recorder, GenerationParams(max_new_tokens=16), read=lambda prompt: next(lines), out=out)
    first, second, third = recorder.seen
    assert first == [{"role": "user", "content": "你好"}]
    assert second == first + [{"role": "assistant", "content": BRIEF_ANSWER}, {"role": "user", "content": "再来"}]
    assert third == [{"role": "system", "content": "你是助手"}, {"role": "user", "content": "第三"}]
    assert out.getvalue().count(f"assistant> {BRIEF_ANSWER}\n") == 3
    assert len(SPEED.findall(out.getvalue())) == 3


def shown_answer(text: str, show_reasoning: bool) -> str:
    """What the terminal shows for a model output streamed in 4-character pieces."""
    from tunekit.infer.engine import Turn
    from tunekit.infer.params import Reply
    from tunekit.infer.parsers import family_named
    from tunekit.serve.chat_cli import AnswerView

    out, turn = io.StringIO(), Turn([], family_named("hermes"))
    view = AnswerView(turn, show_reasoning, out)
    for k in range(0, len(text), 4):
        view.push(text[k: k + 4])
    view.finish(turn.finish(Reply(text, 1, 1, "stop")))
    return out.getvalue()


def test_reasoning_is_folded_by_default_and_calls_are_shown():
    text = ('<think>\nthe user wants weather\n</think>\n\nChecking.\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "巴黎"}}\n</tool_call>')
    folded = shown_answer(text, show_reasoning=False)
    assert folded == ('Checking.\n(thinking: 22 chars, /think shows it)\n'
                      '-> call get_weather {"city": "巴黎"}')
    shown = shown_answer(text, show_reasoning=True)
    assert shown.startswith("(thinking) the user wants weather\n(answer) Checking.")
    assert "<tool_call>" not in folded + shown
    broken = shown_answer('<tool_call>\n{"name": "f", "arguments": {oops}}\n</tool_call>', show_reasoning=False)
    assert "<tool_call>" in broken and "(warning: the model wrote a malformed" in broken
