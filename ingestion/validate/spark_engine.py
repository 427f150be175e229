"""`validate` on Apache Spark (`engine: spark`): the same GX suites, run on Spark DataFrames by GX's Spark
execution engine, the same quarantine reasons, outputs and reports as `run.py` (the DuckDB/pandas engine).

* **Contracts first**: every file's Arrow schema is checked on the driver from its footer (`discover_partitions`,
  `read_contract_table` for the entity tables), so a wrong type, a missing column or an unreadable file is the same
  one-line error (exit 3) before Spark reads anything.
* **The validation view** (`DERIVED` columns: lookups into validated users and items, recomputed time of day and
  day of week, masked columns, repeated-key occurrences) is built with Spark SQL: joins instead of hash lookups,
  `row_number()` over the repeated keys in the same order as the DuckDB pass (earliest `event_timestamp`, then
  file, then row), over every selected file at once (Spark bounds memory itself, so there are no chunks).
* **GX on Spark**: each row rule's failing rows come back as `unexpected_index_list` keyed by `_row` (a row's
  position in the concatenation of the selected files, the position the pandas engine uses), so quarantine
  reasons are built by the same `quarantine_mask` and are equal row for row. `_row` is the one extra column of the
  Spark view: the suites' `schema_columns` rule lists it too.
* **Outputs** are written by Spark in the same layout: `validated/` and `quarantine/` interactions per source
  `date=` partition (rows in source order), users and items as single Parquet files; quarantined rows carry
  `_reason`, `_source_file`, `_source_row`. `rows in = validated + quarantined` holds per table by construction
  and is reported.

What GX-on-Spark does differently, and how it is kept exact: GX's Spark engine cannot return row positions
(Spark rows have none), hence `_row`; the failing rows (up to the quarantine threshold, ~1%) are collected on the
driver, like the pandas engine's index lists. The one-row totals and per-day frames of the table rules are
small Spark DataFrames validated by the same suites.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feedstore.core import gx_fast
from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA
from feedstore.core.docs import run_record
from feedstore.core.errors import ConfigError, InputDataError
from feedstore.core.gx import TABLE, GXRunner, RuleOutcome, _jsonable, _notes
from feedstore.core.io import write_parquet
from feedstore.core.progress import Progress
from feedstore.ingestion.validate import expectations as ex
from feedstore.ingestion.validate.quarantine import TableResult, quarantine_mask
from feedstore.ingestion.validate.reading import Partition, discover_partitions, read_contract_table
from feedstore.ingestion.validate.run import ValidationSummary, _daily_frame, _finish_validation

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

ROW_ID = "_row"


def with_row_id(gx_suite: Any) -> Any:
    """The suite with `_row` added to its exact column set (the Spark view's one extra column)."""
    for e in gx_suite.expectations:
        if e.meta.get("rule") == "schema_columns":
            e.column_set = [*e.column_set, ROW_ID]
    return gx_suite


class SparkGXRunner(GXRunner):
    """The GX runtime of every gate, with a Spark datasource: row rules report failing rows by `_row`."""

    def __init__(self, docs_dir: Path | None = None, example_rows: int = 5, history: int = 20):
        super().__init__(docs_dir, example_rows, history)
        if not gx_fast.spark_available():
            raise ConfigError("Great Expectations was loaded without Spark support in this process (a DuckDB-engine "
                              "command ran in it first): validate on Spark in a process of its own")
        self.spark_source = self.context.data_sources.add_spark("feedstore_spark")
        self._spark_assets: dict[str, Any] = {}

    def validate_spark(self, df: DataFrame, expectation_suite: Any, asset_name: str, *,
                       example_columns: list[str] | None = None, run_name: str | None = None) -> list[RuleOutcome]:
        if expectation_suite.name not in self._suites:
            self._suites[expectation_suite.name] = self.context.suites.add(expectation_suite)
        gx_suite = self._suites[expectation_suite.name]
        if asset_name not in self._spark_assets:
            asset = self.spark_source.add_dataframe_asset(asset_name)
            self._spark_assets[asset_name] = asset.add_batch_definition_whole_dataframe("whole")
        batch = self._spark_assets[asset_name].get_batch(batch_parameters={"dataframe": df})
        outcomes = [self._spark_outcome(r) for r in self._results(batch, gx_suite, ROW_ID in df.columns)]
        self._examples(df, outcomes, example_columns)
        if self.docs is not None:
            notes = {e.meta["rule"]: _notes(e) for e in expectation_suite.expectations}
            rows = max([o.element_count or 0 for o in outcomes] or [0])
            self.docs.add(run_record(expectation_suite.name, run_name or expectation_suite.name, outcomes, notes,
                                     rows))
        return outcomes

    @staticmethod
    def _results(batch: Any, gx_suite: Any, row_ids: bool) -> list[Any]:
        """GX's result per expectation (in GX's order). With `_row` (row rules that report their failing rows):
        first every rule's counts (BASIC with no example values: GX's aggregate metrics run as one bundled Spark
        job and its value lists are LIMIT 0 queries that Spark answers without a job), then COMPLETE (the failing
        rows' `_row` list) only for the rules that counted unexpected rows. COMPLETE for every rule cost two Spark
        jobs per rule even where nothing failed (validating the tests' 15K clean events: 251 Spark jobs before, 72
        now). The outcomes are the same: a rule without unexpected rows has the same success, counts, percentages
        and observed value in both formats and an empty row list (checked rule for rule, with and without injected
        faults, and by tests/integration/test_engines.py against the pandas engine)."""
        complete: dict[str, Any] = {"result_format": "COMPLETE", "partial_unexpected_count": 5}
        if not row_ids:
            return list(batch.validate(gx_suite, result_format=complete).results)
        import great_expectations as gx

        results = list(batch.validate(gx_suite, result_format={"result_format": "BASIC",
                                                               "partial_unexpected_count": 0}).results)
        again = {_rule(r): i for i, r in enumerate(results) if (r.result or {}).get("unexpected_count")}
        if again:
            subset = gx.ExpectationSuite(name=f"{gx_suite.name}.failing_rows", expectations=[
                copy.copy(e) for e in gx_suite.expectations if e.meta["rule"] in again])
            complete["unexpected_index_column_names"] = [ROW_ID]
            rerun = batch.validate(subset, result_format=complete).results
            if sorted(map(_rule, rerun)) != sorted(again):
                raise RuntimeError(f"GX answered {sorted(map(_rule, rerun))} for {sorted(again)}")
            for r in rerun:  # GX's results do not keep the suite's order: matched by rule
                results[again[_rule(r)]] = r
        return results

    def _spark_outcome(self, r: Any) -> RuleOutcome:
        rows = [d[ROW_ID] for d in (r.result or {}).get("unexpected_index_list") or [] if isinstance(d, dict)]
        r.result = {k: v for k, v in (r.result or {}).items() if k != "unexpected_index_list"}
        out = self._outcome(r, pd.DataFrame(), None)  # the shared conversion; rows and examples are ours
        out.unexpected_rows = np.sort(np.asarray(rows, dtype=np.int64))
        return out

    def _examples(self, df: DataFrame, outcomes: list[RuleOutcome], columns: list[str] | None) -> None:
        """The first offending rows of each rule (by `_row`), fetched in one Spark query."""
        from pyspark.sql import functions as F

        wanted = sorted({int(r) for o in outcomes for r in o.unexpected_rows[: self.example_rows]})
        if not wanted:
            return
        cols = columns or [c for c in df.columns if c != ROW_ID]
        frame = df.where(F.col(ROW_ID).isin(wanted)).select(ROW_ID, *cols).toArrow().to_pandas()
        by_row = {int(r): rec for r, rec in zip(frame[ROW_ID], frame[cols].to_dict(orient="records"), strict=True)}
        for o in outcomes:
            o.examples = [_jsonable(by_row[int(r)]) for r in o.unexpected_rows[: self.example_rows]
                          if int(r) in by_row]


def _rule(result: Any) -> str:
    return result.expectation_config.meta["rule"]


@dataclass(frozen=True)
class _Files:
    """The selected interaction files in validation order, with each file's first `_row` and its day."""

    frame: pd.DataFrame  # _file (str path), _day, _offset
    total: int


def _files(parts: list[Partition]) -> _Files:
    paths, days, offsets = [], [], []
    offset = 0
    for p in parts:
        for f in p.files:
            paths.append(str(f))
            days.append(p.day)
            offsets.append(offset)
            offset += pq.ParquetFile(f).metadata.num_rows
    return _Files(pd.DataFrame({"_file": paths, "_day": days, "_offset": np.asarray(offsets, np.int64)}), offset)


def _read_with_rows(spark: SparkSession, paths: list[str], files: pd.DataFrame | None = None) -> DataFrame:
    """Parquet files with each row's source file (as given), row within it and `_row` (position in the
    concatenation of `paths`); the files' names are matched on the path Spark reports."""
    from pyspark.sql import functions as F

    files = files if files is not None else pd.DataFrame({"_file": paths, "_day": "", "_offset": np.zeros(
        len(paths), np.int64)})
    files = files.assign(_uri=files["_file"])
    lookup = spark.createDataFrame(files)
    local = F.regexp_replace(F.col("_metadata.file_path"), "^file:(//)?", "")  # Hadoop's `file:/abs/path`
    df = spark.read.parquet(*paths).select("*", local.alias("_uri"), F.col("_metadata.row_index").alias("_source_row"))
    df = df.join(F.broadcast(lookup), "_uri").drop("_uri")
    return (df.withColumn(ROW_ID, F.col("_offset") + F.col("_source_row")).drop("_offset")
            .withColumnRenamed("_file", "_source_file"))


def _gx_view(df: DataFrame, columns: list[str]) -> DataFrame:
    """`columns` of `df` as GX sees them: a float NaN as null (pandas counts NaN as missing, Spark does not; the
    outputs keep the raw value)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    floats = {f.name for f in df.schema if isinstance(f.dataType, (T.DoubleType, T.FloatType))}
    return df.select(*[F.when(~F.isnan(c), F.col(c)).alias(c) if c in floats else F.col(c) for c in columns])


def _occurrence(df: DataFrame, keys: list[str], order: list) -> Any:
    """1 for the first row of each repeated key (in `order`), 2, 3, ... for the repeats; 1 where a key is null."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    any_null = F.lit(False)
    for k in keys:
        any_null = any_null | F.col(k).isNull()
    rn = F.row_number().over(Window.partitionBy(*keys).orderBy(*order))
    return F.when(any_null, F.lit(1)).otherwise(rn).cast("bigint")


def _interactions_view(raw: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """Raw interactions + `DERIVED` (+ `_row` and the source columns, dropped before GX sees the view)."""
    from pyspark.sql import functions as F

    ts = F.col("event_timestamp")
    order = [ts.asc_nulls_last(), F.col("_source_file"), F.col("_source_row")]
    hour = F.hour(ts)
    u = users.select(F.col("user_id").alias("__u"), F.col("signup_date").alias("_signup_date"))
    i = items.select(F.col("item_id").alias("__i"), F.col("creation_date").alias("_creation_date"))
    click = F.col("click")
    view = (raw
            .withColumn("_id_occurrence", _occurrence(raw, ["interaction_id"], order))
            .withColumn("_impression_occurrence", _occurrence(raw, ["user_id", "item_id", "event_timestamp"], order))
            .join(F.broadcast(u), F.col("user_id") == F.col("__u"), "left")
            .join(F.broadcast(i), F.col("item_id") == F.col("__i"), "left")
            .withColumn("_user_known", F.when(F.col("user_id").isNotNull(), F.col("__u").isNotNull()))
            .withColumn("_item_known", F.when(F.col("item_id").isNotNull(), F.col("__i").isNotNull()))
            .drop("__u", "__i")
            .withColumn("_expected_time_of_day",
                        F.when(ts.isNull(), F.lit(None).cast("string")).when(hour < 5, "night")
                        .when(hour < 12, "morning").when(hour < 17, "afternoon").when(hour < 22, "evening")
                        .otherwise("night"))
            .withColumn("_expected_day_of_week", F.pmod(F.unix_date(F.to_date(ts)) + 3, F.lit(7)).cast("double"))
            .withColumn("_like_if_no_click", F.when(click == 0, F.col("like")))
            .withColumn("_share_if_no_click", F.when(click == 0, F.col("share")))
            .withColumn("_dwell_if_no_click", F.when(click == 0, F.col("dwell_time")))
            .withColumn("_dwell_if_click", F.when(click == 1, F.col("dwell_time"))))
    return view


def _write_single(frame: DataFrame, target: Path) -> None:
    """One Parquet file written by Spark (coalesced to one task), renamed to `target`."""
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
    frame.coalesce(1).write.mode("overwrite").option("compression", "zstd").parquet(str(tmp))
    part = next(tmp.glob("part-*.parquet"), None)
    target.parent.mkdir(parents=True, exist_ok=True)
    if part is None:  # no rows: Spark wrote no file
        pq.write_table(pa.table({f.name: pa.array([], spark_to_arrow(f.dataType)) for f in frame.schema}), target)
    else:
        os.replace(part, target)
    shutil.rmtree(tmp, ignore_errors=True)


def _write_days(frame: DataFrame, target: Path) -> None:
    """`date=D/` partitions (one file each, rows in source order), written by Spark; no _SUCCESS / .crc files."""
    (frame.repartition("date").sortWithinPartitions("date", ROW_ID).drop(ROW_ID)
     .write.mode("overwrite").partitionBy("date").option("compression", "zstd").parquet(str(target)))
    for side in [*target.rglob(".*.crc"), *target.rglob("_SUCCESS")]:
        side.unlink()


def spark_to_arrow(t) -> pa.DataType:
    from pyspark.sql.pandas.types import to_arrow_type

    return to_arrow_type(t)


def _reasons(spark: SparkSession, n: int, outcomes: list[RuleOutcome]) -> tuple[DataFrame, dict[str, int], int]:
    """(bad rows as a Spark frame of `_row`, `_reason`; rows per rule; bad-row count), by `quarantine_mask`."""
    bad, reasons, counts = quarantine_mask(n, outcomes)
    idx = np.flatnonzero(bad)
    table = pa.table({ROW_ID: pa.array(idx, pa.int64()), "_reason": pa.array(reasons.tolist(), pa.string())})
    return spark.createDataFrame(table.to_pandas(), f"{ROW_ID} BIGINT, _reason STRING"), counts, len(idx)


def _validate_entity(spark: SparkSession, runner: SparkGXRunner, name: str, path: Path, schema: pa.Schema,
                     key: str, gx_suite: Any, stage: Catalog) -> tuple[TableResult, DataFrame]:
    from pyspark.sql import functions as F

    table = read_contract_table(path, schema)  # the contract check (types, columns, empty), one-line errors
    n = table.num_rows
    df = _read_with_rows(spark, [str(path)])
    df = df.withColumn("_occurrence", _occurrence(df, [key], [F.col(ROW_ID)])).cache()
    view = _gx_view(df, [*schema.names, "_occurrence", ROW_ID])
    outcomes = runner.validate_spark(view, with_row_id(gx_suite), f"raw_{name}_spark",
                                     example_columns=schema.names, run_name=f"raw {name}")
    bad, counts, n_bad = _reasons(spark, n, outcomes)
    res = TableResult(name, gx_suite.name, rows_in=n, validated=n - n_bad, quarantined=n_bad, by_reason=counts)
    res.add(outcomes, n)
    res.finish()
    marked = df.join(F.broadcast(bad), ROW_ID, "left")
    clean = marked.where(F.col("_reason").isNull()).orderBy(ROW_ID).select(*schema.names)
    _write_single(clean, stage.validated_table(name))
    if n_bad:
        q = (marked.where(F.col("_reason").isNotNull()).orderBy(ROW_ID)
             .select(*schema.names, "_reason", "_source_file", "_source_row"))
        _write_single(q, stage.quarantined_table(name))
    df.unpersist()
    return res, spark.read.parquet(str(stage.validated_table(name)))


def _validate_interactions(spark: SparkSession, runner: SparkGXRunner, cfg: PipelineConfig,
                           parts: list[Partition], users: DataFrame, items: DataFrame, as_of: datetime,
                           stage: Catalog) -> TableResult:
    from pyspark.sql import functions as F

    files = _files(parts)
    n = files.total
    raw = _read_with_rows(spark, list(files.frame["_file"]), files.frame).withColumnRenamed("_day", "date")
    full = _interactions_view(raw, users, items).cache()
    columns = INTERACTIONS_SCHEMA.names
    gx_suite = ex.interactions_suite(cfg, as_of)
    view = _gx_view(full, [*columns, *ex.DERIVED, ROW_ID])
    outcomes = runner.validate_spark(view, with_row_id(gx_suite), "raw_interactions_spark",
                                     example_columns=columns,
                                     run_name=f"raw interactions {parts[0].day}..{parts[-1].day}")
    bad, counts, n_bad = _reasons(spark, n, outcomes)
    res = TableResult("interactions", gx_suite.name, rows_in=n, validated=n - n_bad, quarantined=n_bad,
                      by_reason=counts)
    res.add(outcomes, n)
    res.finish()

    marked = full.select(*columns, "date", ROW_ID, "_source_file", "_source_row").join(F.broadcast(bad), ROW_ID,
                                                                                       "left").cache()
    clean = marked.where(F.col("_reason").isNull())
    _write_days(clean.select(*columns, "date", ROW_ID), stage.validated_interactions)
    for p in parts:  # a day whose rows were all quarantined still gets its (empty) validated file, as on DuckDB
        empty = stage.validated_interactions / Catalog.partition(p.day)
        if not empty.exists():
            write_parquet(INTERACTIONS_SCHEMA.empty_table(), empty / "part-0.parquet")
    if n_bad:
        _write_days(marked.where(F.col("_reason").isNotNull())
                    .select(*columns, "_reason", "_source_file", "_source_row", "date", ROW_ID),
                    stage.quarantined_interactions)
    per_day = {r["date"]: (int(r["rows"]), int(r["clicks"] or 0), int(r["likes"] or 0)) for r in
               clean.groupBy("date").agg(F.count("*").alias("rows"), F.sum("click").alias("clicks"),
                                          F.sum("like").alias("likes")).collect()}
    marked.unpersist()
    full.unpersist()

    # totals and daily volumes of the validated rows: the same table rules, on (small) Spark frames
    validated = sum(d[0] for d in per_day.values())
    if validated != res.validated:  # every row Spark read was matched to its file: nothing lost on the way
        raise RuntimeError(f"Spark validated {validated:,} rows, expected {res.validated:,} of {n:,}")
    totals = pd.DataFrame({
        "validated_rows": [validated],
        "ctr": [sum(d[1] for d in per_day.values()) / validated if validated else float("nan")],
        "like_rate": [sum(d[2] for d in per_day.values()) / validated if validated else float("nan")],
        "duplicate_id_fraction": [res.by_reason.get("duplicate_interaction_id", 0) / max(res.rows_in, 1)],
    })
    for o in runner.validate_spark(_small(spark, totals), ex.interactions_totals_suite(cfg),
                                   "raw_interactions_totals_spark", run_name="raw interactions totals"):
        o.observed_value = totals.iloc[0][o.kwargs["column"]].item()
        res.outcomes[o.rule] = o
    daily = _daily_frame(cfg, per_day, [p.day for p in parts])
    for o in runner.validate_spark(_small(spark, daily), ex.interactions_daily_suite(cfg),
                                   "raw_interactions_daily_spark", run_name="raw interactions daily"):
        o.observed_value = {"failing_days": [e["day"] for e in o.examples]} if not o.success else "all days ok"
        res.outcomes[o.rule] = o
    res.extra["day_count"] = len(per_day)
    res.extra["totals"] = {k: totals.iloc[0][k].item() for k in totals.columns}
    return res


def _small(spark: SparkSession, frame: pd.DataFrame) -> DataFrame:
    """A small driver-side frame as a Spark DataFrame with `_row` (its position), for the table-rule suites."""
    table = pa.Table.from_pandas(frame.assign(**{ROW_ID: np.arange(len(frame), dtype=np.int64)}), preserve_index=False)
    return spark.createDataFrame(table)  # from Arrow: typed even when empty


def validate_events(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None,
                    as_of: datetime | None = None, raise_on_failure: bool = True) -> ValidationSummary:
    """Stage `validate` on Spark: the raw-data gate with the same suites, outputs and reports as the DuckDB
    engine; raise ValidationFailed if it fails."""
    from feedstore.core.spark import get_spark

    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir)
    cat = Catalog(data_dir)
    v = cfg.validation
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    parts = discover_partitions(cat.raw_interactions, start, end)  # the contract of every file, from footers
    total_rows = sum(p.rows for p in parts)
    if total_rows == 0:
        raise InputDataError(f"{cat.raw_interactions}: interactions are empty (0 rows in {len(parts)} files)")
    log.info("validating users, items and %s interactions in %d date partitions (%s..%s) with Great Expectations "
             "on Spark", f"{total_rows:,}", len(parts), parts[0].day, parts[-1].day)
    spark = get_spark(cfg.spark)

    version = cat.publication("validate").begin()
    stage = Catalog.staged(version.path)
    progress = Progress(3, "validate on Spark", unit="tables", logger=log)
    try:
        runner = SparkGXRunner(cat.data_docs, example_rows=v.example_rows, history=v.docs_history)
        progress.step = "users"
        users_res, users = _validate_entity(spark, runner, "users", cat.raw_users, USERS_SCHEMA, "user_id",
                                            ex.users_suite(cfg), stage)
        progress.update()
        progress.step = "items"
        items_res, items = _validate_entity(spark, runner, "items", cat.raw_items, ITEMS_SCHEMA, "item_id",
                                            ex.items_suite(cfg), stage)
        progress.update()
        progress.step = f"{total_rows:,} interactions"
        inter = _validate_interactions(spark, runner, cfg, parts, users, items, as_of, stage)
        progress.update()
        tables = {"users": users_res, "items": items_res, "interactions": inter}
    except BaseException:
        version.discard()
        raise
    finally:
        progress.close()
    return _finish_validation(version, runner, data_dir, tables, [p.day for p in parts], as_of, t0,
                              max_quarantine_fraction=v.max_quarantine_fraction, raise_on_failure=raise_on_failure,
                              engine=" on Spark")


__all__ = ["validate_events", "SparkGXRunner", "TABLE"]
