"""Which process is which under torchrun / accelerate launch, how they wait for each other,
and whether a process that left files behind (named by its pid) is still alive.

Used by the data pipeline (rank 0 tokenizes, the others read its cache) and by training
(rank 0 writes the run directory). A single process needs none of it and pays nothing.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

BARRIER_TIMEOUT = timedelta(hours=3)  # long enough for rank 0 to tokenize a large dataset


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main_process() -> bool:
    """Global rank 0, as set by torchrun, accelerate launch and the deepspeed launcher."""
    return int(os.environ.get("RANK", "0")) == 0


def use_cpu() -> bool:
    """True where no GPU (or other accelerator) is visible: training then runs on the CPU over gloo."""
    import torch

    accelerator = getattr(torch, "accelerator", None)
    return not (accelerator.is_available() if accelerator is not None else torch.cuda.is_available())


def _state():
    """accelerate's process state; the first call joins the process group (with BARRIER_TIMEOUT)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu(), timeout=BARRIER_TIMEOUT)


def barrier() -> None:
    """Every process waits here until all have arrived; nothing to wait for in a single process."""
    if is_distributed():
        _state().wait_for_everyone()


def leave_process_group() -> None:
    """After a successful run: all processes meet, then the process group is torn down.

    Without this, gloo's worker threads outlive the interpreter and a process can abort
    at exit ("terminate called without an active exception") after its work succeeded.
    The command line calls it after a command that succeeded; a process that failed must not
    wait for the others.
    """
    if not is_distributed():
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        state = _state()
        state.wait_for_everyone()
        state.destroy_process_group()


@contextmanager
def main_process_first():
    """The main process runs the block first; the others run it after (and find its results)."""
    if not is_distributed():
        yield
        return
    with _state().main_process_first():
        yield


def process_alive(pid: int) -> bool:
    """True when process `pid` runs (this one, or someone else's that we may not signal)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
