"""Same-result speed-ups of Great Expectations' pandas validation, applied once per process.

1. GX 1.x rebuilds an expectation's whole `configuration` (a pydantic `dict()` of the expectation) once per domain
   and success key in `Expectation._get_domain_kwargs` / `_get_success_kwargs`, which run for every metric of
   every expectation: over a hundred configurations per expectation per validation. The replacements build the
   configuration once per call and look every key up in it: the same keys, values and defaults, in the same
   order, the same errors.
2. GX fingerprints a frame (`hash_pandas_dataframe`: an md5 over a hash of every cell, ~0.6 s for the 1M-row
   interactions view, most of it turning Arrow strings into Python objects) each time it loads it as a batch, and
   one validation loads it twice. The fingerprint only goes into the batch markers of GX's result, which feedstore
   never reads (reports, quarantine and Data Docs come from the rule outcomes), and GX itself leaves it out for
   frames over 1 GB (`HASH_THRESHOLD`). feedstore leaves it out for every frame: no rule, count or index changes.
3. `copy_on_write()` runs a validation under pandas' Copy-on-Write mode (the default from pandas 3). GX filters
   the whole frame by a column's non-null mask for every metric of every row rule (`df[df[col].notnull()]`), and
   without Copy-on-Write an all-true mask returns a deep copy of every column. Under it the copy is lazy, and GX
   only reads the frames it filters, so every metric, count and index list is the same (tests compare them).
4. `without_spark()`: Great Expectations imports pyspark whenever it is installed (the `spark` extra), pyspark's
   Spark Connect modules included (~0.2 s and ~50 MB). A process that declares it never validates on Spark (the
   CLI on the DuckDB engine: one engine per process) gets GX imported by `load()` with pyspark hidden, as if the
   extra were not installed: GX's Spark support is then off in that process, and the DuckDB path loads no
   pyspark. pyspark itself still imports normally afterwards (e.g. for Feast's Spark offline store).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_applied = False
_spark_hidden = False  # without_spark() was called (and not undone)
_loaded_without_spark = False  # GX was imported with pyspark hidden: its Spark support is off in this process


def without_spark(hidden: bool = True) -> None:
    """Declare that this process never validates on Spark: `load()` then imports GX with pyspark hidden (item 4).
    `without_spark(False)` undoes the declaration (for an in-process caller of the CLI); a GX already imported
    stays as it was imported."""
    global _spark_hidden
    _spark_hidden = hidden


def spark_available() -> bool:
    """False if GX was imported with pyspark hidden: validating on Spark then needs a process of its own."""
    return not _loaded_without_spark


def load() -> None:
    """Import Great Expectations (a no-op once it is): with pyspark hidden from it if `without_spark()` was called
    before and pyspark is not loaded yet. Every GX entry point of feedstore calls this first."""
    if "great_expectations.expectations" in sys.modules:
        return
    if not _spark_hidden or "pyspark" in sys.modules:
        import great_expectations.expectations  # noqa: F401
        return
    global _loaded_without_spark
    sys.modules["pyspark"] = None  # type: ignore[assignment]  # `import pyspark...` raises ImportError meanwhile
    try:
        import great_expectations.expectations  # noqa: F401

        _loaded_without_spark = True
    finally:
        if "pyspark" in sys.modules and sys.modules["pyspark"] is None:
            del sys.modules["pyspark"]


def apply() -> None:
    """Install the replacements in GX (idempotent)."""
    global _applied
    if _applied:
        return
    load()
    from great_expectations.exceptions import InvalidExpectationKwargsError
    from great_expectations.execution_engine import pandas_execution_engine
    from great_expectations.expectations.expectation import Expectation

    def _get_domain_kwargs(self) -> dict[str, str | None]:
        kwargs = self.configuration.kwargs
        domain_kwargs = {key: kwargs.get(key, self._get_default_value(key)) for key in self.domain_keys}
        missing_kwargs = set(self.domain_keys) - set(domain_kwargs.keys())
        if missing_kwargs:
            raise InvalidExpectationKwargsError(f"Missing domain kwargs: {list(missing_kwargs)}")
        return domain_kwargs

    def _get_success_kwargs(self) -> dict[str, Any]:
        domain_kwargs = self._get_domain_kwargs()
        kwargs = self.configuration.kwargs
        success_kwargs = {key: kwargs.get(key, self._get_default_value(key)) for key in self.success_keys}
        success_kwargs.update(domain_kwargs)
        return success_kwargs

    Expectation._get_domain_kwargs = _get_domain_kwargs
    Expectation._get_success_kwargs = _get_success_kwargs
    pandas_execution_engine.HASH_THRESHOLD = 0  # no frame is small enough to be fingerprinted
    _applied = True


@contextmanager
def copy_on_write() -> Iterator[None]:
    """Within the block, pandas runs in Copy-on-Write mode (see the module docstring)."""
    import pandas as pd

    with pd.option_context("mode.copy_on_write", True):
        yield
