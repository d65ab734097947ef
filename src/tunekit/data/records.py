"""The canonical records every dataset format is turned into before a tokenizer sees it.

A `Conversation` is a list of messages ({"role", "content"}) with roles system, user,
assistant and tool, plus optional tool definitions. A `TextRecord` is one document for
continued pretraining. A `Problem` is one bad row, reported as `FILE:LINE: message`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Conversation:
    messages: list[dict]
    tools: list | None = None
    source: str = ""  # "file:line", for messages that point at the row

    def assistant_turns(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant"]


@dataclass
class TextRecord:
    text: str
    source: str = ""


@dataclass
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class LoadResult:
    """What reading one or more datasets produced: good records and the bad rows."""

    records: list = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rows_read: int = 0
