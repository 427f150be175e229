"""One way to open DuckDB: every stage reads, casts and compares timestamps in UTC, whatever the machine's zone."""

from __future__ import annotations

import duckdb


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection in UTC, without a progress bar (and with `threads` if given)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def literal(value: object) -> str:
    """A path or string as a SQL string literal, quotes doubled: for the few places DuckDB takes no parameter
    (views, COPY ... TO); everywhere else bind it."""
    return "'" + str(value).replace("'", "''") + "'"
