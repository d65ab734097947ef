"""What a long read shows while it runs: a status line every few seconds, and the bad rows so far.

    progress = Progress("tokenizing", total_bytes)
    progress.update(rows, bytes_done)      # cheap; prints at most every `every` seconds (stderr)
    progress.finish(rows, bytes_done)      # a closing line, when the work took longer than `every`

    found = ProblemLog(folder, progress)   # bad rows appended to folder/in-progress-PID.txt
    found.add(lines)                       # as each shard holding them finishes
    found.close()                          # the caller writes the final, complete list

The status line gives rows, MB, rows/s, MB/s, an ETA and the bad rows found so far. Nothing
is printed for work shorter than `every` seconds, so small datasets stay quiet.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tunekit.processes import process_alive

MB = 1 << 20


class Progress:
    def __init__(self, action: str, total_bytes: int, every: float = 5.0, stream=None):
        self.action, self.total, self.every = action, total_bytes, every
        self.stream = stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.printed = False
        self.bad_rows = 0  # counted by a ProblemLog

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
        if self.bad_rows:
            text += f"  bad rows so far: {self.bad_rows:,}"
        return text


class ProblemLog:
    """Bad rows written to a file as they are found, so a check of a large dataset can be
    watched (and stopped) early; the complete list replaces it when the work ends."""

    def __init__(self, folder: Path, progress: Progress | None = None):
        self.path = folder / f"in-progress-{os.getpid()}.txt"
        self.progress, self.file = progress, None
        for stale in folder.glob("in-progress-*.txt"):  # left by runs that were killed
            pid = stale.stem.rsplit("-", 1)[-1]
            if pid.isdigit() and not process_alive(int(pid)):
                stale.unlink(missing_ok=True)

    def add(self, lines: list[str]) -> None:
        if not lines:
            return
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "w", encoding="utf-8")
            print(f"bad rows found so far are listed in {self.path} as the reading goes on", file=sys.stderr,
                  flush=True)
        self.file.writelines(f"{line}\n" for line in lines)
        self.file.flush()
        if self.progress is not None:
            self.progress.bad_rows += len(lines)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.path.unlink(missing_ok=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
