"""The one exception type for user mistakes: the CLI prints its message as one sentence, no traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-facing error: the message names the config key, the bad value and what is valid."""
