"""validate_events: the raw-data gate (users, items, interactions), quarantine, reports, publishing."""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA
from feedstore.core.errors import InputDataError, ValidationFailed
from feedstore.core.gx import GXRunner, summary_table
from feedstore.core.io import ParquetWriters, VersionStage, link_tree, write_parquet
from feedstore.core.progress import Progress
from feedstore.ingestion.validate import expectations as ex
from feedstore.ingestion.validate.quarantine import TableResult, _quarantine_table, quarantine_mask
from feedstore.ingestion.validate.reading import (
    Partition,
    _non_first_rows,
    discover_partitions,
    read_contract_table,
    schema_types,
)
from feedstore.ingestion.validate.reports import _write_reports
from feedstore.ingestion.validate.view import _NULLABLE, _chunks, _occurrence, _validation_view

log = logging.getLogger(__name__)

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


def validate_events(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None,
                 as_of: datetime | None = None, raise_on_failure: bool = True) -> ValidationSummary:
    """Stage `validate`: the raw-data gate (users, items, interactions); raise ValidationFailed if it fails."""
    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir)
    v = cfg.validation
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    parts = discover_partitions(Catalog(data_dir).raw_interactions, start, end)
    total_rows = sum(p.rows for p in parts)
    if total_rows == 0:
        raise InputDataError(f"{Catalog(data_dir).raw_interactions}: interactions are empty "
                             f"(0 rows in {len(parts)} files)")

    for path, schema in ((Catalog(data_dir).raw_users, USERS_SCHEMA), (Catalog(data_dir).raw_items, ITEMS_SCHEMA)):
        read_contract_table(path, schema)  # unreadable entity tables fail here, in one line, before anything starts
    log.info("validating users, items and %s interactions in %d date partitions (%s..%s) with Great Expectations",
             f"{total_rows:,}", len(parts), parts[0].day, parts[-1].day)
    version = Catalog(data_dir).publication("validate").begin()
    stage = Catalog.staged(version.path)
    try:
        # DuckDB finds the repeated keys across files on a side thread (it releases the GIL and imports nothing)
        # while this thread imports GX and validates users and items
        with ThreadPoolExecutor(1, thread_name_prefix="validate-keys") as side:
            repeats = side.submit(_non_first_rows, [f for p in parts for f in p.files], v.duckdb_memory_limit)
            runner = GXRunner(Catalog(data_dir).data_docs, example_rows=v.example_rows, history=v.docs_history)
            users_res, users = _validate_entity(runner, cfg, "users", Catalog(data_dir).raw_users, USERS_SCHEMA,
                                                "user_id", ex.users_suite(cfg), stage)
            items_res, items = _validate_entity(runner, cfg, "items", Catalog(data_dir).raw_items, ITEMS_SCHEMA,
                                                "item_id", ex.items_suite(cfg), stage)
            inter = _validate_interactions(runner, cfg, parts, users, items, as_of, stage, repeats.result())
        tables = {"users": users_res, "items": items_res, "interactions": inter}
    except BaseException:
        version.discard()
        raise
    return _finish_validation(version, runner, data_dir, tables, [p.day for p in parts], as_of, t0,
                              max_quarantine_fraction=v.max_quarantine_fraction, raise_on_failure=raise_on_failure)


def _finish_validation(version: VersionStage, runner, data_dir: Path, tables: dict[str, TableResult], days: list[str],
                       as_of: datetime, t0: float, *, max_quarantine_fraction: float, raise_on_failure: bool,
                       engine: str = "") -> ValidationSummary:
    """What every engine does once its tables are validated and staged in `version`: the gate, the JSON reports,
    Data Docs, the publication (validated data only if the gate passed), the summary log and the verdict."""
    cat = Catalog(data_dir)
    try:
        failures = _gate(tables, max_quarantine_fraction)
        passed = not failures
        reports = _write_reports(data_dir, tables, passed, failures, as_of, days)
        docs = runner.build_docs()
        _publish(version, days, publish_validated=passed)
    except BaseException:
        version.discard()  # a no-op once published
        raise

    for name, res in tables.items():
        log.info("validation summary for %s: %s rows in = %s validated + %s quarantined (%.3f%%)\n%s", name,
                 f"{res.rows_in:,}", f"{res.validated:,}", f"{res.quarantined:,}", 100 * res.quarantined_fraction,
                 summary_table(name, list(res.outcomes.values())))
    seconds = time.perf_counter() - t0
    summary = ValidationSummary(passed, tables, failures, reports, docs, seconds, days)
    if passed:
        log.info("validation passed%s in %.2f s: validated data in %s, reports in %s, Data Docs %s", engine, seconds,
                 cat.validated, cat.validation_reports, docs)
    else:
        msg = (f"validation failed: {'; '.join(failures[:3])}{' ...' if len(failures) > 3 else ''} "
               f"(see {cat.validation_reports})")
        if raise_on_failure:
            raise ValidationFailed(msg)
        log.error(msg)
    return summary


