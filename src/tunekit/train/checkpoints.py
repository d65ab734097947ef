"""Checkpoints that are whole: what `train.resume` may continue from, and rotation that never leaves a fake one.

    checkpoint = last_complete_checkpoint(run_dir / "checkpoints")   # None: start at step 0

A `checkpoint-N` folder is complete when its marker COMPLETE_FILE is there, every file the
marker lists is there with the size it lists, and trainer_state.json parses. The marker is
written by `CheckpointMarker` after the Trainer saved the weights, optimizer, scheduler, RNG
and trainer state, so a checkpoint torn by kill -9 or a full disk has none, and a torn
trainer_state.json no longer has its listed size. Rotation (train.save_total_limit) is done
here, not by the Trainer: the marker of an old checkpoint is removed before its files, so a
checkpoint half-deleted by a crash during rotation is never taken for a complete one.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from transformers import TrainerCallback

from tunekit.processes import is_main_process
from tunekit.rundir import write_json_atomic

log = logging.getLogger(__name__)

COMPLETE_FILE = "tunekit-complete.json"
STATE_FILE = "trainer_state.json"
PREFIX = "checkpoint-"


def step_of(folder: Path) -> int | None:
    tail = folder.name[len(PREFIX):]
    return int(tail) if folder.name.startswith(PREFIX) and tail.isdigit() else None


def checkpoints(folder: Path) -> list[Path]:
    """checkpoint-N folders, oldest step first (complete or not)."""
    if not Path(folder).is_dir():
        return []
    found = [p for p in Path(folder).iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=step_of)


def mark_complete(checkpoint: Path) -> None:
    """Written last: the size of every file of the checkpoint."""
    files = {str(p.relative_to(checkpoint)): p.stat().st_size for p in sorted(checkpoint.rglob("*"))
             if p.is_file() and p.name != COMPLETE_FILE and not p.name.startswith(f".{COMPLETE_FILE}")}
    write_json_atomic(checkpoint / COMPLETE_FILE, {"files": files})


def is_complete(checkpoint: Path) -> bool:
    try:
        listed = json.loads((checkpoint / COMPLETE_FILE).read_text(encoding="utf-8"))["files"]
        json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if STATE_FILE not in listed:
        return False
    for name, size in listed.items():
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The highest complete checkpoint-N; torn, unmarked or half-deleted ones are passed over with a warning."""
    for checkpoint in reversed(checkpoints(folder)):
        if is_complete(checkpoint):
            return checkpoint
        if is_main_process():
            log.warning("skipping %s: it is incomplete (interrupted while being written or deleted)", checkpoint)
    return None


def rotate(folder: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop older ones (marker first) and older incomplete ones."""
    complete = [c for c in checkpoints(folder) if is_complete(c)]
    if not complete:
        return
    kept = complete[-keep:]
    for checkpoint in checkpoints(folder):
        if checkpoint not in kept and step_of(checkpoint) < step_of(kept[0]):
            remove(checkpoint)


def remove(checkpoint: Path) -> None:
    (checkpoint / COMPLETE_FILE).unlink(missing_ok=True)  # no longer complete before anything else goes
    shutil.rmtree(checkpoint, ignore_errors=True)


def remove_incomplete(folder: Path) -> list[Path]:
    """Torn checkpoints newer than the last complete one (after a failed save: frees the space they hold)."""
    last = last_complete_checkpoint(folder)
    torn = [c for c in checkpoints(folder) if last is None or step_of(c) > step_of(last)]
    for checkpoint in torn:
        remove(checkpoint)
    return torn


class CheckpointMarker(TrainerCallback):
    """After each save (main process): mark the new checkpoint complete, then rotate old ones away."""

    def __init__(self, folder: Path, keep: int):
        self.folder = Path(folder)
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = self.folder / f"{PREFIX}{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint)
                rotate(self.folder, self.keep)
