"""Library messages that are not the user's concern, silenced once when tunekit is imported.

    bitsandbytes (imported by peft): "Failed to load CPU gemm_4bit_forward from kernels-community:
    No module named 'kernels'" -- an optional speed-up of its CPU backend that tunekit never needs.

Each entry names the logger and a piece of the message, so nothing else from those libraries is hidden.
"""

from __future__ import annotations

import logging

SILENCED = {
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward",
}


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in str(record.msg)


def silence_known_noise() -> None:
    for name, fragment in SILENCED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(_DropMessage(fragment))
