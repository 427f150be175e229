"""Expected failures: each carries a one-line message and the process exit code the CLI uses."""

from __future__ import annotations


class FeedstoreError(Exception):
    """An expected failure: the CLI prints its one-line message, no traceback, and exits with `exit_code`."""

    exit_code = 1


class ConfigError(FeedstoreError):
    """The pipeline configuration (file, environment or flags) is invalid."""

    exit_code = 2


class InputDataError(FeedstoreError):
    """An input file or directory is missing, unreadable or violates its contract."""

    exit_code = 3
