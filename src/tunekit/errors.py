"""User-facing errors: what went wrong and how to fix it, printed by the CLI without a traceback."""


class TunekitError(Exception):
    """An error the user can fix. The message names what is wrong and what to do."""

    exit_code = 1


class ConfigError(TunekitError):
    """A config key that is unknown, mistyped or contradicts another."""


class DataError(TunekitError):
    """A dataset that cannot be read at all (missing file, unknown format)."""
