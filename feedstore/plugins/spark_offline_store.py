"""A Feast offline store whose point-in-time joins run on Apache Spark, with the DuckDB ASOF store's semantics.

Feast's own Spark offline store (feast.infra.offline_stores.contrib.spark_offline_store) is not safe as shipped
(measured with pyspark 4.3, Feast 0.67): its entity row id is CONCAT(keys, timestamp) without a separator, so
rows (user 1, item 12) and (user 11, item 2) at the same time get each other's values; two feature rows with the
same key and timestamp duplicate the entity row; its time filters compare naive timestamp strings read in the
session time zone (a non-UTC session drops rows); and it joins every feature row in [ts - ttl, ts] before
deduplicating. This store keeps Feast's SparkOfflineStore for everything else and replaces
`get_historical_features` with a union point-in-time join, per feature view:

    entity rows (keys, ts, row number) UNION feature rows (keys, ts, created, struct of features)
    -> per key, in order of (ts, feature rows before entity rows, created): last(struct, ignorenulls)
    -> keep the entity rows; null the struct if its ts is older than ts - ttl

so each entity row gets the latest feature row stamped at or before it (ties on the timestamp: the latest
created timestamp), exactly what feedstore.plugins.asof_duckdb.AsofDuckDBOfflineStore's ASOF joins return. All
timestamps are compared as integer microseconds since the epoch (instants), never as strings or in the session
time zone. Views are joined on the row number; the result is written by Spark, ordered by row number, to a
private temporary Parquet directory that the driver reads back batch by batch (never collected whole).

Semantics kept from the DuckDB store: projections (feature subsets, renamed views, join-key maps), field
mappings, `full_feature_names`, ttl (0 = unbounded), created-timestamp tie-break, on-demand views applied by the
retrieval job (its own `_apply_odfv`), `to_df` / `to_arrow` / `iter_batches(batch_rows, keep_feature_ts=...)` /
`persist`, FEATURE_TS_PREFIX columns, one output row per entity row in entity order, duplicates kept.

Sources: Feast `FileSource` Parquet (a file or a glob such as `<dir>/**/*.parquet` over hive `date=` dirs, read
recursively without partition columns, as DuckDB reads them), so feature_repo/ works unchanged with only
`offline_store.type` switched (`feast apply` accepts FileSource under this store: it validates sources with the
source's own `validate`, not the store's). Materialization of a FileSource by Feast's stock engine goes through
Feast's DuckDB (ibis) reader, since Feast's Spark store only pulls SparkSource; SparkSource views still go to
Feast's Spark code. feedstore's FastMaterializationEngine (`batch_engine`) instead picks the latest rows in Spark
(`latest_rows`) and writes them to Redis from the executors.

Entity rows: a pandas DataFrame, or a SQL string in the DuckDB dialect (the training-set builder passes DuckDB
SQL that reads Parquet with `read_parquet(...)`, which Spark SQL cannot run): the query runs in DuckDB once per
retrieval and is materialized to a temporary Parquet file (microsecond timestamps) that Spark reads; the entity
columns of the output come from that file, so they keep DuckDB's types. A Spark SQL string is not accepted.

Registered in feature_store.spark.yaml as
`offline_store: {type: feedstore.plugins.spark_offline_store.SparkPitOfflineStore}`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStore, SparkOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.on_demand_feature_view import OnDemandFeatureView
from pydantic import StrictInt, StrictStr

from feedstore.core import duck
from feedstore.core.contracts import FEATURE_TS_PREFIX
from feedstore.core.errors import EntityDataFrameError
from feedstore.core.spark import SparkConfig, get_spark
from feedstore.plugins.asof_duckdb import (
    _ROW,
    AsofRetrievalJob,
    _apply_odfv,
    _check_entity_columns,
    _entity_rows,
    _EntityRows,
    _q,
    _read_source,
    resolve_source_path,
)

log = logging.getLogger(__name__)

_GLOB = set("*?[{")
_EPOCH_NTZ = "TIMESTAMP_NTZ '1970-01-01 00:00:00'"


class SparkPitOfflineStoreConfig(SparkOfflineStoreConfig):
    """Feast's Spark offline store settings (`spark_conf`: extra Spark settings), plus how to start the session
    (feedstore.core.spark.SparkConfig's fields) and where retrievals keep their temporary Parquet."""

    type: StrictStr = "feedstore.plugins.spark_offline_store.SparkPitOfflineStore"
    master: StrictStr = "local[*]"
    driver_memory: StrictStr = "2g"
    executor_memory: StrictStr = "2g"
    shuffle_partitions: StrictInt = 8
    temp_directory: StrictStr | None = None
    """Parent of each retrieval's private temp dir (entity rows and the ordered result); default: system temp."""

    def spark_settings(self) -> SparkConfig:
        """The session's settings; a master left as an unset `${VAR}` (FEEDSTORE_SPARK_MASTER, which the feedstore
        CLI sets from the pipeline config) is SparkConfig's default, local[*]."""
        master = SparkConfig().master if "${" in self.master else self.master
        return SparkConfig(master=master, driver_memory=self.driver_memory,
                           executor_memory=self.executor_memory, shuffle_partitions=self.shuffle_partitions,
                           conf=dict(self.spark_conf or {}))


@dataclass(frozen=True)
class _ViewPlan:
    """One feature view projection: where its rows are and which columns it contributes."""

    name: str  # projection name (the feature-ts column suffix)
    path: str
    keys: list[tuple[str, str]]  # (source column, entity column)
    ts_column: str
    created_column: str | None
    features: list[tuple[str, str]]  # (source column, output name)
    ttl_micros: int  # 0 = unbounded


def _view_plan(fv, features: list[str], full_feature_names: bool) -> _ViewPlan:
    source = fv.batch_source
    if not isinstance(source, FileSource):
        raise TypeError(f"{fv.name}: SparkPitOfflineStore reads FileSource (Parquet) only, got "
                        f"{type(source).__name__}")
    reverse = {v: k for k, v in (source.field_mapping or {}).items()}  # feature/key name -> source column
    join_map = fv.projection.join_key_map or {}
    name = fv.projection.name_to_use()
    created = source.created_timestamp_column
    return _ViewPlan(
        name=name, path=resolve_source_path(source.path.removeprefix("file://")),
        keys=[(reverse.get(c.name, c.name), join_map.get(c.name, c.name)) for c in fv.entity_columns],
        ts_column=reverse.get(source.timestamp_field, source.timestamp_field),
        created_column=reverse.get(created, created) if created else None,
        features=[(reverse.get(f, f), f"{name}__{f}" if full_feature_names else f) for f in features],
        ttl_micros=fv.ttl // timedelta(microseconds=1) if fv.ttl else 0)


def _col(name: str):
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _micros(df, name: str):
    """A timestamp column as microseconds since the epoch (an instant; independent of the session time zone).
    Naive (TIMESTAMP_NTZ) values are UTC, as in the DuckDB store."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    kind = df.schema[name].dataType
    if isinstance(kind, TimestampType):
        return F.unix_micros(_col(name))
    if isinstance(kind, TimestampNTZType):
        return F.expr(f"timestampdiff(MICROSECOND, {_EPOCH_NTZ}, `{name.replace('`', '``')}`)")
    if isinstance(kind, DateType):
        return F.expr(f"timestampdiff(MICROSECOND, {_EPOCH_NTZ}, CAST(`{name.replace('`', '``')}` AS TIMESTAMP_NTZ))")
    raise TypeError(f"column {name!r} is {kind.simpleString()}, not a timestamp")


def _read_parquet(spark, path: str):
    """A FileSource path as Spark reads it: a file, a directory, or a glob; `<base>/**/<leaf pattern>` is read
    recursively from <base> without partition columns (as DuckDB's hive_partitioning = false)."""
    reader = spark.read.option("mergeSchema", "true")
    if path.startswith("file://"):
        path = path[len("file://"):]
    parts = Path(path).parts
    first_glob = next((i for i, p in enumerate(parts) if _GLOB & set(p)), None)
    if first_glob is None:
        return reader.parquet(path)
    if parts[first_glob] == "**" and first_glob == len(parts) - 2:
        base = str(Path(*parts[:first_glob]))
        return reader.option("recursiveFileLookup", "true").option("pathGlobFilter", parts[-1]).parquet(base)
    return reader.parquet(path)  # Hadoop glob


def _join_view(spark, entity, plan: _ViewPlan, span: tuple[int, int] | None, prefix: str):
    """The point-in-time join of one view: per entity row (_ROW), the view's output columns named
    `<prefix><i>` for feature i, and `<prefix>ts` (microseconds of the matched feature row; null if none)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    src = _read_parquet(spark, plan.path)
    missing = [c for c in [k for k, _ in plan.keys] + [plan.ts_column] + [f for f, _ in plan.features]
               if c not in src.columns]
    if missing:
        raise ValueError(f"{plan.name}: source {plan.path} has no column(s) {missing}")
    key_names = [f"__k{i}" for i in range(len(plan.keys))]
    value = F.struct(F.col("__ts").alias("ts"),
                     *[_col(f).alias(f"f{i}") for i, (f, _) in enumerate(plan.features)])
    feat = src.select(
        *[_col(s).cast(entity.schema[e].dataType).alias(k) for (s, e), k in zip(plan.keys, key_names, strict=True)],
        _micros(src, plan.ts_column).alias("__ts"),
        (_micros(src, plan.created_column) if plan.created_column else F.lit(None).cast(LongType())).alias("__created"),
        *[_col(f) for f, _ in dict.fromkeys(plan.features)],
    )
    feat = feat.where(" AND ".join([f"{k} IS NOT NULL" for k in key_names] + ["__ts IS NOT NULL"]))
    if span is not None:  # only rows the entity rows can pick: stamped <= newest, and >= oldest - ttl
        feat = feat.where(F.col("__ts") <= F.lit(span[1]))
        if plan.ttl_micros:
            feat = feat.where(F.col("__ts") >= F.lit(span[0] - plan.ttl_micros))
    feat = feat.select(*key_names, "__ts", "__created", F.lit(None).cast(LongType()).alias(_ROW),
                       F.lit(0).alias("__e"), value.alias("__v"))
    ent = entity.select(*[F.col(e).alias(k) for (_, e), k in zip(plan.keys, key_names, strict=True)],
                        F.col("__ets").alias("__ts"), F.lit(None).cast(LongType()).alias("__created"),
                        F.col(_ROW), F.lit(1).alias("__e"), F.lit(None).cast(feat.schema["__v"].dataType).alias("__v"))
    # feature rows sort before entity rows at equal ts (a row stamped at ts is visible at ts); among feature rows
    # of one (key, ts), the latest created comes last and wins
    window = (Window.partitionBy(*key_names).orderBy("__ts", "__e", F.col("__created").asc_nulls_first())
              .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    joined = feat.unionByName(ent).select(_ROW, "__e", "__ts", F.last("__v", ignorenulls=True).over(window).alias("m"))
    joined = joined.where(F.col("__e") == 1)
    fresh = F.col("m.ts").isNotNull()
    if plan.ttl_micros:
        fresh = fresh & (F.col("m.ts") >= F.col("__ts") - F.lit(plan.ttl_micros))
    return joined.select(
        _ROW, *[F.when(fresh, F.col(f"m.f{i}")).alias(f"{prefix}{i}") for i in range(len(plan.features))],
        F.when(fresh, F.col("m.ts")).alias(f"{prefix}ts"))


def latest_rows(spark, fv, start: datetime, end: datetime):
    """Materialization's rows in Spark: (the latest row per entity of the view's FileSource with start <= timestamp
    <= end, the candidate rows before the pick), as the duckdb store and Feast's materialization select them:
    per entity, the newest event timestamp, ties to the newest created timestamp (nulls last). The columns are
    the join keys, the features, the timestamp and the created timestamp. Bounds are instants (aware datetimes
    against Spark timestamps in the UTC session), so Spark can prune Parquet row groups by their statistics."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    source = fv.batch_source
    if not isinstance(source, FileSource):
        raise TypeError(f"{fv.name}: materialization on Spark reads FileSource (Parquet) only")
    keys = [c.name for c in fv.entity_columns]
    ts, created = source.timestamp_field, source.created_timestamp_column or None
    columns = [*keys, *[f.name for f in fv.features], ts] + ([created] if created and created != ts else [])
    src = _read_parquet(spark, resolve_source_path(source.path.removeprefix("file://")))
    missing = [c for c in columns if c not in src.columns]
    if missing:
        raise ValueError(f"{fv.name}: source {source.path} has no column(s) {missing}")
    candidates = src.select(*[_col(c) for c in columns]).where(
        (_col(ts) >= F.lit(start)) & (_col(ts) <= F.lit(end)))
    order = [_col(ts).desc_nulls_last()] + ([_col(created).desc_nulls_last()] if created else [])
    pick = Window.partitionBy(*[_col(k) for k in keys]).orderBy(*order)
    rows = (candidates.withColumn("__rank", F.row_number().over(pick)).where(F.col("__rank") == 1)
            .drop("__rank"))
    return rows, candidates


def _rechunk(batches: Iterable[pa.RecordBatch | pa.Table], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows (the last one shorter) from a stream of batches, in order."""
    pending: list[pa.Table] = []
    have = 0
    for batch in batches:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        pending.append(table)
        have += table.num_rows
        while have >= rows:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, rows)
            rest = whole.slice(rows)
            pending, have = [rest], rest.num_rows
    if have:
        yield pa.concat_tables(pending)


def _parquet_batches(paths: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    for path in paths:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)


def _as_duckdb_returns(table: pa.Table) -> pa.Table:
    """The DuckDB store's output types: tz-aware timestamps in UTC (Spark tags them with its session time zone,
    pandas input keeps its own), every field nullable (Parquet written by DuckDB marks NOT NULL columns), no
    pandas metadata."""
    fields = [pa.field(f.name, pa.timestamp(f.type.unit, tz="UTC")
                       if pa.types.is_timestamp(f.type) and f.type.tz is not None else f.type)
              for f in table.schema]
    schema = pa.schema(fields)
    return table.replace_schema_metadata(None) if schema.equals(table.schema) else table.cast(schema)


class SparkPitRetrievalJob(RetrievalJob):
    """Runs the Spark point-in-time join on demand, whole (`to_arrow`) or streamed in entity order
    (`iter_batches`, `persist`); applies on-demand views column-wise (as AsofRetrievalJob does)."""

    def __init__(self, store_config: SparkPitOfflineStoreConfig, views: list[_ViewPlan], entity: _EntityRows,
                 odfvs: list, full_feature_names: bool, feature_refs: list[str]):
        self._store_config = store_config
        self._views = views
        self._entity = entity
        self._odfvs = odfvs
        self._full = full_feature_names
        self._feature_refs = feature_refs
        self._metadata: RetrievalMetadata | None = None

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self) -> list:
        return self._odfvs

    #: Computed when first asked for (for SQL entity rows: one more scan of the query), as the ASOF job does.
    metadata = AsofRetrievalJob.metadata

    # ------------------------------------------------------------------------------------------ the join

    @contextmanager
    def _run(self, batch_rows: int) -> Iterator[Iterator[pa.Table]]:
        """Run the join; yield the result in entity order as tables of `batch_rows` rows: the entity columns,
        `_ROW`, each view's features and its FEATURE_TS_PREFIX column (no on-demand views yet)."""
        work = tempfile.mkdtemp(prefix="feedstore-spark-", dir=self._store_config.temp_directory)
        try:
            keys_path, full_paths, n, span = self._stage_entities(work)
            spark = get_spark(self._store_config.spark_settings())
            out = os.path.join(work, "result")
            self._spark_join(spark, keys_path, span, out)
            parts = sorted(str(p) for p in Path(out).glob("part-*.parquet"))
            features = _rechunk(_parquet_batches(parts, batch_rows), batch_rows)
            if self._entity.table is not None:
                entity = _rechunk(self._entity.table.to_batches(max_chunksize=batch_rows), batch_rows)
                empty = self._entity.table.schema.empty_table()
            else:
                entity = _rechunk(_parquet_batches(full_paths, batch_rows), batch_rows)
                empty = pq.read_schema(full_paths[0]).empty_table()
            # no entity rows: one empty table with the result's columns
            empty_result = (empty, pq.read_schema(parts[0]).empty_table()) if n == 0 and parts else None
            yield self._assemble(entity, features, n, empty_result)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _stage_entities(self, work: str) -> tuple[str, list[str], int, tuple[int, int] | None]:
        """Write the entity rows Spark needs (join keys, timestamp, row number) to Parquet; for SQL entity rows
        also every column (read back for the output). Returns (keys file, full files, rows, (min, max) micros)."""
        keys = list(dict.fromkeys(e for v in self._views for _, e in v.keys))
        ts = self._entity.ts_col
        keys_path = os.path.join(work, "entity_keys.parquet")
        if self._entity.table is not None:
            table = self._entity.table
            narrow = table.select([*keys, ts, _ROW])
            pq.write_table(narrow, keys_path, coerce_timestamps="us", allow_truncated_timestamps=False)
            micros = table.column(ts).cast(pa.int64())
            n = table.num_rows
            span = (int(pa.compute.min(micros).as_py()), int(pa.compute.max(micros).as_py())) if n else None
            return keys_path, [], n, span
        full_path = os.path.join(work, "entity_rows.parquet")
        con = duck.connect()
        try:
            # a table created from the query keeps its order (insertion order): rowid numbers the rows in order
            con.execute(f"CREATE TEMP TABLE entity_source AS {self._entity.sql}")
            con.execute(f"CREATE TEMP VIEW entity_rows AS SELECT * REPLACE (CAST({_q(ts)} AS TIMESTAMPTZ) AS "
                        f"{_q(ts)}), rowid AS {_q(_ROW)} FROM entity_source")
            con.execute(f"COPY (SELECT * FROM entity_rows ORDER BY {_q(_ROW)}) TO '{full_path}' (FORMAT parquet)")
            cols = ", ".join(_q(c) for c in [*keys, ts, _ROW])
            con.execute(f"COPY (SELECT {cols} FROM entity_rows) TO '{keys_path}' (FORMAT parquet)")
            n, lo, hi = con.execute(f"SELECT count(*), epoch_us(min({_q(ts)})), epoch_us(max({_q(ts)})) "
                                    "FROM entity_rows").fetchall()[0]
        finally:
            con.close()
        return keys_path, [full_path], n, (lo, hi) if n else None

    def _spark_join(self, spark, keys_path: str, span: tuple[int, int] | None, out: str) -> None:
        from pyspark.sql import functions as F

        entity = spark.read.parquet(keys_path)
        entity = entity.withColumn("__ets", _micros(entity, self._entity.ts_col))
        result = entity.select(_ROW)
        for k, plan in enumerate(self._views):
            result = result.join(_join_view(spark, entity, plan, span, f"v{k}_"), _ROW, "left")
        result = result.orderBy(F.col(_ROW))
        result.write.mode("overwrite").parquet(out)

    def _output_names(self) -> dict[str, str]:
        """Spark result column -> output column."""
        names: dict[str, str] = {}
        for k, plan in enumerate(self._views):
            for i, (_, out) in enumerate(plan.features):
                names[f"v{k}_{i}"] = out
            names[f"v{k}_ts"] = FEATURE_TS_PREFIX + plan.name
        return names

    def _assemble(self, entity: Iterator[pa.Table], features: Iterator[pa.Table], n: int,
                  empty: tuple[pa.Table, pa.Table] | None) -> Iterator[pa.Table]:
        """Entity rows and Spark's feature columns side by side, after checking both are the same rows."""
        names = self._output_names()
        start = 0
        for rows, feats in zip(entity, features, strict=False):
            if rows.num_rows != feats.num_rows or not np.array_equal(
                    feats.column(_ROW).to_numpy(), np.arange(start, start + rows.num_rows)):
                raise RuntimeError("Spark point-in-time join lost or duplicated entity rows (row numbers differ)")
            start += rows.num_rows
            yield self._combine(rows, feats, names)
        if start != n:
            raise RuntimeError(f"Spark point-in-time join returned {start} rows for {n} entity rows")
        if empty is not None:
            yield self._combine(*empty, names)

    @staticmethod
    def _combine(rows: pa.Table, feats: pa.Table, names: dict[str, str]) -> pa.Table:
        for col in feats.column_names:
            if col == _ROW:
                continue
            values = feats.column(col)
            if names[col].startswith(FEATURE_TS_PREFIX):  # microseconds since the epoch -> UTC timestamps
                values = values.cast(pa.timestamp("us", tz="UTC"))
            rows = rows.append_column(names[col], values)
        return _as_duckdb_returns(rows)

    # ------------------------------------------------------------------------------------------ Feast's API

    def _finish(self, table: pa.Table, keep_feature_ts: bool) -> pa.Table:
        """Drop _ROW (and the FEATURE_TS columns unless kept); apply the on-demand views with the ASOF store's
        own `_apply_odfv` (its `udf_input` conversions), so both stores feed the UDFs the same inputs."""
        drop = [_ROW] + ([] if keep_feature_ts else [c for c in table.column_names if c.startswith(FEATURE_TS_PREFIX)])
        table = table.drop_columns(drop)
        for odfv in self._odfvs:
            table = _apply_odfv(odfv, table, self._full)
        return table

    def iter_batches(self, batch_rows: int = 250_000, *, keep_feature_ts: bool = False) -> Iterator[pa.Table]:
        """The result in entity order, `batch_rows` rows at a time (the last batch may be shorter), on-demand views
        applied. Spark runs the whole join once and writes it ordered to temporary Parquet; the batches are read
        from there one at a time, so the driver holds one batch (plus, for DataFrame entity rows, the rows)."""
        with self._run(batch_rows) as tables:
            for table in tables:
                yield self._finish(table, keep_feature_ts)

    def _whole(self) -> pa.Table:
        with self._run(1 << 62) as tables:
            return pa.concat_tables(list(tables))

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        """The joined features without on-demand views (Feast's base class applies them on this)."""
        table = self._whole()
        return table.drop_columns([c for c in table.column_names if c == _ROW or c.startswith(FEATURE_TS_PREFIX)])

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def to_arrow(self, validation_reference: Any = None, timeout: int | None = None) -> pa.Table:
        if validation_reference is not None:
            raise NotImplementedError("validation_reference is not supported; validate with the GX suites")
        return self._finish(self._whole(), keep_feature_ts=False)

    def to_df(self, validation_reference: Any = None, timeout: int | None = None) -> pd.DataFrame:
        return self.to_arrow(validation_reference, timeout).to_pandas().reset_index(drop=True)

    #: Streams iter_batches into one Parquet file, written aside and renamed (the DuckDB store's own code).
    persist = AsofRetrievalJob.persist

    def to_sql(self) -> str:
        raise NotImplementedError("the Spark point-in-time join is a DataFrame plan, not one SQL string")


class SparkPitOfflineStore(SparkOfflineStore):
    """Feast's Spark offline store with a correct point-in-time join (see the module docstring)."""

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names: bool = False, filter_by_created_timestamp: bool = False,
                                **kwargs):
        store = config.offline_store
        if not isinstance(store, SparkPitOfflineStoreConfig):
            raise TypeError(f"offline_store is {type(store).__name__}, expected SparkPitOfflineStoreConfig")
        if entity_df is None:
            raise EntityDataFrameError("SparkPitOfflineStore needs entity rows (a DataFrame or DuckDB SQL)")
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        entity = _entity_rows(entity_df)
        _check_entity_columns(entity.columns, feature_views, odfvs)
        by_view: dict[str, list[str]] = {}
        for ref in feature_refs:
            view, feature = ref.split(":", 1)
            by_view.setdefault(view, []).append(feature)
        views = [_view_plan(fv, by_view[fv.projection.name_to_use()], full_feature_names) for fv in feature_views
                 if by_view.get(fv.projection.name_to_use())]
        return SparkPitRetrievalJob(store, views, entity, odfvs, full_feature_names, feature_refs)

    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                        timestamp_field, created_timestamp_column, start_date, end_date):
        """Materialization: FileSource through Feast's DuckDB (ibis) reader; SparkSource through Feast's Spark."""
        if not isinstance(data_source, FileSource):
            return SparkOfflineStore.pull_latest_from_table_or_query(
                config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                created_timestamp_column, start_date, end_date)
        from feast.infra.offline_stores.duckdb import _write_data_source
        from feast.infra.offline_stores.ibis import pull_latest_from_table_or_query_ibis

        return pull_latest_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date, end_date=end_date,
            data_source_reader=_read_source, data_source_writer=_write_data_source)

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                     timestamp_field, created_timestamp_column=None, start_date=None, end_date=None):
        if not isinstance(data_source, FileSource):
            return SparkOfflineStore.pull_all_from_table_or_query(
                config, data_source, join_key_columns, feature_name_columns, timestamp_field,
                created_timestamp_column, start_date, end_date)
        from feast.infra.offline_stores.duckdb import _write_data_source
        from feast.infra.offline_stores.ibis import pull_all_from_table_or_query_ibis

        return pull_all_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date, end_date=end_date,
            data_source_reader=_read_source, data_source_writer=_write_data_source)


__all__ = ["SparkPitOfflineStore", "SparkPitOfflineStoreConfig", "SparkPitRetrievalJob", "latest_rows"]
