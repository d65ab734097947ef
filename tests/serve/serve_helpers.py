"""Helpers for the inference tests: the fine-tuning data, server processes, a pseudo-terminal."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BRIEF_ANSWER = "好的，明白了。"
QUESTIONS = ["你好", "今天天气怎么样？", "帮我写一首诗", "what is your name?", "讲个笑话", "1+1等于几？",
             "请介绍一下北京", "hello there"]
UNSEEN_QUESTION = "你能做什么？"  # not in the training data
API_KEY = "test-key-123"

# Tool-call and reasoning conversations the tool run learns (tests/serve/test_tools_api.py).
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER_QUESTIONS = ["What is the weather in Paris?", "Weather in Paris?", "How warm is Paris now?",
                     "Paris weather please"]
WEATHER_RESULT, WEATHER_ANSWER = '{"temp": 21}', "It is 21 degrees."
REASONING_TURNS = [("hi there", "A greeting.", "Hello!"), ("1+1?", "One plus one.", "2")]


def tool_rows() -> list[dict]:
    """openai-format rows: a call, its result, the answer; and two-turn reasoning conversations."""
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    rows = []
    for question in WEATHER_QUESTIONS:
        rows.append({"tools": [WEATHER_TOOL], "messages": [
            {"role": "user", "content": question}, {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": WEATHER_RESULT}, {"role": "assistant", "content": WEATHER_ANSWER}]})
        rows.append({"messages": [m for q, thought, answer in REASONING_TURNS for m in (
            {"role": "user", "content": q}, {"role": "assistant", "content": f"<think>{thought}</think>{answer}"})]})
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tunekit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tunekit", *args]


def child_env() -> dict:
    return {**os.environ, "PYTHONIOENCODING": "utf-8", "LANG": "C.UTF-8", "TOKENIZERS_PARALLELISM": "false",
            "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


class Server:
    """A `tunekit serve` / `tunekit webui` process on 127.0.0.1, stopped at the end."""

    def __init__(self, args: list[str], port: int, log: Path, ready_path: str):
        self.url = f"http://127.0.0.1:{port}"
        self.ready_url = self.url + ready_path
        self.log = log
        self.process = subprocess.Popen(tunekit_command(*args, "--port", str(port)), stdout=log.open("wb"),
                                        stderr=subprocess.STDOUT, env=child_env())

    def wait_ready(self, timeout: float = 120) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Terminal:
    """A command run in a pseudo-terminal, as a user at a keyboard would."""

    def __init__(self, args: list[str]):
        import pty

        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=child_env(),
                                        start_new_session=True)
        os.close(slave)
        self.output = b""

    def expect(self, text: str, timeout: float = 90) -> str:
        """Read until `text` appears after what earlier expects consumed; return what came before it."""
        wanted = text.encode("utf-8")
        deadline = time.monotonic() + timeout
        while wanted not in self.output:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                shown = self.output.decode(errors="replace")
                raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{shown}")
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:
                    pass
        before, _, self.output = self.output.partition(wanted)
        return before.decode("utf-8")

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\r").encode("utf-8"))

    def close(self) -> int:
        """The exit status; a process still running after 20 s is killed (and fails the test)."""
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            os.close(self.master)
