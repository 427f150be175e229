"""A Feast offline store whose point-in-time joins are DuckDB ASOF joins.

Feast's stock `duckdb` store joins every earlier feature row of an entity and then deduplicates, so its cost grows
with the length of history (209 s for 1M entity rows over a year of daily snapshots here); its `file` (dask)
store is slower still and drops entity rows that share keys and timestamp (Feast issue #6787). This store keeps
the `duckdb` store for everything else and replaces `get_historical_features` with one DuckDB query of chained
`ASOF LEFT JOIN`s: per entity row and feature view, the latest feature row with timestamp <= the row's
timestamp, nulled if it is older than the view's ttl; ties on the timestamp go to the latest created timestamp.

Feast semantics kept: feature-view projections (feature subsets, renamed views, join-key maps), field mappings,
`full_feature_names`, ttl (0 = unbounded), created-timestamp tie-break, on-demand views applied by the retrieval
job (with only their input columns, not a copy of the whole table), `to_df` / `to_arrow` / `persist`.
Guarantees: one output row per entity row, duplicates kept, in the entity dataframe's order; null where no
feature row exists within ttl. Registered in feature_store.yaml as
`offline_store: {type: feedstore.offline_store.AsofDuckDBOfflineStore}`.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

_ROW = "__feedstore_row"
#: Columns `<prefix><view>` hold the timestamp of the feature row each entity row was joined to (kept only by
#: `to_arrow_with_feature_timestamps`, for the training-set gate: none may be later than the row's timestamp).
FEATURE_TS_PREFIX = "_feature_ts__"


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Same settings as Feast's duckdb offline store."""

    type: StrictStr = "feedstore.offline_store.AsofDuckDBOfflineStore"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _entity_table(entity_df: pd.DataFrame | str) -> tuple[pa.Table, str]:
    """The entity rows as Arrow, with a UTC microsecond event timestamp and a row number; (table, ts column)."""
    if isinstance(entity_df, str):
        con = duckdb.connect()
        entity_df = con.execute(entity_df).df()
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
    return table.append_column(_ROW, pa.array(np.arange(table.num_rows, dtype=np.int64))), ts_col


def _view_sql(fv, features: list[str], full_feature_names: bool, alias: str, ts_col: str
              ) -> tuple[str, str, list[str]]:
    """(source subquery, ASOF join condition, select list) for one feature view projection."""
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
    sub = (f"SELECT {', '.join(cols)} FROM read_parquet('{source.path}', hive_partitioning = false, "
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
    return sub, on, select


class AsofRetrievalJob(RetrievalJob):
    """Runs the ASOF query on demand; applies on-demand views column-wise."""

    def __init__(self, query: str, entity: pa.Table, odfvs: list, full_feature_names: bool,
                 metadata: RetrievalMetadata):
        self._query = query
        self._entity = entity
        self._odfvs = odfvs
        self._full = full_feature_names
        self._metadata = metadata

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self) -> list:
        return self._odfvs

    @property
    def metadata(self) -> RetrievalMetadata:
        return self._metadata

    def _to_arrow_internal(self, timeout: int | None = None, keep_feature_ts: bool = False) -> pa.Table:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("entity_rows", self._entity)
        table = con.sql(self._query).to_arrow_table()
        drop = [_ROW] + ([] if keep_feature_ts else [c for c in table.column_names if c.startswith(FEATURE_TS_PREFIX)])
        return table.drop_columns(drop)

    def to_arrow_with_feature_timestamps(self) -> pa.Table:
        """Like to_arrow, plus `_feature_ts__<view>`: the timestamp of the feature row joined (null if none)."""
        table = self._to_arrow_internal(keep_feature_ts=True)
        for odfv in self._odfvs:
            table = _apply_odfv(odfv, table, self._full)
        return table

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def to_arrow(self, validation_reference: Any = None, timeout: int | None = None) -> pa.Table:
        if validation_reference is not None:
            raise NotImplementedError("validation_reference is not supported; validate with the GX suites")
        table = self._to_arrow_internal(timeout)
        for odfv in self._odfvs:
            table = _apply_odfv(odfv, table, self._full)
        return table

    def to_df(self, validation_reference: Any = None, timeout: int | None = None) -> pd.DataFrame:
        return self.to_arrow(validation_reference, timeout).to_pandas().reset_index(drop=True)

    def persist(self, storage, allow_overwrite: bool = False, timeout: int | None = None):
        import os

        import pyarrow.parquet as pq

        if not isinstance(storage, SavedDatasetFileStorage):
            raise TypeError("AsofDuckDBOfflineStore persists to SavedDatasetFileStorage (Parquet) only")
        path = storage.file_options.uri
        if os.path.exists(path) and not allow_overwrite:
            from feast.errors import SavedDatasetLocationAlreadyExists

            raise SavedDatasetLocationAlreadyExists(location=path)
        pq.write_table(self.to_arrow(timeout=timeout), path)

    def to_sql(self) -> str:
        return self._query


