"""The validation gate for raw data: GX suites decide, bad rows are quarantined with a reason, nothing is lost.

Reads `<data-dir>/raw/`, writes `<data-dir>/validated/` (what every later stage reads), `<data-dir>/quarantine/`
(each bad row with `_reason`, `_source_file`, `_source_row`), `<data-dir>/reports/validation/<table>.json` and GX
Data Docs in `<data-dir>/reports/data_docs/`. For every table: input rows = validated + quarantined.

Interactions are validated in chunks of whole date partitions (bounded memory at any size); a DuckDB pass over
all selected files finds repeated keys across chunks first, and totals / daily volumes are checked at the end.
Validated partitions are published only when the gate passes; quarantine and reports are always written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feedstore import duck
from feedstore.config import PipelineConfig
from feedstore.errors import InputDataError
from feedstore.io import replace_dir, write_json, write_parquet
from feedstore.quality import ROW, GXRunner, RuleOutcome, ValidationFailed, summary_table
from ingestion import expectations as ex
from ingestion.schemas import (
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    TIME_OF_DAY,
    USERS_SCHEMA,
    faults_path,
    interactions_dir,
    items_path,
    users_path,
)

log = logging.getLogger(__name__)

_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.int8(): pd.Int8Dtype()}.get
_MAX_RULES = 62


def validated_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "validated"


def quarantine_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "quarantine"


def reports_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "reports" / "validation"


def data_docs_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "reports" / "data_docs"


# ------------------------------------------------------------------------------------------ reading


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
    parts = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("date=")):
        day = d.name.removeprefix("date=")
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


# ------------------------------------------------------------------------------------------ quarantine


@dataclass
class TableResult:
    """Outcome of one table's gate."""

    table: str
    suite: str
    rows_in: int = 0
    validated: int = 0
    quarantined: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, RuleOutcome] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    example_limit: int = 5

    def add(self, outcomes: list[RuleOutcome], rows: int) -> None:
        """Merge a chunk's outcomes (counts summed, examples from the first chunks, success = all chunks)."""
        for o in outcomes:
            prev = self.outcomes.get(o.rule)
            if prev is None:
                self.outcomes[o.rule] = o
                o.unexpected_rows = o.unexpected_rows[:0]
                continue
            prev.success = prev.success and o.success
            prev.unexpected_count += o.unexpected_count
            prev.element_count = (prev.element_count or 0) + (o.element_count or 0)
            prev.error = prev.error or o.error
            prev.examples.extend(o.examples[: max(0, self.example_limit - len(prev.examples))])
            if o.level != ROW:
                prev.observed_value = o.observed_value

    def finish(self) -> None:
        for o in self.outcomes.values():
            if o.level == ROW:
                o.unexpected_percent = round(100.0 * o.unexpected_count / self.rows_in, 6) if self.rows_in else 0.0

    @property
    def quarantined_fraction(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0


def quarantine_mask(n: int, outcomes: list[RuleOutcome]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """From row rules' failing rows: (bad-row mask, reason string per bad row, count of rows per rule)."""
    rules = sorted(o for o in {o.rule for o in outcomes if o.level == ROW})
    if len(rules) > _MAX_RULES:
        raise ValueError(f"at most {_MAX_RULES} row rules per suite")
    bit = {r: np.int64(1) << np.int64(i) for i, r in enumerate(rules)}
    codes = np.zeros(n, dtype=np.int64)
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.level == ROW and len(o.unexpected_rows):
            codes[o.unexpected_rows] |= bit[o.rule]
    bad = codes != 0
    uniq, inverse = np.unique(codes[bad], return_inverse=True)
    labels = np.array([";".join(r for r in rules if u & bit[r]) for u in uniq], dtype=object)
    for r in rules:
        c = int(np.count_nonzero(codes & bit[r]))
        if c:
            counts[r] = c
    return bad, labels[inverse] if len(uniq) else np.empty(0, dtype=object), counts


def _quarantine_table(table: pa.Table, bad: np.ndarray, reasons: np.ndarray, files: np.ndarray,
                      rows: np.ndarray) -> pa.Table:
    """The bad rows of `table` with why (`_reason`, one per bad row) and where each came from: `files` and `rows`
    give the source file and row number of every row of `table`."""
    idx = np.flatnonzero(bad)
    return (table.take(pa.array(idx))
            .append_column("_reason", pa.array(reasons.tolist(), pa.string()))
            .append_column("_source_file", pa.array(np.asarray(files, dtype=object)[idx].tolist(), pa.string()))
            .append_column("_source_row", pa.array(np.asarray(rows, dtype=np.int64)[idx])))


def schema_types(schema: pa.Schema) -> dict[str, str]:
    return {f.name: "small_int" for f in schema if pa.types.is_integer(f.type) and f.type.bit_width < 64}


def _occurrence(df: pd.DataFrame, key: str) -> np.ndarray:
    occ = df.groupby(key, dropna=True, sort=False).cumcount().to_numpy() + 1
    occ[df[key].isna().to_numpy()] = 1
    return occ


# ------------------------------------------------------------------------------------------ entity tables


def _validate_entity(runner: GXRunner, cfg: PipelineConfig, name: str, path: Path, schema: pa.Schema, key: str,
                     gx_suite: Any, stage: Path) -> tuple[TableResult, pa.Table]:
    table = read_contract_table(path, schema)
    df = table.to_pandas(types_mapper=_NULLABLE)
    for c, dtype in schema_types(schema).items():
        if dtype == "small_int":  # GX vectorizes range checks only for plain int64 / float64
            df[c] = df[c].to_numpy(dtype=np.float64, na_value=np.nan)
    df["_occurrence"] = _occurrence(df, key)
    outcomes = runner.validate(df, gx_suite, f"raw_{name}", example_columns=schema.names, run_name=f"raw {name}")
    bad, reasons, counts = quarantine_mask(len(df), outcomes)
    res = TableResult(name, gx_suite.name, rows_in=table.num_rows, validated=int((~bad).sum()),
                      quarantined=int(bad.sum()), by_reason=counts)
    res.add(outcomes, table.num_rows)
    res.finish()
    clean = table.filter(pa.array(~bad))
    write_parquet(clean, stage / "validated" / f"{name}.parquet")
    if bad.any():
        q = _quarantine_table(table, bad, reasons, np.full(table.num_rows, str(path), dtype=object),
                              np.arange(table.num_rows))
        write_parquet(q, stage / "quarantine" / f"{name}.parquet")
    return res, clean


# ------------------------------------------------------------------------------------------ interactions


def _non_first_rows(files: list[Path]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Across all files: rows that repeat an earlier interaction_id / (user, item, timestamp), per file path."""
    con = duck.connect()
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


def _lookup_times(column: pa.ChunkedArray, entities: pa.Table, key: str, ts: str):
    """Per row: (key is null, key found among entities, entity time in us or NaT), via a hash index."""
    null = np.asarray(column.is_null())
    keys = column.fill_null(0).to_numpy()
    pos = pd.Index(entities.column(key).to_numpy()).get_indexer(keys)
    found = (pos >= 0) & ~null
    times = entities.column(ts).cast(pa.int64()).to_numpy()
    return null, found, np.where(found, times[np.maximum(pos, 0)], np.iinfo(np.int64).min)


def _utc(us: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(us.view("datetime64[us]")).tz_localize("UTC")


def _validation_view(table: pa.Table, users: pa.Table, items: pa.Table, occ_id: np.ndarray,
                     occ_imp: np.ndarray) -> pd.DataFrame:
    """Raw columns plus `DERIVED`, built in one go (one consolidated frame: GX slices it ~40 times)."""
    cols = {name: table.column(name).to_pandas(types_mapper=_NULLABLE)
            for name in table.column_names if name != "interaction_id"}
    # only nulls are checked on the id (duplicates come from the DuckDB pass): keep it Arrow-backed, no Python str
    cols["interaction_id"] = pd.Series(pd.arrays.ArrowExtensionArray(table.column("interaction_id")))
    for c in ("device", "time_of_day"):
        cols[c] = cols[c].astype("category")
    # GX vectorizes range checks only for plain int64 / float64: nullable small ints go as float64 (NaN = null)
    cols["day_of_week"] = cols["day_of_week"].to_numpy(dtype=np.float64, na_value=np.nan)
    ts_us = table.column("event_timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)
    ts_null = np.asarray(table.column("event_timestamp").is_null())
    u_null, u_found, signup = _lookup_times(table.column("user_id"), users, "user_id", "signup_date")
    i_null, i_found, creation = _lookup_times(table.column("item_id"), items, "item_id", "creation_date")
    hour = np.where(ts_null, -1, (ts_us // 3_600_000_000) % 24)
    tod = pd.Categorical.from_codes(
        np.select([hour < 0, hour < 5, hour < 12, hour < 17, hour < 22], [-1, 3, 0, 1, 2], 3), list(TIME_OF_DAY))
    dow = np.where(ts_null, np.nan, ((ts_us // 86_400_000_000) + 3) % 7)
    click = cols["click"].to_numpy(dtype=np.float64, na_value=np.nan)
    no_click, clicked = click == 0, click == 1
    dwell = cols["dwell_time"].to_numpy(dtype=np.float64, na_value=np.nan)
    cols.update({
        "_signup_date": _utc(signup),
        "_creation_date": _utc(creation),
        "_expected_time_of_day": tod,
        "_expected_day_of_week": dow,
        "_id_occurrence": occ_id,
        "_impression_occurrence": occ_imp,
        "_user_known": pd.arrays.BooleanArray(u_found, u_null),  # null where user_id is null
        "_item_known": pd.arrays.BooleanArray(i_found, i_null),
        "_like_if_no_click": pd.Series(cols["like"]).where(no_click).astype("Int8").array,
        "_share_if_no_click": pd.Series(cols["share"]).where(no_click).astype("Int8").array,
        "_dwell_if_no_click": np.where(no_click, dwell, np.nan),
        "_dwell_if_click": np.where(clicked, dwell, np.nan),
    })
    return pd.DataFrame({k: (v.array if isinstance(v, pd.Series) else v) for k, v in cols.items()})


def _chunks(parts: list[Partition], chunk_rows: int) -> list[list[Partition]]:
    chunks: list[list[Partition]] = [[]]
    rows = 0
    for p in parts:
        if chunks[-1] and rows + p.rows > chunk_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(p)
        rows += p.rows
    return chunks


@dataclass
class ValidationSummary:
    """What `feedstore validate` did; `passed` is False only if the caller asked not to raise."""

    passed: bool
    tables: dict[str, TableResult]
    failures: list[str]
    reports: dict[str, Path]
    data_docs: Path | None
    seconds: float
    days: list[str]


def validate_raw(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None,
                 as_of: datetime | None = None, raise_on_failure: bool = True) -> ValidationSummary:
    """Run the raw-data gate (users, items, interactions); raise ValidationFailed if it fails."""
    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir)
    v = cfg.validation
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    parts = discover_partitions(interactions_dir(data_dir), start, end)
    total_rows = sum(p.rows for p in parts)
    if total_rows == 0:
        raise InputDataError(f"{interactions_dir(data_dir)}: interactions are empty (0 rows in {len(parts)} files)")

    stage = data_dir / f".validate-staging-{uuid.uuid4().hex[:8]}"
    stage.mkdir(parents=True)
    try:
        runner = GXRunner(data_docs_dir(data_dir), example_rows=v.example_rows)
        users_res, users = _validate_entity(runner, cfg, "users", users_path(data_dir), USERS_SCHEMA, "user_id",
                                            ex.users_suite(cfg), stage)
        items_res, items = _validate_entity(runner, cfg, "items", items_path(data_dir), ITEMS_SCHEMA, "item_id",
                                            ex.items_suite(cfg), stage)
        inter = _validate_interactions(runner, cfg, parts, users, items, as_of, stage)
        tables = {"users": users_res, "items": items_res, "interactions": inter}
        failures = _gate(tables, v.max_quarantine_fraction)
        passed = not failures
        reports = _write_reports(data_dir, tables, passed, failures, as_of, [p.day for p in parts])
        docs = runner.build_docs()
        _publish(data_dir, stage, [p.day for p in parts], publish_validated=passed)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    for name, res in tables.items():
        log.info("validation summary for %s: %s rows in = %s validated + %s quarantined (%.3f%%)\n%s", name,
                 f"{res.rows_in:,}", f"{res.validated:,}", f"{res.quarantined:,}", 100 * res.quarantined_fraction,
                 summary_table(name, list(res.outcomes.values())))
    seconds = time.perf_counter() - t0
    summary = ValidationSummary(passed, tables, failures, reports, docs, seconds, [p.day for p in parts])
    if passed:
        log.info("validation passed in %.2f s: validated data in %s, reports in %s, Data Docs %s", seconds,
                 validated_dir(data_dir), reports_dir(data_dir), docs)
    else:
        msg = (f"validation failed: {'; '.join(failures[:3])}{' ...' if len(failures) > 3 else ''} "
               f"(see {reports_dir(data_dir)})")
        if raise_on_failure:
            raise ValidationFailed(msg)
        log.error(msg)
    return summary


def _validate_interactions(runner: GXRunner, cfg: PipelineConfig, parts: list[Partition], users: pa.Table,
                           items: pa.Table, as_of: datetime, stage: Path) -> TableResult:
    v = cfg.validation
    files = [f for p in parts for f in p.files]
    rep_ids, rep_imps = _non_first_rows(files)
    gx_suite = ex.interactions_suite(cfg, as_of)
    res = TableResult("interactions", gx_suite.name)
    per_day: dict[str, tuple[int, int, int]] = {}
    columns = INTERACTIONS_SCHEMA.names
    for chunk in _chunks(parts, v.chunk_rows):
        tables, spans, occ_id, occ_imp = [], [], [], []  # spans: (day, file, first row in chunk, rows)
        offset = 0
        for p in chunk:
            for f in p.files:
                t = read_contract_table(f, INTERACTIONS_SCHEMA, allow_empty=True)
                tables.append(t)
                spans.append((p.day, f, offset, t.num_rows))
                for occ, rep in ((occ_id, rep_ids), (occ_imp, rep_imps)):
                    o = np.ones(t.num_rows, dtype=np.int64)
                    o[rep.get(str(f), np.empty(0, np.int64))] = 2
                    occ.append(o)
                offset += t.num_rows
        table = pa.concat_tables(tables).combine_chunks()
        n = table.num_rows
        df = _validation_view(table, users, items, np.concatenate(occ_id), np.concatenate(occ_imp))
        outcomes = runner.validate(df, gx_suite, "raw_interactions", example_columns=columns,
                                   run_name=f"raw interactions {chunk[0].day}..{chunk[-1].day}")
        bad, reasons, counts = quarantine_mask(n, outcomes)
        res.rows_in += n
        res.validated += int((~bad).sum())
        res.quarantined += int(bad.sum())
        for r, c in counts.items():
            res.by_reason[r] = res.by_reason.get(r, 0) + c
        res.add(outcomes, n)
        # each row's source file and row number within it (the chunk concatenates the partitions' files)
        names = np.array([str(s[1]) for s in spans], dtype=object)
        files = np.repeat(names, [s[3] for s in spans])
        row_no = np.arange(n) - np.repeat([s[2] for s in spans], [s[3] for s in spans])
        bad_idx = np.flatnonzero(bad)
        quarantined = _quarantine_table(table, bad, reasons, files, row_no)
        q_day = np.repeat([s[0] for s in spans], [s[3] for s in spans])[bad_idx] if len(bad_idx) else []
        clicks = df["click"].to_numpy(dtype=np.float64, na_value=np.nan)
        likes = df["like"].to_numpy(dtype=np.float64, na_value=np.nan)
        # partitions are contiguous in the chunk: slice, don't search
        day_rows: dict[str, list[int]] = {}
        for day, _, first, rows in spans:
            day_rows.setdefault(day, [first, first])[1] = first + rows
        for day, (lo, hi) in day_rows.items():
            keep = ~bad[lo:hi]
            write_parquet(table.slice(lo, hi - lo).filter(pa.array(keep)),
                          stage / "validated" / "interactions" / f"date={day}" / "part-0.parquet")
            in_q = np.asarray(q_day) == day if len(bad_idx) else None
            if in_q is not None and in_q.any():
                write_parquet(quarantined.filter(pa.array(in_q)),
                              stage / "quarantine" / "interactions" / f"date={day}" / "part-0.parquet")
            per_day[day] = (int(keep.sum()), int(np.nansum(clicks[lo:hi][keep])), int(np.nansum(likes[lo:hi][keep])))
    res.finish()

    # totals and daily volumes of the validated rows, checked by GX as table rules
    validated = sum(d[0] for d in per_day.values())
    totals = pd.DataFrame({
        "validated_rows": [validated],
        "ctr": [sum(d[1] for d in per_day.values()) / validated if validated else float("nan")],
        "like_rate": [sum(d[2] for d in per_day.values()) / validated if validated else float("nan")],
        "duplicate_id_fraction": [res.by_reason.get("duplicate_interaction_id", 0) / max(res.rows_in, 1)],
    })
    for o in runner.validate(totals, ex.interactions_totals_suite(cfg), "raw_interactions_totals",
                             run_name="raw interactions totals"):
        o.observed_value = totals.iloc[0][o.kwargs["column"]].item()
        res.outcomes[o.rule] = o
    daily = _daily_frame(cfg, per_day, [p.day for p in parts])
    for o in runner.validate(daily, ex.interactions_daily_suite(cfg), "raw_interactions_daily",
                             run_name="raw interactions daily"):
        o.observed_value = {"failing_days": [e["day"] for e in o.examples]} if not o.success else "all days ok"
        res.outcomes[o.rule] = o
    res.extra["day_count"] = len(per_day)
    res.extra["totals"] = {k: totals.iloc[0][k].item() for k in totals.columns}
    return res


def _daily_frame(cfg: PipelineConfig, per_day: dict[str, tuple[int, int, int]], days: list[str]) -> pd.DataFrame:
    """One row per day of the configured range that was selected (missing days count 0 rows)."""
    g = cfg.generation
    selected = sorted(days)
    lo = max(g.start.isoformat(), selected[0])
    hi = min(g.end.isoformat(), selected[-1])
    expected = [d.date().isoformat() for d in pd.date_range(lo, hi, freq="D")] if lo <= hi else []
    rows = np.array([per_day.get(d, (0, 0, 0))[0] for d in expected], dtype=np.int64)
    median = float(np.median(rows)) if len(rows) else 0.0
    return pd.DataFrame({"day": expected, "rows": rows,
                         "rows_vs_median": rows / median if median else np.zeros(len(rows))})


def _gate(tables: dict[str, TableResult], max_fraction: float) -> list[str]:
    failures = []
    for name, res in tables.items():
        for o in res.outcomes.values():
            if o.error:
                failures.append(f"{name}.{o.rule} could not be evaluated ({o.error})")
            elif o.blocking:
                failures.append(f"{name}.{o.rule} failed (observed {o.observed_value})")
        if res.quarantined_fraction > max_fraction:
            failures.append(f"{name}: {res.quarantined:,} of {res.rows_in:,} rows quarantined "
                            f"({100 * res.quarantined_fraction:.2f}% > {100 * max_fraction:g}% threshold)")
    return failures


def _fault_reconciliation(data_dir: Path, by_reason: dict[str, int]) -> dict[str, Any] | None:
    path = faults_path(data_dir)
    if not path.exists():
        return None
    faults = json.loads(path.read_text())
    if not faults.get("total"):
        return None
    kinds = {k: {"injected": n, "quarantined": by_reason.get(k, 0), "match": n == by_reason.get(k, 0)}
             for k, n in faults["counts"].items()}
    return {"faults_file": str(path), "all_match": all(k["match"] for k in kinds.values()), "kinds": kinds}


def _write_reports(data_dir: Path, tables: dict[str, TableResult], passed: bool, failures: list[str],
                   as_of: datetime, days: list[str]) -> dict[str, Path]:
    paths = {}
    for name, res in tables.items():
        doc = {
            "table": name,
            "suite": res.suite,
            "gate": "pass" if passed else "fail",
            "failures": [f for f in failures if f.startswith(f"{name}.") or f.startswith(f"{name}:")],
            "as_of": as_of.isoformat(),
            "rows_in": res.rows_in,
            "validated": res.validated,
            "quarantined": res.quarantined,
            "reconciles": res.rows_in == res.validated + res.quarantined,
            "quarantined_fraction": round(res.quarantined_fraction, 8),
            "quarantined_by_reason": dict(sorted(res.by_reason.items())),
            "validated_path": str(validated_dir(data_dir) / (name if name == "interactions" else f"{name}.parquet")),
            "quarantine_path": str(quarantine_dir(data_dir) / (name if name == "interactions" else f"{name}.parquet")),
            "expectations": [
                {
                    "rule": o.rule, "level": o.level, "severity": o.severity, "expectation_type": o.expectation_type,
                    "kwargs": o.kwargs, "success": o.success, "observed_value": o.observed_value,
                    "element_count": o.element_count,
                    "unexpected_count": o.unexpected_count if o.level == ROW else None,
                    "unexpected_percent": o.unexpected_percent if o.level == ROW else None,
                    "error": o.error, "examples": o.examples,
                }
                for o in sorted(res.outcomes.values(), key=lambda o: (o.level != "table", o.rule))
            ],
        }
        if name == "interactions":
            doc["days"] = days
            doc.update(res.extra)
            rec = _fault_reconciliation(data_dir, res.by_reason)
            if rec:
                doc["fault_reconciliation"] = rec
        path = reports_dir(data_dir) / f"{name}.json"
        write_json(doc, path)
        paths[name] = path
    return paths


def _publish(data_dir: Path, stage: Path, days: list[str], *, publish_validated: bool) -> None:
    kinds = ["quarantine"] + (["validated"] if publish_validated else [])
    for kind in kinds:
        for name in ("users", "items"):
            staged = stage / kind / f"{name}.parquet"
            target = data_dir / kind / f"{name}.parquet"
            if staged.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
            elif target.exists():
                target.unlink()
        for day in days:
            staged = stage / kind / "interactions" / f"date={day}"
            replace_dir(staged if staged.exists() else None, data_dir / kind / "interactions" / f"date={day}")
