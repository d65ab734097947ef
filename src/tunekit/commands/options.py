"""Command-line options several commands share, defined once."""

from __future__ import annotations


def add_trust_remote_code(parser) -> None:
    """The only switch for running a model's own code: asked for each time, never read from a run."""
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model's own modeling code (ChatGLM, Baichuan); only for models you trust. "
                             "A run directory never switches this on: give the flag each time")
