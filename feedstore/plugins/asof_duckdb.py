"""A Feast offline store whose point-in-time joins are DuckDB ASOF joins.

Feast's stock `duckdb` store joins every earlier feature row of an entity and then deduplicates, so its cost grows
with the length of history (bench/RESULTS.md compares them); its `file` (dask)
store is slower still and drops entity rows that share keys and timestamp (Feast issue #6787). This store keeps
the `duckdb` store for everything else and replaces `get_historical_features` with one DuckDB query of chained
`ASOF LEFT JOIN`s: per entity row and feature view, the latest feature row with timestamp <= the row's
timestamp, nulled if it is older than the view's ttl; ties on the timestamp go to the latest created timestamp.

Feast semantics kept: feature-view projections (feature subsets, renamed views, join-key maps), field mappings,
`full_feature_names`, ttl (0 = unbounded), created-timestamp tie-break, on-demand views applied by the retrieval
job (with only their input columns, not a copy of the whole table), `to_df` / `to_arrow` / `persist`.
Guarantees: one output row per entity row, duplicates kept, in the entity dataframe's order; null where no
feature row exists within ttl. Entity rows may be a DataFrame or a SQL query (which stays inside DuckDB);
`iter_batches` / `persist` stream the result batch by batch, each batch reading only the feature rows its time
span can pick, so memory follows the batch size rather than the row count. Registered in feature_store.yaml as
`offline_store: {type: feedstore.plugins.asof_duckdb.AsofDuckDBOfflineStore}`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource, SavedDatasetFileStorage
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df
from feast.on_demand_feature_view import OnDemandFeatureView
from pydantic import StrictStr

from feedstore.core import duck
from feedstore.core.contracts import FEATURE_TS_PREFIX, udf_input
from feedstore.core.errors import EntityDataFrameError

log = logging.getLogger(__name__)

_ROW = "__feedstore_row"


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Feast's duckdb offline store settings, plus a memory bound for the point-in-time join."""

    type: StrictStr = "feedstore.plugins.asof_duckdb.AsofDuckDBOfflineStore"
    memory_limit: StrictStr | None = None
    """DuckDB memory limit of a retrieval (e.g. "4GB"); beyond it the joins and the sort spill to `temp_directory`.
    Default: DuckDB's (80% of RAM)."""
    temp_directory: StrictStr | None = None
    """Where a retrieval spills; default: a fresh directory under the system temp dir (never the current dir)."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class _EntityRows:
    """The entity rows: an Arrow table (from a DataFrame), or a SQL query that stays inside DuckDB, so millions of
    rows never have to exist in Python. `register` exposes them as `entity_rows` with a row number `_ROW`."""

    ts_col: str
    columns: list[str]
    table: pa.Table | None = None
    sql: str | None = None

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        if self.table is not None:
            con.register("entity_rows", self.table)
            return
        # a table created from the query keeps its row order (insertion order), so rowid numbers the rows in the
        # query's order; naive timestamps are read as UTC (the connection's time zone), as for DataFrames
        con.execute(f"CREATE TEMP TABLE entity_source AS {self.sql}")
        ts = _q(self.ts_col)
        con.execute(f"CREATE TEMP VIEW entity_rows AS SELECT * REPLACE (CAST({ts} AS TIMESTAMPTZ) AS {ts}), "
                    f"rowid AS {_q(_ROW)} FROM entity_source")

    def time_range(self) -> tuple[Any, Any]:
        if self.table is not None:
            ts = self.table.column(self.ts_col)
            return (pc.min(ts).as_py(), pc.max(ts).as_py()) if len(ts) else (None, None)
        con = duck.connect()
        return con.execute(f"SELECT min(CAST({_q(self.ts_col)} AS TIMESTAMPTZ)), "
                           f"max(CAST({_q(self.ts_col)} AS TIMESTAMPTZ)) FROM ({self.sql})").fetchone()


def _entity_rows(entity_df: pd.DataFrame | str) -> _EntityRows:
    """The entity rows with a UTC microsecond event timestamp (a DataFrame becomes Arrow; SQL stays SQL)."""
    if isinstance(entity_df, str):
        try:
            described = duck.connect().execute(f"DESCRIBE {entity_df}").fetchall()
        except duckdb.Error as e:
            raise EntityDataFrameError(f"entity SQL cannot be read: {str(e).splitlines()[0]}") from None
        types = {name: kind for name, kind, *_ in described}
        stamps = [c for c, kind in types.items() if kind.startswith("TIMESTAMP")]
        ts_col = "event_timestamp" if "event_timestamp" in stamps else (stamps[0] if len(stamps) == 1 else None)
        if ts_col is None:
            raise EntityDataFrameError(f"entity SQL needs one timestamp column (or 'event_timestamp'), has {types}")
        return _EntityRows(ts_col, list(types), sql=entity_df)
    if not isinstance(entity_df, pd.DataFrame):
        raise TypeError(f"entity_df must be a pandas DataFrame or a SQL string, got {type(entity_df).__name__}")
    ts_col = infer_event_timestamp_from_entity_df(dict(zip(entity_df.columns, entity_df.dtypes, strict=True)))
    table = pa.Table.from_pandas(entity_df, preserve_index=False)
    ts = table.column(ts_col)
    if not pa.types.is_timestamp(ts.type):
        ts = pc.cast(pd.to_datetime(ts.to_pandas(), utc=True), pa.timestamp("us", tz="UTC"))
    elif ts.type.tz is None:  # naive timestamps are UTC (Feast's coerce_tz_aware default)
        ts = pc.assume_timezone(ts.cast(pa.timestamp("us")), "UTC")
    ts = ts.cast(pa.timestamp("us", tz="UTC"))
    table = table.set_column(table.schema.get_field_index(ts_col), ts_col, ts)
    table = table.append_column(_ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return _EntityRows(ts_col, list(entity_df.columns), table=table)


@dataclass(frozen=True)
class _ViewJoin:
    """One feature view projection's part of the query: its source rows, ASOF condition and output columns."""

    alias: str
    source: str  # subquery with columns k_<key>..., __ts, f_<feature>...
    on: str
    select: list[str]
    ttl_seconds: float  # 0 = unbounded

    def join(self, span: tuple[Any, Any] | None) -> str:
        """The ASOF join; with `span` (the entity rows' min and max timestamp) only feature rows that can be
        picked are read: stamped <= max, and >= min - ttl (an older row is null anyway)."""
        source = self.source
        if span is not None:
            cond = [f"__ts <= TIMESTAMPTZ '{span[1].isoformat()}'"]
            if self.ttl_seconds:
                cond.append(f"__ts >= TIMESTAMPTZ '{span[0].isoformat()}' - INTERVAL '{self.ttl_seconds} seconds'")
            source = f"SELECT * FROM ({source}) WHERE {' AND '.join(cond)}"
        return f"ASOF LEFT JOIN ({source}) {self.alias} ON {self.on}"


