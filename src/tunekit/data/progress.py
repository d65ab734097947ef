"""One status line every few seconds while data is read: rows, MB, rows/s, MB/s and an ETA.

    progress = Progress("tokenizing", total_bytes)
    progress.update(rows, bytes_done)      # cheap; prints at most every `every` seconds (stderr)
    progress.finish(rows, bytes_done)      # a closing line, when the work took longer than `every`

Nothing is printed for work shorter than `every` seconds, so small datasets stay quiet.
"""

from __future__ import annotations

import sys
import time

MB = 1 << 20


class Progress:
    def __init__(self, action: str, total_bytes: int, every: float = 5.0, stream=None):
        self.action, self.total, self.every = action, total_bytes, every
        self.stream = stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.printed = False

    def update(self, rows: int, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last, self.printed = now, True
            print(self.line(rows, done, now), file=self.stream, flush=True)

    def finish(self, rows: int, done: int) -> None:
        now = time.monotonic()
        if self.printed or now - self.start >= self.every:
            seconds = now - self.start
            print(f"{self.action}: done, {rows:,} rows, {done / MB:,.1f} MB in {seconds:,.0f} s "
                  f"({rows / seconds:,.0f} rows/s, {done / MB / seconds:,.1f} MB/s)", file=self.stream, flush=True)

    def line(self, rows: int, done: int, now: float) -> str:
        seconds = max(now - self.start, 1e-9)
        rate = done / seconds
        text = (f"{self.action}: {rows:,} rows, {done / MB:,.1f} MB"
                + (f" of {self.total / MB:,.1f} MB" if self.total else "")
                + f"  {rows / seconds:,.0f} rows/s  {rate / MB:,.1f} MB/s")
        if self.total and rate > 0:
            text += f"  ETA {_clock(max(self.total - done, 0) / rate)}"
        return text


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
