"""User-facing errors: what went wrong and how to fix it, printed by the CLI without a traceback."""

import errno


class TunekitError(Exception):
    """An error the user can fix. The message names what is wrong and what to do."""

    exit_code = 1


class ConfigError(TunekitError):
    """A config key that is unknown, mistyped or contradicts another."""


class DataError(TunekitError):
    """A dataset that cannot be read at all (missing file, unknown format)."""


def is_disk_full(exc: BaseException) -> bool:
    """An OSError that means the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