def _view_sql(fv, features: list[str], full_feature_names: bool, alias: str, ts_col: str) -> _ViewJoin:
    """The query part of one feature view projection."""
    source = fv.batch_source
    if not isinstance(source, FileSource):
        raise TypeError(f"{fv.name}: AsofDuckDBOfflineStore reads FileSource (Parquet) only")
    reverse = {v: k for k, v in (source.field_mapping or {}).items()}  # feature/key name -> source column
    join_map = fv.projection.join_key_map or {}
    keys = [c.name for c in fv.entity_columns]
    ts_field = source.timestamp_field
    created = source.created_timestamp_column
    cols = [f"{_q(reverse.get(k, k))} AS {_q('k_' + k)}" for k in keys]
    cols.append(f"{_q(reverse.get(ts_field, ts_field))} AS __ts")
    if created:
        cols.append(f"{_q(reverse.get(created, created))} AS __created")
    cols += [f"{_q(reverse.get(f, f))} AS {_q('f_' + f)}" for f in features]
    path = resolve_source_path(source.path).replace("'", "''")
    sub = (f"SELECT {', '.join(cols)} FROM read_parquet('{path}', hive_partitioning = false, "
           "union_by_name = true)")
    if created:  # one row per (keys, timestamp): the latest created wins, as in Feast
        key_list = ", ".join(_q("k_" + k) for k in keys)
        sub = (f"SELECT * FROM ({sub}) QUALIFY row_number() OVER (PARTITION BY {key_list}, __ts "
               f"ORDER BY __created DESC NULLS LAST) = 1")
    on = " AND ".join(f"e.{_q(join_map.get(k, k))} = {alias}.{_q('k_' + k)}" for k in keys)
    on += f" AND e.{_q(ts_col)} >= {alias}.__ts"
    name = fv.projection.name_to_use()
    ttl = fv.ttl.total_seconds() if fv.ttl else 0
    fresh = f"{alias}.__ts >= e.{_q(ts_col)} - INTERVAL '{ttl} seconds'" if ttl else f"{alias}.__ts IS NOT NULL"
    select = [f"CASE WHEN {fresh} THEN {alias}.{_q('f_' + f)} END AS "
              f"{_q(f'{name}__{f}' if full_feature_names else f)}" for f in features]
    select.append(f"CASE WHEN {fresh} THEN {alias}.__ts END AS {_q(FEATURE_TS_PREFIX + name)}")
    return _ViewJoin(alias, sub, on, select, ttl)


