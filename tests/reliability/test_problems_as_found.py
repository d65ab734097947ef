"""`data check` on a large dataset: bad rows are written to a file as the shards holding them finish
(so a long check can be watched), the status line counts them, and the complete list replaces it."""

import json

from helpers import make_config

from tunekit.data import pipeline
from tunekit.data.pipeline import prepare_data, problems_folder
from tunekit.data.progress import Progress
from tunekit.data.templates import load_template
from tunekit.model.load import load_tokenizer

ROWS_PER_SHARD = 10


def test_bad_rows_reach_the_live_file_before_the_last_shard_is_tokenized(tiny_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "rows.jsonl"
    lines = [json.dumps({"instruction": f"q{i}", "output": "" if i % ROWS_PER_SHARD == 3 else f"a{i}"})
             for i in range(4 * ROWS_PER_SHARD)]  # one bad row (empty answer) per shard, at lines 4, 14, 24, 34
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = make_config(tiny_model_dir, tmp_path / "run", tmp_path / "cache",
                      data={"datasets": [{"path": str(data)}], "num_proc": 1})
    monkeypatch.setattr(pipeline, "SHARD_ROWS", ROWS_PER_SHARD)
    seen_before_shard: dict[int, list[str]] = {}
    encode = pipeline._encode_shard

    def watching(job, folder, shard):
        live = list(problems_folder(cfg).glob("in-progress-*.txt"))
        seen_before_shard[shard.index] = live[0].read_text(encoding="utf-8").splitlines() if live else []
        return encode(job, folder, shard)

    monkeypatch.setattr(pipeline, "_encode_shard", watching)
    tokenizer = load_tokenizer(cfg.model)
    prepared = prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template))

    bad_lines = [f"{data}:{line}" for line in (4, 14, 24, 34)]
    assert [str(p).split(" ")[0].rstrip(":") for p in prepared.problems] == bad_lines
    assert seen_before_shard[0] == []
    for index in (1, 2, 3):  # the shards before this one are finished, and their bad rows listed
        assert [line.split(" ")[0].rstrip(":") for line in seen_before_shard[index]] == bad_lines[:index]
    assert not list(problems_folder(cfg).glob("in-progress-*.txt"))  # replaced by the complete list


def test_a_killed_runs_live_file_is_removed_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from tunekit.data.progress import ProblemLog

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"in-progress-{int(dead.stdout)}.txt"
    stale.write_text("x.jsonl:1: bad\n", encoding="utf-8")
    mine = ProblemLog(tmp_path)
    mine.add(["y.jsonl:2: bad"])
    ProblemLog(tmp_path)  # a second run starting beside a live one
    assert not stale.exists() and mine.path.read_text(encoding="utf-8") == "y.jsonl:2: bad\n"
    mine.close()
    assert not mine.path.exists()


def test_the_status_line_counts_bad_rows_found_so_far(tmp_path):
    from tunekit.data.progress import ProblemLog

    progress = Progress("checking", total_bytes=1000)
    ProblemLog(tmp_path, progress).add(["a.jsonl:1: bad", "a.jsonl:9: bad"])
    line = progress.line(rows=20, done=500, now=progress.start + 1)
    assert "bad rows so far: 2" in line and "ETA" in line