def _validate_entity(runner: GXRunner, cfg: PipelineConfig, name: str, path: Path, schema: pa.Schema, key: str,
                     gx_suite: Any, stage: Catalog) -> tuple[TableResult, pa.Table]:
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
    write_parquet(clean, stage.validated_table(name))
    if bad.any():
        q = _quarantine_table(table, bad, reasons, np.full(table.num_rows, str(path), dtype=object),
                              np.arange(table.num_rows))
        write_parquet(q, stage.quarantined_table(name))
    return res, clean


def _validate_interactions(runner: GXRunner, cfg: PipelineConfig, parts: list[Partition], users: pa.Table,
                           items: pa.Table, as_of: datetime, stage: Catalog,
                           repeats: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> TableResult:
    v = cfg.validation
    rep_ids, rep_imps = repeats
    gx_suite = ex.interactions_suite(cfg, as_of)
    res = TableResult("interactions", gx_suite.name)
    per_day: dict[str, tuple[int, int, int]] = {}
    columns = INTERACTIONS_SCHEMA.names
    workers = os.cpu_count() or 1
    with (Progress(sum(p.rows for p in parts), "validate interactions", unit="rows", logger=log) as progress,
          ThreadPoolExecutor(workers, thread_name_prefix="validate-reader") as readers,
          ParquetWriters(workers) as writers):
        for chunk in _chunks(parts, v.chunk_rows):
            files = [(p.day, f) for p in chunk for f in p.files]
            # Parquet decoding releases the GIL: the chunk's files are read side by side (in order; the first
            # unreadable file in that order is the one reported)
            tables = list(readers.map(lambda item: read_contract_table(item[1], INTERACTIONS_SCHEMA, allow_empty=True),
                                      files))
            spans, occ_id, occ_imp = [], [], []  # spans: (day, file, first row in chunk, rows)
            offset = 0
            for (day, f), t in zip(files, tables, strict=True):
                spans.append((day, f, offset, t.num_rows))
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
            files_of_rows = np.repeat(names, [s[3] for s in spans])
            row_no = np.arange(n) - np.repeat([s[2] for s in spans], [s[3] for s in spans])
            bad_idx = np.flatnonzero(bad)
            quarantined = _quarantine_table(table, bad, reasons, files_of_rows, row_no)
            q_day = np.repeat([s[0] for s in spans], [s[3] for s in spans])[bad_idx] if len(bad_idx) else []
            clicks = df["click"].to_numpy(dtype=np.float64, na_value=np.nan)
            likes = df["like"].to_numpy(dtype=np.float64, na_value=np.nan)
            # partitions are contiguous in the chunk: slice, don't search
            day_rows: dict[str, list[int]] = {}
            for day, _, first, rows in spans:
                day_rows.setdefault(day, [first, first])[1] = first + rows
            for day, (lo, hi) in day_rows.items():
                keep = ~bad[lo:hi]
                writers.write("validated", table.slice(lo, hi - lo).filter(pa.array(keep)),
                              stage.validated_interactions / Catalog.partition(day) / "part-0.parquet")
                in_q = np.asarray(q_day) == day if len(bad_idx) else None
                if in_q is not None and in_q.any():
                    writers.write("quarantined", quarantined.filter(pa.array(in_q)),
                                  stage.quarantined_interactions / Catalog.partition(day) / "part-0.parquet")
                per_day[day] = (int(keep.sum()), int(np.nansum(clicks[lo:hi][keep])),
                                int(np.nansum(likes[lo:hi][keep])))
            progress.update(n)
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


def _publish(version: VersionStage, days: list[str], *, publish_validated: bool) -> None:
    """Publish validated/ and quarantine/ together (one atomic switch): users and items are replaced, the
    validated days' partitions replaced (a day with no rows loses its old one), every other day kept. A failed
    gate publishes the new quarantine beside the old validated data."""
    pub, stage = version.publication, version.path
    recomputed = {Catalog.partition(d) for d in days}

    def replaced(rel: Path) -> bool:  # not carried over from the published version: users, items, validated days
        return rel.parts[0] != "interactions" or (len(rel.parts) >= 2 and rel.parts[1] in recomputed)

    for kind in ("validated", "quarantine"):
        current = pub.published(kind)
        if kind == "validated" and not publish_validated:
            shutil.rmtree(stage / kind, ignore_errors=True)
            if current is not None:
                link_tree(current, stage / kind)
        elif current is not None:
            link_tree(current, stage / kind, skip=replaced)
    version.publish()
