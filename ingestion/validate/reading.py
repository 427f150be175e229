"""Reading raw inputs against their contract: exact schemas, one-line errors naming file and column, date partitions,
repeated keys across files."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedstore.core import duck
from feedstore.core.catalog import Catalog
from feedstore.core.contracts import (
    INTERACTIONS_SCHEMA,
)
from feedstore.core.errors import InputDataError


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def check_schema(path: Path, actual: pa.Schema, expected: pa.Schema) -> None:
    """Exact column set and types; raise a one-line InputDataError naming the file, column and problem."""
    names = set(actual.names)
    for f in expected:
        if f.name not in names:
            raise InputDataError(f"{path}: missing column '{f.name}' (expected {f.type})")
    extra = [n for n in actual.names if n not in set(expected.names)]
    if extra:
        raise InputDataError(f"{path}: unexpected column '{extra[0]}' (the contract is {', '.join(expected.names)})")
    for f in expected:
        got = actual.field(f.name).type
        if pa.types.is_timestamp(f.type) and pa.types.is_timestamp(got):
            if got.tz not in ("UTC", "+00:00", "Etc/UTC"):
                raise InputDataError(f"{path}: column '{f.name}' has type {got}, expected a UTC timestamp")
        elif got != f.type:
            raise InputDataError(f"{path}: column '{f.name}' has type {got}, expected {f.type}")


def read_contract_table(path: Path, schema: pa.Schema, *, allow_empty: bool = False) -> pa.Table:
    """Read one Parquet file of the contract, with a clear one-line error for every expected failure."""
    if not path.exists():
        raise InputDataError(f"{path}: file not found (run `feedstore generate` first?)")
    try:
        pf = pq.ParquetFile(path)
        check_schema(path, pf.schema_arrow, schema)
        table = pf.read()
    except InputDataError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InputDataError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    if table.num_rows == 0 and not allow_empty:
        raise InputDataError(f"{path}: table is empty (0 rows)")
    return table.cast(schema)


@dataclass(frozen=True)
class Partition:
    day: str
    files: tuple[Path, ...]
    rows: int


def discover_partitions(root: Path, start: date | None, end: date | None) -> list[Partition]:
    """Date partitions under `root` (hive `date=YYYY-MM-DD/`), optionally limited to [start, end]."""
    if not root.is_dir():
        raise InputDataError(f"{root}: directory not found (run `feedstore generate` first?)")
    stray = sorted(p.name for p in root.iterdir() if not (p.is_dir() and Catalog.is_partition(p)))
    if stray:  # it would be neither validated nor quarantined: say so instead of skipping it
        raise InputDataError(f"{root / stray[0]}: outside any date=YYYY-MM-DD partition ({len(stray)} such "
                             f"entr{'y' if len(stray) == 1 else 'ies'}); move it into its day's partition or remove it")
    parts = []
    for day, d in Catalog.day_partitions(root).items():
        try:
            day_date = date.fromisoformat(day)
        except ValueError:
            raise InputDataError(f"{d}: partition name is not date=YYYY-MM-DD") from None
        if (start and day_date < start) or (end and day_date > end):
            continue
        files = tuple(sorted(d.glob("*.parquet")))
        rows = 0
        for f in files:
            try:
                meta = pq.ParquetFile(f)
            except (pa.ArrowException, OSError) as e:
                raise InputDataError(f"{f}: not a readable Parquet file ({_first_line(e)})") from None
            check_schema(f, meta.schema_arrow, INTERACTIONS_SCHEMA)
            rows += meta.metadata.num_rows
        if files:
            parts.append(Partition(day, files, rows))
    if not parts:
        sel = f" between {start or '...'} and {end or '...'}" if (start or end) else ""
        raise InputDataError(f"{root}: no date=YYYY-MM-DD partitions with Parquet files{sel}")
    return parts


def schema_types(schema: pa.Schema) -> dict[str, str]:
    return {f.name: "small_int" for f in schema if pa.types.is_integer(f.type) and f.type.bit_width < 64}


def _non_first_rows(files: list[Path], memory_limit: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Across all files: rows that repeat an earlier interaction_id / (user, item, timestamp), per file path.
    DuckDB holds at most `memory_limit` for it (grouping 100M keys took ~15 GiB without a limit) and spills the
    rest to a private temporary directory."""
    with duck.spilling(memory_limit, prefix="feedstore-validate-") as con:
        return _non_first_rows_with(con, files)


def _non_first_rows_with(con, files: list[Path]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    src = "read_parquet($files, filename = true, file_row_number = true)"
    params = {"files": [str(f) for f in files]}

    def non_first(keys: str, not_null: str) -> dict[str, np.ndarray]:
        rows = con.execute(f"""
            WITH ev AS (SELECT filename, file_row_number, {keys}, event_timestamp FROM {src} WHERE {not_null}),
                 rep AS (SELECT {keys} FROM ev GROUP BY ALL HAVING count(*) > 1),
                 ranked AS (SELECT filename, file_row_number,
                                   row_number() OVER (PARTITION BY {keys}
                                                      ORDER BY event_timestamp NULLS LAST, filename,
                                                               file_row_number) AS rn
                            FROM ev SEMI JOIN rep USING ({keys}))
            SELECT filename, list(file_row_number ORDER BY file_row_number) FROM ranked WHERE rn > 1 GROUP BY 1
        """, params).fetchall()
        return {f: np.asarray(r, dtype=np.int64) for f, r in rows}

    ids = non_first("interaction_id", "interaction_id IS NOT NULL")
    imps = non_first("user_id, item_id, event_timestamp",
                     "user_id IS NOT NULL AND item_id IS NOT NULL AND event_timestamp IS NOT NULL")
    return ids, imps
