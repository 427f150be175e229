"""Expected failures and their exit codes, all in one place: the CLI prints the one-line message (no traceback)
and exits with the error's code; the DAG fails the task at once (retrying cannot fix them).

| code | error | meaning |
|---|---|---|
| 1 | FeedstoreError | any other expected failure |
| 2 | ConfigError | bad configuration or usage |
| 3 | InputDataError | an input file or directory is missing, unreadable or violates its contract |
| 4 | ValidationFailed | a validation gate failed |
| 4 | ColdStart | the training set's rows have no feature history yet (a cold start, not a broken join) |
| 5 | ServingError | the online store or the Feast registry cannot serve |
| 6 | SkewFound | online values differ from the offline store (training/serving skew) |
"""

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


class ValidationFailed(FeedstoreError):
    """A validation gate failed: critical expectations failed or too many rows were quarantined."""

    exit_code = 4


class ColdStart(ValidationFailed):
    """Every training row precedes the first statistics snapshot: too little history, not a broken join."""


class EntityDataFrameError(ValueError):
    """The entity rows given to a point-in-time retrieval lack a column the requested features need (raised by the
    offline stores before any query runs). No exit code of its own: it is internal to a retrieval, and the
    training-set builder turns it into a one-line FeedstoreError (exit 1)."""


class ServingError(FeedstoreError):
    """The online store or the feature repository cannot serve (unreachable, not applied, not materialized)."""

    exit_code = 5


class SkewFound(FeedstoreError):
    """Online values differ from get_historical_features at the materialization time."""

    exit_code = 6
