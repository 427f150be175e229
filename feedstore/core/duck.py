"""One way to open DuckDB: every stage reads, casts and compares timestamps in UTC, whatever the machine's zone."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection in UTC, without a progress bar (and with `threads` if given)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


@contextmanager
def spilling(memory_limit: str | None = None, temp_directory: str | None = None, *, threads: int | None = None,
             prefix: str = "feedstore-duckdb-") -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect()` holding at most `memory_limit` (if given; DuckDB's default is 80% of RAM) and spilling to
    `temp_directory`, or to a private temporary directory (never the current one) removed with the connection."""
    con = connect(threads)
    own = None if temp_directory else tempfile.mkdtemp(prefix=prefix)
    try:
        con.execute(f"SET temp_directory = {literal(temp_directory or own)}")
        if memory_limit:
            con.execute(f"SET memory_limit = {literal(memory_limit)}")
        yield con
    finally:
        con.close()
        if own:
            shutil.rmtree(own, ignore_errors=True)


def literal(value: object) -> str:
    """A path or string as a SQL string literal, quotes doubled: for the few places DuckDB takes no parameter
    (views, COPY ... TO); everywhere else bind it."""
    return "'" + str(value).replace("'", "''") + "'"
