"""Timestamped statistics compiled from the feature spec to Apache Spark (`engine: spark`).

The same contract, rows and values as `compute.py` (the DuckDB + numpy engine; its docstring has the row rules),
computed as Spark DataFrames so the work spreads over a cluster:

1. **Tiles**: the spec's per-(entity, day) integer sums (`Tile.sql`, the same SQL) over validated interactions
   joined with the item's category, as one `groupBy(key, day)`.
2. **Row days** (change-point views): every day an entity is active, every day an active day leaves each
   window (day + w for every window length w of the spec), the entity's first row (its birth, or the pipeline's
   first day for entities that existed before it), and heartbeats (day numbers divisible by `heartbeat_days`,
   once the entity exists); kept in [start, end] and never before the entity exists.
3. **Windows**: activity days and row days on one timeline per entity; each w-day window is a range sum over
   days (`RANGE BETWEEN w - 1 PRECEDING AND CURRENT ROW`), lifetime a running sum. All sums are integers
   (LongType), so they are exact and equal to the sweep's whatever the order Spark adds them in.
4. **Derived features** (means, smoothed rates, ln(1 + x), distributions) are computed from those integer sums
   in the Python workers on Arrow batches (`mapInArrow`) by `compute._feature_columns`, the very function the
   DuckDB engine calls: same numpy formulas, same libm, so the floats are bit-identical (the JVM's `log1p` can
   differ from numpy's by one ulp, so no float is computed in the JVM).
5. **Active-days views**: a running lifetime sum per key over its active days, in Spark SQL (counts only).

Each view is written by Spark as `<view>/date=YYYY-MM-DD/` (one file per day, rows sorted by key) into the same
staging folder layout, with microsecond UTC timestamps and the contract's column order and types (checked on
every written file), and returned as the same `StagedStats`: the runner's gate and publish path do not change.
Publishing appends the rewritten days to the change log materialization reads, like the DuckDB engine. Spark does
not keep the DuckDB engine's tiles and lifetime state (`incremental.py`): publishing drops them, so a later DuckDB
run can never update from a state that no longer matches the offline tables; it rebuilds them once from the events.
On a cluster, the data dir must be a path every executor sees (a shared filesystem), and the executors need
feedstore installed (they run the feature formulas).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import DAY_US, TIMESTAMP, offline_schema
from feedstore.core.errors import InputDataError
from feedstore.core.progress import Progress
from feedstore.core.spec import FEATURE_SPEC, FeatureSpec, ViewSpec
from feedstore.ingestion.stats.compute import (
    EPOCH,
    StagedStats,
    _check_written,
    _feature_columns,
    _Snapshot,
    _tile_sums,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def spark_sql(sql: str) -> str:
    """A spec SQL expression in Spark's dialect: double-quoted identifiers become back-quoted ones (the rest of
    the spec's SQL, CAST / round / CASE, means the same in both engines)."""
    return re.sub(r'"([A-Za-z_][A-Za-z0-9_]*)"', r"`\1`", sql)


def spark_type(t: pa.DataType):
    """The Spark type of an offline-table Arrow type."""
    from pyspark.sql import types as T

    if pa.types.is_list(t):
        return T.ArrayType(spark_type(t.value_type), True)
    return {pa.int64(): T.LongType(), pa.int32(): T.IntegerType(), pa.float64(): T.DoubleType(),
            pa.float32(): T.FloatType(), TIMESTAMP: T.TimestampType(), pa.string(): T.StringType()}[t]


def _struct(schema: pa.Schema):
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f.name, spark_type(f.type), True) for f in schema])


def _tile_columns(view: ViewSpec, categories: int) -> tuple[list, list[str], int]:
    """Spark aggregate columns of the view's tiles, in `compute._tile_sums` order (plain, then per category)."""
    from pyspark.sql import functions as F

    _, names, narrow = _tile_sums(view, categories)
    exprs = [F.expr(f"CAST(sum({spark_sql(t.sql)}) AS BIGINT)") for t in view.tiles if not t.per_category]
    for t in (t for t in view.tiles if t.per_category):
        exprs += [F.expr(f"CAST(sum(({spark_sql(t.sql)}) * CAST(category = {k} AS INT)) AS BIGINT)")
                  for k in range(categories)]
    return [e.alias(n) for e, n in zip(exprs, names, strict=True)], names, narrow


def _window_columns(view: ViewSpec, names: list[str], narrow: int) -> dict[int | None, list[str]]:
    """The sums each window keeps (as in the sweep): every window the plain tiles, distribution windows also the
    per-category tiles."""
    wide = {f.window for f in view.distributions()}
    return {w: names if w in wide else names[:narrow] for w in [None, *view.window_shifts]}


