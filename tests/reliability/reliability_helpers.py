"""Shared pieces of the reliability tier: a CLI runner and a check for half-written leftovers.

The tier feeds tunekit what a careless user, a crash or a hostile client would, as tables: bad
inputs through `data check` and `train` (test_bad_inputs.py), kill -9 and a full disk at each
write (test_crash_matrix.py), malformed and hostile requests to the API (test_api_abuse.py).
"""

from __future__ import annotations

from pathlib import Path


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`tunekit ARGV` in this process: (exit status, stdout, stderr). Any uncaught exception fails the test."""
    from tunekit.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def hidden_leftovers(folder: Path) -> list[Path]:
    """Hidden temporary files or folders (`.NAME.XXXX`) anywhere under folder: half-written outputs."""
    if not folder.exists():
        return []
    return [p for p in folder.rglob(".*") if p.name not in (".gitignore",)]
