"""Run `tunekit ARGS` and kill -9 this very process in the middle of one write (a crash-matrix cell).

    python crash_driver.py POINT tunekit-args...

POINT picks the write: `checkpoint` (trainer_state.json of checkpoint-2, half written),
`metrics` (the metrics.jsonl line of step 2, half written), `cache` (a tokenized shard's
statistics file, half written under its temporary name; run it with data.num_proc=1), `merge` (the merged model, written to
its temporary folder but not yet renamed). The process dies by SIGKILL: no handler, no cleanup.
"""

from __future__ import annotations

import os
import signal
import sys


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def half_then_die(path, text: str, mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8") as f:
        f.write(text[: len(text) // 2])
    die()


def arm(point: str) -> None:
    if point == "checkpoint":
        from transformers.trainer_callback import TrainerState

        original = TrainerState.save_to_json

        def save_to_json(self, json_path):
            if "checkpoint-2" in str(json_path):
                import dataclasses
                import json

                half_then_die(json_path, json.dumps(dataclasses.asdict(self), indent=2))
            original(self, json_path)

        TrainerState.save_to_json = save_to_json
    elif point == "metrics":
        import json

        from tunekit.train.callbacks import MetricsLog

        original = MetricsLog.on_log

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.global_step == 2 and logs:
                half_then_die(self.path, json.dumps({"step": 2, **logs}) + "\n", mode="a")
            return original(self, args, state, control, logs=logs, **kwargs)

        MetricsLog.on_log = on_log
    elif point == "cache":
        import json

        import tunekit.data.pipeline as pipeline

        def write_json(path, value):
            half_then_die(path.with_name(f".tmp-{os.getpid()}-{path.name}"), json.dumps(value))

        pipeline._write_json = write_json
    elif point == "merge":
        import tunekit.export.merge as merge

        original = merge.write_model_dir

        def write_model_dir(*args, **kwargs):
            original(*args, **kwargs)
            die()

        merge.write_model_dir = write_model_dir
    else:
        raise SystemExit(f"unknown crash point {point}")


if __name__ == "__main__":
    arm(sys.argv[1])
    from tunekit.cli import main

    sys.exit(main(sys.argv[2:]))