def feature_batches(batches: Iterator[pa.RecordBatch], view: ViewSpec, names: list[str],
                    windows: dict[int | None, list[str]], categories: int,
                    schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """`mapInArrow` body: rows of (key, day, window sums, attributes, date) -> rows of the offline table (+ date),
    the derived features computed by the DuckDB engine's own function on numpy arrays."""
    index = {n: i for i, n in enumerate(names)}
    key = view.keys[0]
    for b in batches:
        day = b.column("__day").to_numpy(zero_copy_only=False).astype(np.int64)
        sums = {w: np.stack([b.column(f"{n}__{view.window_label(w)}").to_numpy(zero_copy_only=False).astype(np.int64)
                             for n in cols]).reshape(len(cols), b.num_rows) for w, cols in windows.items()}
        features = _feature_columns(view, _Snapshot(0, day, sums), index, categories)
        out = {key: b.column(key), "event_timestamp": pa.array((day + 1) * DAY_US, TIMESTAMP), **features,
               **{a.name: b.column(a.name) for a in view.attributes}, "date": b.column("date")}
        yield pa.RecordBatch.from_pydict(out, schema=schema)


def _date_column(day_col: str):
    from pyspark.sql import functions as F

    return F.date_format(F.date_from_unix_date(F.col(day_col)), "yyyy-MM-dd")


def _change_points(spark: SparkSession, ev: DataFrame, entity_table: Path, view: ViewSpec, lo: int, hi: int,
                   origin_day: int, categories: int) -> DataFrame:
    """A change-point view's rows for days lo..hi (day numbers since 1970-01-01), as the offline table + `date`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    key = view.keys[0]
    born = view.born()
    attrs = [(F.date_trunc("second", F.col(a.column)) if a.transform == "second" else F.col(a.column)).alias(a.name)
             for a in view.attributes]
    ent = spark.read.parquet(str(entity_table)).select(
        key, F.unix_date(F.to_date(F.col(born.column))).alias("__birth"), *attrs)
    aggs, names, narrow = _tile_columns(view, categories)
    tiles = (ev.groupBy(key, F.col("__d").alias("__day")).agg(*aggs)
             .join(ent.select(key), key, "left_semi"))  # entities of the entity table only, as in the sweep

    # the days each entity gets a row (every rule of the row policy), then never before the entity exists
    shifts = view.window_shifts
    moved = tiles.select(key, F.explode(F.array(F.col("__day"), *[F.col("__day") + w for w in shifts]))
                         .alias("__day"))
    first = ent.select(key, F.greatest(F.col("__birth"), F.lit(origin_day)).alias("__day"))
    beats = [d for d in range(lo, hi + 1) if d % view.heartbeat_days == 0]  # anchored on 1970-01-01
    heart = (ent.select(key, "__birth")
             .join(F.broadcast(spark.createDataFrame([(d,) for d in beats], "__day INT")),
                   F.col("__birth") <= F.col("__day"))
             .select(key, "__day")) if beats else None
    days = moved.unionByName(first)
    if heart is not None:
        days = days.unionByName(heart)
    days = (days.where(F.col("__day").between(lo, hi)).distinct()
            .join(ent.select(key, "__birth"), key).where(F.col("__day") >= F.col("__birth"))
            .select(key, "__day", F.lit(True).alias("__row")))

    # one timeline per entity (activity days and row days); windows are range sums over day numbers
    windows = _window_columns(view, names, narrow)
    timeline = tiles.join(days, [key, "__day"], "full").na.fill(0, subset=names)
    order = Window.partitionBy(key).orderBy("__day")
    frames = {w: order.rowsBetween(Window.unboundedPreceding, Window.currentRow) if w is None
              else order.rangeBetween(-(w - 1), Window.currentRow) for w in windows}
    summed = timeline.select(key, "__day", "__row",
                             *[F.sum(n).over(frames[w]).cast("bigint").alias(f"{n}__{view.window_label(w)}")
                               for w, cols in windows.items() for n in cols])
    rows = (summed.where(F.col("__row")).drop("__row")
            .join(ent.drop("__birth"), key)
            .withColumn("date", _date_column("__day")))

    schema = offline_schema(view).append(pa.field("date", pa.string()))
    body = partial(feature_batches, view=view, names=names, windows=windows, categories=categories, schema=schema)
    return rows.mapInArrow(body, _struct(schema))


def _active_days(ev: DataFrame, view: ViewSpec, lo: int, hi: int) -> DataFrame:
    """An active-days view: the running lifetime sums of each key on each day it was active."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if any(f.kind != "count" for f in view.features):
        raise NotImplementedError(f"{view.name}: active-days views support count features only")
    keys = list(view.keys)
    tiles = ev.groupBy(*keys, F.col("__d").alias("__day")).agg(
        *[F.expr(f"CAST(sum({spark_sql(t.sql)}) AS BIGINT)").alias(t.name) for t in view.tiles])
    running = Window.partitionBy(*keys).orderBy("__day").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    out = tiles.select(*keys, "__day", *[F.sum(f.of).over(running).cast("bigint").alias(view.column_name(f, None))
                                         for f in view.features])
    return (out.where(F.col("__day").between(lo, hi))
            .select(*keys, F.timestamp_micros((F.col("__day") + 1).cast("bigint") * DAY_US).alias("event_timestamp"),
                    *[view.column_name(f, None) for f in view.features], _date_column("__day").alias("date")))


@dataclass
class SparkStagedStats(StagedStats):
    """`StagedStats` of a Spark run: publishing also drops the DuckDB engine's stored tiles (no staged tiles for any
    view) and then its lifetime states (and base snapshots), which Spark does not maintain."""

    def publish(self) -> None:
        super().publish()
        for view in self.views:
            Catalog(self.data_dir).tile_state(view).unlink(missing_ok=True)
            shutil.rmtree(Catalog(self.data_dir).tile_bases(view), ignore_errors=True)


def _write(frame: DataFrame, view: ViewSpec, out: Path) -> None:
    """One Parquet file per day partition, rows sorted by key; no Hadoop side files (_SUCCESS, .crc)."""
    (frame.repartition("date").sortWithinPartitions("date", *view.keys)
     .write.mode("overwrite").partitionBy("date").option("compression", "zstd").parquet(str(out)))
    for side in [*out.rglob(".*.crc"), *out.rglob("_SUCCESS")]:
        side.unlink()


def compute_stats(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None,
                  spec: FeatureSpec = FEATURE_SPEC) -> StagedStats:
    """Stage `stats` on Spark: every view of `spec` for snapshot days [start, end] (default: the validated data's
    days), staged for the gate exactly like the DuckDB engine; the caller publishes."""
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    from feedstore.core.spark import get_spark

    t0 = time.perf_counter()
    cat = Catalog(cfg.data_dir)
    inter = cat.source(spec.source)
    for p in (inter, cat.validated_users, cat.validated_items):
        if not p.exists():
            raise InputDataError(f"{p}: not found (run `feedstore validate` first)")
    spark = get_spark(cfg.spark)
    n_cat = cfg.generation.preferences.categories
    try:
        events = spark.read.parquet(str(inter / "*" / "*.parquet"))
        first, last = events.select(F.min(F.to_date("event_timestamp")), F.max(F.to_date("event_timestamp"))).first()
    except PySparkException as e:
        raise InputDataError(f"{inter}: cannot read validated interactions ({str(e).strip().splitlines()[0]})") \
            from None
    if first is None:
        raise InputDataError(f"{inter}: no validated interactions")
    lo, hi = start or first, end or last
    if hi < lo:
        raise InputDataError(f"snapshot range is empty: end {hi} is before start {lo}")
    lo_n, hi_n = (lo - EPOCH).days, (hi - EPOCH).days
    origin_day = (cfg.generation.start - EPOCH).days
    tables = {"users": cat.validated_users, "items": cat.validated_items}

    # the events every tile reads: validated interactions through day `hi`, with the item's category and day number
    items = spark.read.parquet(str(cat.validated_items)).select("item_id", F.col("category").cast("int"))
    ev = (events.drop("interaction_id", "date").join(items, "item_id")
          .withColumn("__d", F.unix_date(F.to_date("event_timestamp"))).drop("event_timestamp")
          .where(F.col("__d") <= hi_n)).persist()

    # a new version of offline/ (feedstore.core.io.Publication), as on DuckDB: the gate reads it, publish() carries
    # the other days over and switches offline/ to it in one atomic step; nothing is staged under offline/ itself
    version = cat.publication("stats").begin()
    staged = Catalog.staged(version.path)
    stage = staged.offline
    stage.mkdir()
    rows: dict[str, int] = {}
    progress = Progress(len(spec.views), "stats on Spark", unit="views", logger=log)
    try:
        for view in spec.views:
            progress.step = view.name
            if view.rows == "change_points":
                frame = _change_points(spark, ev, tables[view.entity_table], view, lo_n, hi_n, origin_day, n_cat)
            else:
                frame = _active_days(ev, view, lo_n, hi_n)
            _write(frame, view, staged.view(view.name))
            rows[view.name] = _check_written(staged.view(view.name), offline_schema(view))
            progress.update()
        days = [(lo + timedelta(days=i)).isoformat() for i in range((hi - lo).days + 1)]
    except BaseException:
        version.discard()
        raise
    finally:
        progress.close()
        ev.unpersist()
    seconds = time.perf_counter() - t0
    log.info("stats computed on Spark (%s) for %d snapshot days (%s..%s) in %.2f s: %s", spark.sparkContext.master,
             len(days), lo, hi, seconds, ", ".join(f"{v.name} {rows.get(v.name, 0):,} rows" for v in spec.views))
    return SparkStagedStats(stage, cat.offline, days, rows, seconds, [v.name for v in spec.views], cat.root,
                            {v.name: None for v in spec.views}, version,
                            late_from=days[0])  # a full recompute may change any day