class AsofRetrievalJob(RetrievalJob):
    """Runs the ASOF query on demand, whole (`to_arrow`) or streamed in entity order (`iter_batches`, `persist`);
    applies on-demand views column-wise."""

    def __init__(self, views: list[_ViewJoin], entity: _EntityRows, odfvs: list, full_feature_names: bool,
                 feature_refs: list[str], memory_limit: str | None = None, temp_directory: str | None = None):
        self._views = views
        self._query = self._sql()
        self._entity = entity
        self._odfvs = odfvs
        self._full = full_feature_names
        self._feature_refs = feature_refs
        self._metadata: RetrievalMetadata | None = None
        self._memory_limit = memory_limit
        self._temp_directory = temp_directory

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self) -> list:
        return self._odfvs

    @property
    def metadata(self) -> RetrievalMetadata:
        """Computed when first asked for: for SQL entity rows it runs the query once more (a scan of all rows)."""
        if self._metadata is None:
            first, last = self._entity.time_range()
            self._metadata = RetrievalMetadata(
                features=self._feature_refs, keys=[c for c in self._entity.columns if c != self._entity.ts_col],
                min_event_timestamp=first, max_event_timestamp=last)
        return self._metadata

    @contextmanager
    def _session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection with the entity rows registered; spills go to a private temp dir, removed after."""
        with duck.spilling(self._memory_limit, self._temp_directory, prefix="feedstore-asof-") as con:
            self._entity.register(con)
            yield con

    def _sql(self, rows: tuple[int, int] | None = None, span: tuple[Any, Any] | None = None) -> str:
        """The point-in-time query over all entity rows, or over row numbers [rows) with feature rows pruned to
        what their time `span` can pick. ORDER BY the row number restores the entity order (cheaper than sorting
        afterwards with an Arrow take, which is slow across chunks with list columns; see bench/RESULTS.md)."""
        entity = "entity_rows" if rows is None else (
            f"(SELECT * FROM entity_rows WHERE {_q(_ROW)} >= {rows[0]} AND {_q(_ROW)} < {rows[1]})")
        selects = [c for v in self._views for c in v.select]
        return (f"SELECT e.*{', ' if selects else ''}{', '.join(selects)} FROM {entity} e "
                f"{' '.join(v.join(span) for v in self._views)} ORDER BY e.{_q(_ROW)}")

    def _finish(self, table: pa.Table, keep_feature_ts: bool) -> pa.Table:
        drop = [_ROW] + ([] if keep_feature_ts else [c for c in table.column_names if c.startswith(FEATURE_TS_PREFIX)])
        table = table.drop_columns(drop)
        for odfv in self._odfvs:
            table = _apply_odfv(odfv, table, self._full)
        return table

    def iter_batches(self, batch_rows: int = 250_000, *, keep_feature_ts: bool = False) -> Iterator[pa.Table]:
        """The result in entity order, `batch_rows` rows at a time (the last batch may be shorter), on-demand views
        applied. Each batch is its own query over those entity rows, reading only the feature rows their time
        span can pick (partition and row-group pruning on the timestamp), so memory follows the batch size, not
        the total rows; time-ordered entity rows (the training-set builder's) prune best."""
        with self._session() as con:
            ts, row = _q(self._entity.ts_col), _q(_ROW)
            # fetchall, not fetchone: DuckDB refuses con.sql() while an execute() result is not fully fetched
            n = con.execute("SELECT count(*) FROM entity_rows").fetchall()[0][0]
            for start in range(0, n, batch_rows):
                rows = (start, start + batch_rows)
                lo, hi = con.execute(f"SELECT min({ts}), max({ts}) FROM entity_rows WHERE {row} >= {rows[0]} "
                                     f"AND {row} < {rows[1]}").fetchall()[0]
                query = self._sql(rows, None if lo is None else (lo, hi))
                yield self._finish(con.sql(query).to_arrow_table(), keep_feature_ts)

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        """The joined features without on-demand views (Feast's base class applies them on this)."""
        with self._session() as con:
            table = con.sql(self._query).to_arrow_table()
        return table.drop_columns([c for c in table.column_names if c == _ROW or c.startswith(FEATURE_TS_PREFIX)])

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def to_arrow(self, validation_reference: Any = None, timeout: int | None = None) -> pa.Table:
        if validation_reference is not None:
            raise NotImplementedError("validation_reference is not supported; validate with the GX suites")
        with self._session() as con:
            return self._finish(con.sql(self._query).to_arrow_table(), keep_feature_ts=False)

    def to_df(self, validation_reference: Any = None, timeout: int | None = None) -> pd.DataFrame:
        return self.to_arrow(validation_reference, timeout).to_pandas().reset_index(drop=True)

    def persist(self, storage, allow_overwrite: bool = False, timeout: int | None = None):
        """Stream the result into one Parquet file (bounded memory, as `iter_batches`); written aside, then renamed."""
        import pyarrow.parquet as pq

        if not isinstance(storage, SavedDatasetFileStorage):
            raise TypeError("AsofDuckDBOfflineStore persists to SavedDatasetFileStorage (Parquet) only")
        path = storage.file_options.uri
        if os.path.exists(path) and not allow_overwrite:
            from feast.errors import SavedDatasetLocationAlreadyExists

            raise SavedDatasetLocationAlreadyExists(location=path)
        partial = f"{path}.partial-{os.getpid()}"
        writer = None
        try:
            for table in self.iter_batches():
                writer = writer or pq.ParquetWriter(partial, table.schema)
                writer.write_table(table)
            if writer is None:  # no entity rows: an empty file with the result's columns
                pq.write_table(self.to_arrow(), partial)
            else:
                writer.close()
            os.replace(partial, path)
        finally:
            if writer is not None and writer.is_open:
                writer.close()
            if os.path.exists(partial):
                os.remove(partial)

    def to_sql(self) -> str:
        return self._query


class _LazyInputs(dict):
    """The UDF's input dict: each column is converted from Arrow only when the UDF reads it."""

    def __init__(self, table: pa.Table, columns: dict[str, str]):
        super().__init__()
        self._table, self._columns = table, columns

    def __missing__(self, key: str) -> Any:
        if key not in self._columns:
            raise KeyError(key)
        value = self[key] = udf_input(self._table.column(self._columns[key]))
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._columns

    def keys(self):  # type: ignore[override]
        return self._columns.keys()


def _apply_odfv(odfv, table: pa.Table, full_feature_names: bool) -> pa.Table:
    """Run one python-mode ODFV's UDF on just its inputs (short names, as the UDF expects) and append outputs."""
    columns: dict[str, str] = {}
    for proj in odfv.source_feature_view_projections.values():
        for f in proj.features:
            full = f"{proj.name_to_use()}__{f.name}"
            columns[f.name] = full if full in table.column_names else f.name
    for source in odfv.source_request_sources.values():
        for f in source.schema:
            columns[f.name] = f.name
    result = odfv.feature_transformation.udf(_LazyInputs(table, columns))
    name = odfv.projection.name_to_use()
    for f in odfv.projection.features:
        out = f"{name}__{f.name}" if full_feature_names else f.name
        values = result[f.name]
        table = table.append_column(out, pa.array(np.asarray(values) if not isinstance(values, pa.Array) else values))
    return table


def _check_entity_columns(columns: list[str], feature_views: list, odfvs: list) -> None:
    for fv in feature_views:
        for c in fv.entity_columns:
            key = (fv.projection.join_key_map or {}).get(c.name, c.name)
            if key not in columns:
                raise EntityDataFrameError(f"entity dataframe is missing column '{key}' (join key of {fv.name})")
    for odfv in odfvs:
        for source in odfv.source_request_sources.values():
            for f in source.schema:
                if f.name not in columns:
                    raise EntityDataFrameError(f"entity dataframe is missing column '{f.name}' (request field of "
                                               f"{source.name}, needed by {odfv.name})")


def resolve_source_path(path: str) -> str:
    """A FileSource path as the registry stores it (relative to the data dir, so a copied or moved data dir reads
    its own files), made absolute against FEEDSTORE_DATA_DIR; the folders before the first glob part are resolved
    once, so a stage publishing a new version mid-read cannot mix two versions' files."""
    p = Path(path)
    if not p.is_absolute():
        base = os.environ.get("FEEDSTORE_DATA_DIR")
        if not base:
            raise ValueError(f"FileSource path {path!r} is relative to the data dir, but FEEDSTORE_DATA_DIR is not set")
        p = Path(base) / p
    parts = p.parts
    cut = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    return str(Path(os.path.realpath(Path(*parts[:cut]))).joinpath(*parts[cut:]))


def _read_source(data_source, repo_path: str):
    """Feast's duckdb reader for the materialization path, with the source path resolved against the data dir and
    bound by DuckDB's own API (Feast's reader pastes it into SQL unquoted: a path with an apostrophe broke it)."""
    import uuid

    import ibis

    backend = ibis.get_backend()
    name = f"feedstore_source_{uuid.uuid4().hex[:12]}"
    backend.con.read_parquet(resolve_source_path(data_source.path), hive_partitioning=False,
                             union_by_name=True).create_view(name, replace=True)
    return backend.table(name)


def _pull(kind: str, config, data_source, join_key_columns, feature_name_columns, timestamp_field,
          created_timestamp_column=None, start_date=None, end_date=None):
    from feast.infra.offline_stores import ibis as feast_ibis
    from feast.infra.offline_stores.duckdb import _write_data_source

    return getattr(feast_ibis, f"pull_{kind}_from_table_or_query_ibis")(
        config=config, data_source=data_source, join_key_columns=join_key_columns,
        feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
        created_timestamp_column=created_timestamp_column, start_date=start_date, end_date=end_date,
        data_source_reader=_read_source, data_source_writer=_write_data_source,
        staging_location=config.offline_store.staging_location,
        staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override)


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's duckdb offline store with point-in-time joins as DuckDB ASOF joins; source paths relative to the
    data dir."""

    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, *args, **kwargs):
        return _pull("latest", config, data_source, *args, **kwargs)

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, *args, **kwargs):
        return _pull("all", config, data_source, *args, **kwargs)

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names: bool = False, filter_by_created_timestamp: bool = False):
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        entity = _entity_rows(entity_df)
        _check_entity_columns(entity.columns, feature_views, odfvs)
        ts_col = entity.ts_col
        by_view: dict[str, list[str]] = {}
        for ref in feature_refs:
            view, feature = ref.split(":", 1)
            by_view.setdefault(view, []).append(feature)
        views = []
        for k, fv in enumerate(feature_views):
            features = by_view.get(fv.projection.name_to_use(), [])
            if features:
                views.append(_view_sql(fv, features, full_feature_names, f"v{k}", ts_col))
        store = config.offline_store
        return AsofRetrievalJob(views, entity, odfvs, full_feature_names, feature_refs,
                                memory_limit=getattr(store, "memory_limit", None),
                                temp_directory=getattr(store, "temp_directory", None))


__all__ = ["AsofDuckDBOfflineStore", "AsofDuckDBOfflineStoreConfig", "AsofRetrievalJob", "resolve_source_path"]
