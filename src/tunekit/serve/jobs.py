"""Training runs started from the board: each one a `tunekit train CONFIG` process.

    jobs = Jobs("runs")
    config = jobs.write_config("ner", raw)     # runs/ner.yaml: the exact file, rerun it by hand
    jobs.start("ner")                          # tunekit train runs/ner.yaml  (log: runs/ner.log)
    jobs.stop("ner"); jobs.start("ner", resume=True)   # train.resume=true: from the last checkpoint
    jobs.status("ner")                         # RunStatus: state, step / total, last loss, checkpoint

Everything a run's state is read from lives in files (the run directory, its metrics.jsonl,
the log beside it), so a board restarted later lists the same runs with the same status.
A run whose process this board started is "running" while that process lives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunekit.errors import TunekitError
from tunekit.rundir import CHECKPOINTS, METRICS_FILE, is_run_dir
from tunekit.train.run import last_complete_checkpoint

STOPPED_MARK = "== stopped from the board =="
_PROGRESS = re.compile(r"(\d+)/(\d+) \[")  # the Trainer's progress bar: " 12/60 [00:03<00:10, ...]"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class RunStatus:
    name: str
    state: str  # not started | running | stopped | failed | finished
    step: int = 0
    total: int | None = None
    loss: float | None = None
    checkpoint: int | None = None  # step of the last complete checkpoint (what resume continues from)
    error: str | None = None

    def row(self) -> list:
        progress = f"{self.step}/{self.total}" if self.total else str(self.step)
        loss = "" if self.loss is None else f"{self.loss:.4f}"
        return [self.name, self.state, progress, loss, "" if self.checkpoint is None else self.checkpoint,
                self.error or ""]


def check_run_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise TunekitError(f"run name {name!r}: use letters, digits, '.', '_' or '-' (it names a folder)")
    return name


def loss_points(run_dir: Path) -> list[tuple[int, float]]:
    """(step, training loss) from metrics.jsonl; a step logged again after a resume keeps its latest value."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    points = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the line being written right now
            continue
        if "loss" in record:
            points[int(record["step"])] = float(record["loss"])
    return sorted(points.items())


class Jobs:
    def __init__(self, folder: str | Path, env: dict | None = None):
        self.folder = Path(folder).resolve()
        self.env = env
        self.processes: dict[str, subprocess.Popen] = {}

    def config_path(self, name: str) -> Path:
        return self.folder / f"{check_run_name(name)}.yaml"

    def log_path(self, name: str) -> Path:
        return self.folder / f"{check_run_name(name)}.log"

    def run_dir(self, name: str) -> Path:
        return self.folder / check_run_name(name)

    def write_config(self, name: str, raw: dict) -> Path:
        if self.is_running(name):
            raise TunekitError(f"run {name} is training: stop it before changing its config")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.config_path(name)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def command(self, name: str, resume: bool = False) -> list[str]:
        """The command line the board runs: the same `tunekit train` a user would type."""
        return ["tunekit", "train", str(self.config_path(name)), *(["train.resume=true"] if resume else [])]

    def start(self, name: str, resume: bool = False) -> subprocess.Popen:
        if self.is_running(name):
            raise TunekitError(f"run {name} is already training")
        if not self.config_path(name).is_file():
            raise TunekitError(f"run {name} has no config {self.config_path(name)}: write it first")
        if resume and last_complete_checkpoint(self.run_dir(name) / CHECKPOINTS) is None:
            raise TunekitError(f"run {name} has no complete checkpoint to resume from: start it again instead")
        args = [sys.executable, "-m", "tunekit", *self.command(name, resume)[1:]]
        with self.log_path(name).open("a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(self.command(name, resume))}\n")
            log.flush()
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=self.env, start_new_session=True)
        self.processes[name] = process
        return process

    def is_running(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def stop(self, name: str, timeout: float = 15) -> None:
        """End the training process group; the last complete checkpoint stays for a resume."""
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            raise TunekitError(f"run {name} is not training")
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with self.log_path(name).open("a", encoding="utf-8") as log:
            log.write(f"\n{STOPPED_MARK}\n")

    def stop_all(self) -> None:
        for name in list(self.processes):
            if self.is_running(name):
                self.stop(name)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_path(name)
        if not path.is_file():
            return ""
        text = path.read_text(encoding="utf-8", errors="replace")
        shown = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]  # progress bars redraw with \r
        return "\n".join([line for line in shown if line.strip()][-lines:])

    def status(self, name: str) -> RunStatus:
        run_dir = self.run_dir(name)
        log = self.log_path(name).read_text(encoding="utf-8", errors="replace") if self.log_path(name).is_file() else ""
        points = loss_points(run_dir)
        checkpoint = last_complete_checkpoint(run_dir / CHECKPOINTS)
        status = RunStatus(name, self._state(name, run_dir, log), step=points[-1][0] if points else 0,
                           loss=points[-1][1] if points else None,
                           checkpoint=int(checkpoint.name.split("-")[-1]) if checkpoint else None)
        progress = _PROGRESS.findall(log)
        if progress:
            status.step, status.total = max(status.step, int(progress[-1][0])), int(progress[-1][1])
        if status.state == "failed":
            errors = [line for line in log.splitlines() if line.startswith("error:")]
            status.error = errors[-1] if errors else "the process ended without finishing; see its log"
        return status

    def _state(self, name: str, run_dir: Path, log: str) -> str:
        if self.is_running(name):
            return "running"
        if is_run_dir(run_dir):
            return "finished"
        if not log:
            return "not started"
        last = log.rstrip().rsplit("\n$ ", 1)[-1]  # what the latest start printed
        if STOPPED_MARK in last:
            return "stopped"
        if "error:" in last or name in self.processes:
            return "failed"
        return "stopped"  # interrupted outside this board: its process is gone

    def names(self) -> list[str]:
        """Every run of the folder: a config written by the board or a run directory."""
        if not self.folder.is_dir():
            return []
        found = {p.stem for p in self.folder.glob("*.yaml")}
        found |= {p.name for p in self.folder.iterdir() if p.is_dir() and (is_run_dir(p) or (p / CHECKPOINTS).is_dir())}
        return sorted(n for n in found if _NAME.match(n))

    def table(self) -> list[list]:
        return [self.status(name).row() for name in self.names()]