def _column_input(table: pa.Table, name: str) -> Any:
    """A column as the UDFs' vectorized input: 2-D float array for equal-length lists, else a pandas Series."""
    col = table.column(name)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        col = col.combine_chunks()
        valid = np.asarray(col.is_valid())
        lengths = pc.list_value_length(col).fill_null(0).to_numpy()
        width = int(lengths.max()) if len(col) else 0
        if width and (lengths[valid] == width).all():
            matrix = np.full((len(col), width), np.nan)
            matrix[valid] = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, width)
            return matrix
    return col.to_pandas()


class _LazyInputs(dict):
    """The UDF's input dict: each column is converted from Arrow only when the UDF reads it."""

    def __init__(self, table: pa.Table, columns: dict[str, str]):
        super().__init__()
        self._table, self._columns = table, columns

    def __missing__(self, key: str) -> Any:
        if key not in self._columns:
            raise KeyError(key)
        value = self[key] = _column_input(self._table, self._columns[key])
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


class EntityDataFrameError(ValueError):
    """The entity dataframe lacks a column the requested features need (raised before any query runs)."""


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


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's duckdb offline store with point-in-time joins as DuckDB ASOF joins."""

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names: bool = False, filter_by_created_timestamp: bool = False):
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        if isinstance(entity_df, pd.DataFrame):
            _check_entity_columns(list(entity_df.columns), feature_views, odfvs)
        entity, ts_col = _entity_table(entity_df)
        by_view: dict[str, list[str]] = {}
        for ref in feature_refs:
            view, feature = ref.split(":", 1)
            by_view.setdefault(view, []).append(feature)
        joins, selects = [], []
        for k, fv in enumerate(feature_views):
            features = by_view.get(fv.projection.name_to_use(), [])
            if not features:
                continue
            alias = f"v{k}"
            sub, on, select = _view_sql(fv, features, full_feature_names, alias, ts_col)
            joins.append(f"ASOF LEFT JOIN ({sub}) {alias} ON {on}")
            selects += select
        # ORDER BY the row number restores the entity order (measured: cheaper than sorting afterwards with an
        # Arrow take, which is slow across chunks with list columns)
        query = (f"SELECT e.*{', ' if selects else ''}{', '.join(selects)} FROM entity_rows e "
                 f"{' '.join(joins)} ORDER BY e.{_q(_ROW)}")
        ts = entity.column(ts_col)
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=[c for c in entity.column_names if c not in (ts_col, _ROW)],
            min_event_timestamp=pc.min(ts).as_py() if len(ts) else None,
            max_event_timestamp=pc.max(ts).as_py() if len(ts) else None,
        )
        return AsofRetrievalJob(query, entity, odfvs, full_feature_names, metadata)


__all__ = ["AsofDuckDBOfflineStore", "AsofDuckDBOfflineStoreConfig", "AsofRetrievalJob"]
