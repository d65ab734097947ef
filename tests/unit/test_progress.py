"""Progress lines: rows, MB, rows/s, MB/s and an ETA from the bytes left; quiet for short work."""

import io

from tunekit.data import progress
from tunekit.data.progress import Progress


def test_a_line_gives_rates_and_the_time_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    bar = Progress("tokenizing", total_bytes=100 << 20, every=5, stream=out)
    now[0] += 2
    bar.update(rows=500, done=10 << 20)
    assert out.getvalue() == ""  # nothing before `every` seconds
    now[0] += 8  # 10 s in: 20 MB done, 80 MB left at 2 MB/s -> 40 s
    bar.update(rows=4000, done=20 << 20)
    assert out.getvalue() == "tokenizing: 4,000 rows, 20.0 MB of 100.0 MB  400 rows/s  2.0 MB/s  ETA 0:40\n"
    now[0] += 40
    bar.finish(rows=20000, done=100 << 20)
    assert out.getvalue().splitlines()[-1] == "tokenizing: done, 20,000 rows, 100.0 MB in 50 s (400 rows/s, 2.0 MB/s)"


def test_short_work_prints_nothing():
    out = io.StringIO()
    bar = Progress("reading", total_bytes=1000, every=60, stream=out)
    bar.update(10, 500)
    bar.finish(20, 1000)
    assert out.getvalue() == ""
