"""Online features for ranking: one user and N candidates -> one row per candidate with every feature of the service,
missing flags and feature ages."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import FEATURE_SERVICE, ITEM_SENTINEL, PAIR_SENTINEL, USER_SENTINEL
from feedstore.core.errors import ServingError
from feedstore.core.feast_repo import feature_store
from feedstore.core.spec import FEATURE_SPEC, FeatureSpec
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


def get_ranking_features(store, user_id: int, item_ids: list[int], context: RankingContext,
                         fill: dict[str, Any] | None = None, fast: bool = True) -> pd.DataFrame:
    """Every feature of feed_ranking_v1 for one user and N candidates, one row per candidate in the given order.

    Adds `user_missing` / `item_missing` / `user_item_missing` (cold start: Feast's Redis store reports absent
    keys as present with nulls, so absence is detected from sentinel columns that are never null for a
    materialized entity) and `<view>_age_seconds` (how old each feature row is). A row older than its view's
    ttl at the request time counts as missing, as in training sets. With `fill`, missing values take those
    defaults. On Redis (and `fast`), reads go through `OnlineRanker`; otherwise through Feast's
    `get_online_features`; tests check that both give the same frame.
    """
    if fast and store.config.online_store.type == "redis":
        ranker = _RANKERS.get(id(store))
        if ranker is None:
            ranker = _RANKERS[id(store)] = OnlineRanker(store)
        out = ranker.get(user_id, item_ids, context)
    else:
        out = _feast_ranking_features(store, user_id, item_ids, context)
    if fill:
        with pd.option_context("future.no_silent_downcasting", True):
            out = out.fillna({k: v for k, v in fill.items() if k in out.columns}).infer_objects()
    return out


def _feast_ranking_features(store, user_id: int, item_ids: list[int], context: RankingContext) -> pd.DataFrame:
    rows = [{"user_id": int(user_id), "item_id": int(i), "request_ts": context.request_ts, "device": context.device}
            for i in item_ids]
    service = store.get_feature_service(FEATURE_SERVICE)
    resp = store.get_online_features(features=service, entity_rows=rows).to_dict(include_event_timestamps=True)
    now = context.request_ts.timestamp()
    out = pd.DataFrame({k: v for k, v in resp.items() if not k.endswith(TS_SUFFIX)})
    by_view = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
    any_stale = False
    for view, sentinel in (("user_daily_stats", USER_SENTINEL), ("item_daily_stats", ITEM_SENTINEL),
                           ("user_item_daily_stats", PAIR_SENTINEL)):
        ts = np.asarray(resp.get(sentinel + TS_SUFFIX, [0] * len(rows)), dtype=np.float64)
        age = np.where(out[sentinel].isna() | (ts <= 0), np.nan, now - ts)
        stale = ~((age >= 0) & (age <= store.get_feature_view(view).ttl.total_seconds()))
        if stale.any():  # outside the view's ttl at the request time: missing, as in training sets
            out.loc[stale, by_view[view]] = None
            any_stale = True
        out[f"{view}_age_seconds"] = np.where(stale, np.nan, age)
    if any_stale:  # on-demand outputs must follow their (now missing) inputs
        odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
        request = {"request_ts": [context.request_ts] * len(rows), "device": [context.device] * len(rows)}
        for name in [n for n in by_view if n in odfvs]:
            result = odfvs[name].feature_transformation.udf(
                {**{c: out[c].tolist() for c in out.columns}, **request})
            for feature in by_view[name]:
                out[feature] = np.asarray(result[feature], dtype=np.float64)
    out["user_missing"] = out[USER_SENTINEL].isna()
    out["item_missing"] = out[ITEM_SENTINEL].isna()
    out["user_item_missing"] = out[PAIR_SENTINEL].isna()
    return out


def lookup(cfg: PipelineConfig, user_id: int, item_ids: list[int], device: str = "mobile", at: datetime | None = None,
           online_store: str | None = None) -> dict[str, Any]:
    """Stage `lookup`: the features of one request as a JSON-ready dict (what the CLI prints)."""
    online_store = online_store or cfg.serving.online_store
    store = feature_store(cfg, online_store)
    if latest_materialized(store) is None:
        raise ServingError(f"nothing materialized into the {online_store} online store yet; run "
                           f"`feedstore materialize --online-store {online_store}` first")
    ctx = RankingContext(request_ts=at or datetime.now(timezone.utc), device=device)
    df = get_ranking_features(store, user_id, item_ids, ctx)
    features = [c for c in df.columns if c not in {"user_id", "item_id", "user_missing", "item_missing",
                                                   "user_item_missing"} and not c.endswith("_age_seconds")]
    candidates = []
    for rec in df.to_dict(orient="records"):
        candidates.append({
            "item_id": rec["item_id"],
            "features": {k: _plain(rec[k]) for k in features},
            "missing": {"user": bool(rec["user_missing"]), "item": bool(rec["item_missing"]),
                        "user_item": bool(rec["user_item_missing"])},
            "feature_age_seconds": {v: _plain(rec[f"{v}_age_seconds"]) for v in
                                    ("user_daily_stats", "item_daily_stats", "user_item_daily_stats")},
        })
    return {"user_id": user_id, "request_ts": ctx.request_ts.isoformat(), "device": device,
            "feature_service": FEATURE_SERVICE, "online_store": online_store,
            "missing_user": bool(df["user_missing"].all()) if len(df) else None,
            "missing_items": [int(i) for i, m in zip(df["item_id"], df["item_missing"], strict=True) if m],
            "candidates": candidates}


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (datetime, pd.Timestamp)):
        return v.isoformat()
    if isinstance(v, (list, np.ndarray)):
        return [_plain(x) for x in v]
    if v is pd.NaT or v is None:
        return None
    return v
