"""Generation parameters and the reply of one generation, with the one table of allowed ranges.

    params = GenerationParams(max_new_tokens=64, temperature=0.7, stop=["\\n\\n"])
    check_params(params)   # raises InvalidParams naming the field and its range

temperature 0 means greedy decoding (then top_p, top_k and seed do not matter). The CLI,
the web UI and the API all build a GenerationParams and hand it to the engine, which
checks it here, so every front end accepts and refuses the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunekit.errors import TunekitError

MAX_STOP_STRINGS = 16


class InvalidParams(TunekitError):
    """A generation parameter outside its range."""


@dataclass
class GenerationParams:
    max_new_tokens: int = 512  # tokens to generate at most
    temperature: float = 0.0  # 0 = greedy; higher samples more freely
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens whose probability reaches top_p
    top_k: int = 0  # keep only the k most likely tokens; 0 = no limit
    repetition_penalty: float = 1.0  # > 1 discourages repeating tokens already in the text
    stop: list[str] = field(default_factory=list)  # the answer ends before the first occurrence of any
    seed: int | None = None  # makes sampling repeatable


@dataclass
class Reply:
    text: str  # everything the model wrote (reasoning and calls included)
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-turn token or stop string) | "length" (max_new_tokens reached)
    content: str | None = None  # the answer without reasoning and tool calls (parsed from text)
    reasoning: str | None = None
    tool_calls: list = field(default_factory=list)  # structured calls, as in messages
    warnings: list = field(default_factory=list)  # malformed calls kept as text


@dataclass
class ChatOptions:
    """What to answer besides the messages: tool definitions, how tools may be used, template switches."""

    tools: list | None = None
    tool_choice: str | dict | None = None  # "auto" | "none" | "required" | {"function": {"name": ...}}
    options: dict = field(default_factory=dict)  # e.g. {"enable_thinking": False}


# field -> (type, lowest, highest, whether the lowest itself is allowed)
RANGES = {
    "max_new_tokens": (int, 1, 1_000_000, True),
    "temperature": (float, 0.0, 2.0, True),
    "top_p": (float, 0.0, 1.0, False),
    "top_k": (int, 0, 1_000_000, True),
    "repetition_penalty": (float, 0.0, 10.0, False),
    "seed": (int, 0, 2**63 - 1, True),
}


def check_params(params: GenerationParams) -> None:
    for name, (kind, low, high, low_allowed) in RANGES.items():
        value = getattr(params, name)
        if value is None and name == "seed":
            continue
        allowed = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise InvalidParams(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if not low <= value <= high or (value == low and not low_allowed):
            bracket = "[" if low_allowed else "("
            raise InvalidParams(f"{name} must be in {bracket}{low}, {high}], got {value}")
    if not isinstance(params.stop, list) or not all(isinstance(s, str) and s for s in params.stop):
        raise InvalidParams(f"stop must be a list of non-empty strings, got {params.stop!r}")
    if len(params.stop) > MAX_STOP_STRINGS:
        raise InvalidParams(f"at most {MAX_STOP_STRINGS} stop strings, got {len(params.stop)}")
