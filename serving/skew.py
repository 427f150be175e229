"""The training/serving skew check: online values must equal get_historical_features at the materialization time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from feedstore.core.catalog import Catalog
from feedstore.core.config import DEVICES, PipelineConfig
from feedstore.core.errors import ServingError, SkewFound
from feedstore.core.feast_repo import feature_store
from feedstore.core.spec import FEATURE_SERVICE, FEATURE_SPEC
from feedstore.serving.ranking import _plain
from feedstore.serving.store import latest_materialized, latest_snapshot

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SkewReport:
    end: datetime
    rows: int
    features: int
    mismatches: list[dict[str, Any]]


def check_skew(cfg: PipelineConfig, online_store: str | None = None, sample: int | None = None,
               end: datetime | None = None, seed: int = 0, raise_on_mismatch: bool = True) -> SkewReport:
    """Stage `check-skew`: online values must equal get_historical_features at the materialization end, for sampled
    entities (default end: the newest materialization recorded in the registry); raise SkewFound on a mismatch."""
    import duckdb

    online_store = online_store or cfg.serving.online_store
    sample = sample or cfg.serving.skew_sample
    store = feature_store(cfg, online_store)
    end = end or latest_materialized(store) or latest_snapshot(cfg)
    offline = Catalog(cfg.data_dir).published_version("offline")  # one version for the three reads
    pairs_view = FEATURE_SPEC.view("user_item_daily_stats")  # pairs active within its ttl
    pairs = duckdb.execute(f"""
        SELECT user_id, item_id FROM read_parquet($g, hive_partitioning = false)
        WHERE event_timestamp BETWEEN $s AND $e ORDER BY hash(user_id, item_id, {seed}) LIMIT {sample // 2}""",
                           {"g": str(offline.view_glob(pairs_view.name)), "s": end - pairs_view.ttl,
                            "e": end}).fetchall()
    users = [r[0] for r in duckdb.execute(f"SELECT DISTINCT user_id FROM read_parquet($g, hive_partitioning = false) "
                                      f"ORDER BY hash(user_id, {seed}) LIMIT {sample}",
                                      {"g": str(offline.view_glob("user_daily_stats"))}).fetchall()]
    items = [r[0] for r in duckdb.execute(f"SELECT DISTINCT item_id FROM read_parquet($g, hive_partitioning = false) "
                                      f"ORDER BY hash(item_id, {seed}) LIMIT {sample}",
                                      {"g": str(offline.view_glob("item_daily_stats"))}).fetchall()]
    rng = np.random.default_rng(seed)
    mixed = list(zip(rng.choice(users, sample - len(pairs)), rng.choice(items, sample - len(pairs)), strict=True))
    entity_pairs = [(int(u), int(i)) for u, i in [*pairs, *mixed]]
    devices = [DEVICES[k % len(DEVICES)] for k in range(len(entity_pairs))]
    entity_df = pd.DataFrame({"user_id": [u for u, _ in entity_pairs], "item_id": [i for _, i in entity_pairs],
                              "event_timestamp": end, "request_ts": end, "device": devices,
                              "row": np.arange(len(entity_pairs))})
    service = store.get_feature_service(FEATURE_SERVICE)
    offline = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    offline = offline.sort_values("row").reset_index(drop=True)  # the offline store may reorder rows
    online = store.get_online_features(
        features=service,
        entity_rows=[{"user_id": u, "item_id": i, "request_ts": end, "device": d}
                     for (u, i), d in zip(entity_pairs, devices, strict=True)]).to_df()  # input order
    if len(offline) != len(online):
        raise ServingError(f"skew check: {len(online)} online rows but {len(offline)} offline rows")
    names = [c for c in online.columns if c in offline.columns and c not in ("request_ts", "event_timestamp")]
    mismatches = []
    for name in names:
        for pos in range(len(online)):
            a, b = online.at[pos, name], offline.at[pos, name]
            if not _same(a, b):
                mismatches.append({"user_id": int(online.at[pos, "user_id"]), "item_id": int(online.at[pos, "item_id"]),
                                   "feature": name, "online": _plain(a), "offline": _plain(b)})
    log.info("skew check at %s: %d entity rows x %d features, %d mismatches", end.isoformat(), len(online),
             len(names), len(mismatches))
    report = SkewReport(end, len(online), len(names), mismatches)
    if mismatches and raise_on_mismatch:
        first = mismatches[0]
        raise SkewFound(f"training/serving skew: {len(mismatches)} mismatching values, e.g. {first['feature']} for "
                        f"user {first['user_id']} item {first['item_id']}: online {first['online']!r} vs offline "
                        f"{first['offline']!r}")
    return report


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, np.ndarray)) or isinstance(b, (list, np.ndarray)):
        if a is None or b is None or (not isinstance(a, (list, np.ndarray))) or (not isinstance(b, (list, np.ndarray))):
            return _is_null(a) and _is_null(b)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if _is_null(a) or _is_null(b):
        return _is_null(a) and _is_null(b)
    if isinstance(a, (datetime, pd.Timestamp)) or isinstance(b, (datetime, pd.Timestamp)):
        return pd.Timestamp(a) == pd.Timestamp(b)
    if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
        return bool(np.isclose(float(a), float(b), rtol=1e-6, atol=1e-9))
    return a == b


def _is_null(v: Any) -> bool:
    if v is None or v is pd.NaT:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False
