"""The validation view: raw interactions plus the derived columns the GX rules check (lookups, recomputations, masked
columns)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from feedstore.core.contracts import (
    DAY_US,
    TIME_OF_DAY,
)
from feedstore.ingestion.validate.reading import Partition

_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.int8(): pd.Int8Dtype()}.get


def _occurrence(df: pd.DataFrame, key: str) -> np.ndarray:
    occ = df.groupby(key, dropna=True, sort=False).cumcount().to_numpy() + 1
    occ[df[key].isna().to_numpy()] = 1
    return occ


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
    dow = np.where(ts_null, np.nan, ((ts_us // DAY_US) + 3) % 7)
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
