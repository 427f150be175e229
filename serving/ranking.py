"""Online features for ranking: one user and N candidates -> one row per candidate with every feature of the service,
missing flags and feature ages."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import DEVICES, ITEM_SENTINEL, PAIR_SENTINEL, USER_SENTINEL
from feedstore.core.errors import ServingError
from feedstore.core.feast_repo import feature_store
from feedstore.core.spec import FEATURE_SERVICE, FEATURE_SPEC, FeatureSpec
from feedstore.core.spec import defaults as spec_defaults
from feedstore.serving.online_ranker import OnlineRanker
from feedstore.serving.request import RankingContext
from feedstore.serving.store import latest_materialized

TS_SUFFIX = "__ts"


def defaults(cfg: PipelineConfig, spec: FeatureSpec = FEATURE_SPEC) -> dict[str, Any]:
    """Values a missing entity gets in `get_ranking_features(fill=...)`, derived from the feature spec: counts 0,
    smoothed CTRs the prior mean, dwell and log-popularity 0, `item_category` -1, affinity for the item 1/C;
    ages, timestamps and the affinity vector stay missing."""
    return spec_defaults(spec, cfg.generation.preferences.categories)


_RANKERS: dict[int, OnlineRanker] = {}

#: The three views with a row per entity, their sentinel column (never null for a materialized entity) and flag.
_VIEWS = (("user_daily_stats", USER_SENTINEL, "user"), ("item_daily_stats", ITEM_SENTINEL, "item"),
          ("user_item_daily_stats", PAIR_SENTINEL, "user_item"))
AGE_COLUMNS = tuple(f"{view}_age_seconds" for view, _, _ in _VIEWS)
FLAG_COLUMNS = tuple(f"{flag}_missing" for _, _, flag in _VIEWS)


def frame_columns(spec: FeatureSpec = FEATURE_SPEC) -> list[str]:
    """The columns of a lookup, in order: the keys, every feature of the service in its declared order (the
    training splits' order), the missing flags, the feature ages."""
    return ["user_id", "item_id", *(c.name for c in spec.service_columns()), *FLAG_COLUMNS, *AGE_COLUMNS]


def ranker(store) -> OnlineRanker:
    """The store's OnlineRanker (Redis), built once per FeatureStore."""
    found = _RANKERS.get(id(store))
    if found is None:
        found = _RANKERS[id(store)] = OnlineRanker(store)
    return found


def get_ranking_features(store, user_id: int, item_ids: list[int], context: RankingContext,
                         fill: dict[str, Any] | None = None, fast: bool = True) -> pd.DataFrame:
    """Every feature of feed_ranking_v1 for one user and N candidates, one row per candidate in the given order.

    Columns in `frame_columns()` order: the feature service's declared order, whatever order Feast returns.
    Integer features are nullable integers (`Int64`), so a missing candidate never turns a count into a float;
    floats are float64 (NaN = missing), timestamps UTC datetimes. Adds `user_missing` / `item_missing` /
    `user_item_missing` (cold start: Feast's Redis store reports absent keys as present with nulls, so absence
    is detected from sentinel columns that are never null for a materialized entity) and `<view>_age_seconds`
    (how old each feature row is). A row older than its view's ttl at the request time counts as missing, as in
    training sets. With `fill`, missing values take those defaults. On Redis (and `fast`), reads go through
    `OnlineRanker`; otherwise through Feast's `get_online_features`; tests check that both give the same frame.
    """
    n = len(item_ids)
    columns = entity_rows_features(store, np.full(n, int(user_id), dtype=np.int64),
                                   np.asarray(item_ids, dtype=np.int64),
                                   np.full(n, pd.Timestamp(context.request_ts).value, dtype=np.int64),
                                   [context.device] * n, fast=fast)
    out = pd.DataFrame(columns, copy=False)
    if fill:
        out = out.fillna({k: v for k, v in fill.items() if k in out.columns})
    return out


def entity_rows_features(store, user_ids: np.ndarray, item_ids: np.ndarray, request_ns: np.ndarray,
                         devices: list[str], fast: bool = True) -> dict[str, Any]:
    """The features of N (user, item, request time in epoch ns, device) rows as ordered, typed columns
    (`frame_columns()`); the engine of `get_ranking_features` and of the HTTP server."""
    if fast and store.config.online_store.type == "redis":
        return ranker(store).columns(user_ids, item_ids, request_ns, devices)
    return _feast_columns(store, user_ids, item_ids, request_ns, devices)


def _feast_columns(store, user_ids, item_ids, request_ns, devices) -> dict[str, Any]:
    n = len(item_ids)
    when = pd.DatetimeIndex(np.asarray(request_ns, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")
    request = {"request_ts": list(when.to_pydatetime()), "device": list(devices)}
    rows = {"user_id": [int(u) for u in user_ids], "item_id": [int(i) for i in item_ids], **request}
    service = store.get_feature_service(FEATURE_SERVICE)
    resp = store.get_online_features(features=service, entity_rows=rows).to_dict(include_event_timestamps=True)
    now = np.asarray(request_ns, dtype=np.int64) / 1e9
    by_view = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
    values = {k: list(v) for k, v in resp.items() if not k.endswith(TS_SUFFIX)}
    ages, any_stale = {}, False
    for view, sentinel, _ in _VIEWS:
        ts = np.asarray([_epoch(t) for t in resp.get(sentinel + TS_SUFFIX, [None] * n)], dtype=np.float64)
        present = np.array([v is not None for v in values[sentinel]], dtype=bool)
        age = np.where(present & (ts > 0), now - ts, np.nan)
        live = (age >= 0) & (age <= store.get_feature_view(view).ttl.total_seconds())
        for i in np.flatnonzero(~live):  # outside the view's ttl at the request time: missing, as in training sets
            any_stale |= bool(present[i])
            for feature in by_view[view]:
                values[feature][i] = None
        ages[f"{view}_age_seconds"] = np.where(live, age, np.nan)
    if any_stale:  # on-demand outputs must follow their (now missing) inputs
        odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
        for name in [n for n in by_view if n in odfvs]:
            result = odfvs[name].feature_transformation.udf({**values, **request})
            for feature in by_view[name]:
                values[feature] = list(result[feature])
    out: dict[str, Any] = {"user_id": np.asarray(user_ids, dtype=np.int64),
                           "item_id": np.asarray(item_ids, dtype=np.int64)}
    for col in FEATURE_SPEC.service_columns():
        out[col.name] = typed_column(values[col.name], col.dtype)
    for (_, sentinel, _), flag in zip(_VIEWS, FLAG_COLUMNS, strict=True):
        out[flag] = np.asarray(pd.isna(out[sentinel]), dtype=bool)
    out.update(ages)
    return out


def _epoch(t: Any) -> float:
    if t is None:
        return np.nan
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    return float(t)


def typed_column(values: list, dtype: str):
    """A column of Python values (None = missing) as the spec's type: nullable integers for int64/int32,
    float64 with NaN, UTC datetimes for timestamps, lists as they are."""
    if dtype in ("int64", "int32"):
        return pd.array([None if v is None or v != v else int(v) for v in values], dtype="Int64")
    if dtype == "float64":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if dtype == "timestamp":
        return pd.DatetimeIndex(pd.to_datetime(pd.Series(values, dtype=object), utc=True))
    return list(values)


def lookup(cfg: PipelineConfig, user_id: int, item_ids: list[int], device: str = "mobile", at: datetime | None = None,
           online_store: str | None = None) -> dict[str, Any]:
    """Stage `lookup`: the features of one request as a JSON-ready dict (what the CLI prints; the HTTP server's
    /rank answers the same document). Schema: serving/schemas/lookup.schema.json."""
    online_store = online_store or cfg.serving.online_store
    store = feature_store(cfg, online_store)
    if latest_materialized(store) is None:
        raise ServingError(f"nothing materialized into the {online_store} online store yet; run "
                           f"`feedstore materialize --online-store {online_store}` first")
    ctx = RankingContext(request_ts=at or datetime.now(timezone.utc), device=device)
    n = len(item_ids)
    columns = entity_rows_features(store, np.full(n, int(user_id), dtype=np.int64), np.asarray(item_ids, np.int64),
                                   np.full(n, pd.Timestamp(ctx.request_ts).value, dtype=np.int64), [device] * n)
    return lookup_document(columns, user_id, ctx, online_store)


def lookup_document(columns: dict[str, Any], user_id: int, ctx: RankingContext, online_store: str) -> dict[str, Any]:
    """One ranking request's answer as a JSON-ready dict: per candidate (in the given order) its features in the
    service's declared order (integers as integers, missing as null, timestamps as ISO 8601 UTC), which entities
    are missing and how old each feature row is."""
    features = [c.name for c in FEATURE_SPEC.service_columns()]
    plain = {k: json_values(columns[k]) for k in ("item_id", *features, *FLAG_COLUMNS, *AGE_COLUMNS)}
    feats = [dict(zip(features, row, strict=True)) for row in zip(*(plain[k] for k in features), strict=True)]
    candidates = [{"item_id": item, "features": f,
                   "missing": {"user": u, "item": i, "user_item": p},
                   "feature_age_seconds": {"user_daily_stats": a, "item_daily_stats": b, "user_item_daily_stats": c}}
                  for item, f, u, i, p, a, b, c in zip(plain["item_id"], feats, *(plain[k] for k in FLAG_COLUMNS),
                                                       *(plain[k] for k in AGE_COLUMNS), strict=True)]
    return {"user_id": int(user_id), "request_ts": ctx.request_ts.isoformat(), "device": ctx.device,
            "feature_service": FEATURE_SERVICE, "online_store": online_store,
            "missing_user": all(plain["user_missing"]) if candidates else None,
            "missing_items": [c["item_id"] for c in candidates if c["missing"]["item"]],
            "candidates": candidates}


def json_values(col: Any) -> list:
    """A typed column as JSON-ready Python values: ints stay ints, NaN / NA / NaT become None, timestamps ISO 8601
    UTC strings (`2024-03-01T00:00:00Z`); vectorized per column."""
    if isinstance(col, pd.arrays.IntegerArray):
        out = col._data.tolist()  # values and mask as they are: to_numpy(na_value=...) costs more per column
        for i in np.flatnonzero(col._mask):
            out[i] = None
        return out
    if isinstance(col, pd.DatetimeIndex):
        text = np.datetime_as_string(col.tz_convert("UTC").as_unit("s").tz_localize(None).values, unit="s")
        return [None if t == "NaT" else t + "Z" for t in text.tolist()]
    if isinstance(col, np.ndarray):
        out = col.tolist()
        if col.dtype.kind == "f":
            for i in np.flatnonzero(np.isnan(col)):
                out[i] = None
        return out
    # lists (the decoders and Feast give lists of Python floats) and anything else
    return [v if v is None or type(v) is list else _plain(v) for v in col]


def _plain(v: Any) -> Any:
    if v is None or v is pd.NaT or v is pd.NA:
        return None
    if isinstance(v, (np.floating, float)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (datetime, pd.Timestamp)):
        return v.isoformat()
    if isinstance(v, (list, np.ndarray)):
        return [_plain(x) for x in v]
    return v


#: The JSON Schema of the lookup document (CLI `lookup`, HTTP `/rank`), shipped as package data; a test keeps it
#: equal to `lookup_schema()` and validates both outputs against it.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "lookup.schema.json"

_JSON_TYPES = {
    "int64": {"type": ["integer", "null"]},
    "int32": {"type": ["integer", "null"]},
    "float64": {"type": ["number", "null"]},
    "timestamp": {"type": ["string", "null"], "format": "date-time"},
    "float32_list": {"type": ["array", "null"], "items": {"type": "number"}},
}


def lookup_schema(spec: FeatureSpec = FEATURE_SPEC) -> dict[str, Any]:
    """The lookup document's JSON Schema, derived from the feature spec (features in the service's order)."""
    features = {c.name: {**_JSON_TYPES[c.dtype], "description": f"{c.dtype}: {c.description}"}
                for c in spec.service_columns()}
    flags = {f: {"type": "boolean"} for f in ("user", "item", "user_item")}
    ages = {v: {"type": ["number", "null"], "minimum": 0} for v, _, _ in _VIEWS}
    candidate = {
        "type": "object",
        "required": ["item_id", "features", "missing", "feature_age_seconds"],
        "additionalProperties": False,
        "properties": {
            "item_id": {"type": "integer"},
            "features": {"type": "object", "description": "every feature of the service, in its declared order "
                         "(keys appear in that order); null = missing (unknown entity or row older than its ttl)",
                         "required": list(features), "additionalProperties": False, "properties": features},
            "missing": {"type": "object", "required": list(flags), "additionalProperties": False,
                        "properties": flags},
            "feature_age_seconds": {"type": "object", "description": "age of each view's row at the request time "
                                    "(null = missing)", "required": list(ages), "additionalProperties": False,
                                    "properties": ages},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://feedstore.local/schemas/lookup.schema.json",
        "title": f"feedstore lookup: {spec.service} for one user and N candidates",
        "description": "Printed by `feedstore lookup`, answered by the feature server's POST /rank. Generated from "
                       "feedstore.core.spec by feedstore.serving.ranking.lookup_schema().",
        "type": "object",
        "required": ["user_id", "request_ts", "device", "feature_service", "online_store", "missing_user",
                     "missing_items", "candidates"],
        "additionalProperties": False,
        "properties": {
            "user_id": {"type": "integer"},
            "request_ts": {"type": "string", "format": "date-time"},
            "device": {"enum": list(DEVICES)},
            "feature_service": {"const": spec.service},
            "online_store": {"enum": ["redis", "sqlite"]},
            "missing_user": {"type": ["boolean", "null"]},
            "missing_items": {"type": "array", "items": {"type": "integer"}},
            "candidates": {"type": "array", "items": candidate},
        },
    }
