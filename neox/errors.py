"""The one exception type for user errors.

Bad input (a config, a data file, a checkpoint, a command line) raises :class:`NeoxError`
with a message that says what is wrong, where, and how to fix it. The CLI catches it at the
edge and prints it as one line without a traceback. Our own invariants use ``assert``.
"""


class NeoxError(Exception):
    """A user-facing error; ``str(err)`` is the complete one-line message."""


class ConfigError(NeoxError):
    """A config file, key or value is wrong."""


class DataError(NeoxError):
    """A dataset file is missing, truncated or inconsistent."""


class CheckpointError(NeoxError):
    """A checkpoint is missing, partial or does not match the config."""
