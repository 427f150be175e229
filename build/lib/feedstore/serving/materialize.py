"""materialize: the latest features of every entity into the online store (each view over [end - ttl, end]),
never rolling it back."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.errors import ConfigError
from feedstore.core.feast_repo import feature_store
from feedstore.serving.store import latest_materialized, latest_snapshot

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class MaterializeResult:
    end: datetime
    entities: dict[str, int]
    seconds: dict[str, float]


def materialize_online(cfg: PipelineConfig, online_store: str | None = None, end: datetime | None = None,
                       force: bool = False) -> MaterializeResult:
    """Stage `materialize`: load the latest row of every entity into the online store: each view over [end - its ttl,
    end].

    A backfill never rolls the online store back: if the registry records a materialization newer than `end`,
    nothing is written (online stores overwrite whatever they are given, so an older day would leave a mix of
    times online) unless `force`."""
    online_store = online_store or cfg.serving.online_store
    store = feature_store(cfg, online_store)
    newest_data = latest_snapshot(cfg)
    if end is not None and end > newest_data + timedelta(days=1):
        raise ConfigError(f"--end {end.isoformat()} is after the newest offline snapshot ({newest_data.isoformat()}): "
                          "there is nothing to materialize there, and recording it would block later runs")
    end = end or newest_data
    newest = latest_materialized(store)
    if newest is not None and end < newest and not force:
        log.warning("online store already reflects %s, later than %s: not materializing (a backfill must not roll "
                    "it back; use --force to do so anyway)", newest.isoformat(), end.isoformat())
        return MaterializeResult(end, {}, {})
    entities, seconds = {}, {}
    for fv in sorted(store.list_feature_views(), key=lambda v: v.name):
        t0 = time.perf_counter()
        store.materialize(start_date=end - fv.ttl, end_date=end, feature_views=[fv.name])
        seconds[fv.name] = time.perf_counter() - t0
        entities[fv.name] = _count_latest(cfg, fv.name, end - fv.ttl, end)
        log.info("materialized %s: %s entities in %.1f s (%s/s) into %s", fv.name, f"{entities[fv.name]:,}",
                 seconds[fv.name], f"{entities[fv.name] / max(seconds[fv.name], 1e-9):,.0f}", online_store)
    return MaterializeResult(end, entities, seconds)


def _count_latest(cfg: PipelineConfig, view: str, start: datetime, end: datetime) -> int:
    import duckdb

    keys = "user_id, item_id" if view == "user_item_daily_stats" else ("user_id" if view.startswith("user") else
                                                                         "item_id")
    glob = Catalog(cfg.data_dir).view_glob(view)
    return duckdb.execute(f"SELECT count(DISTINCT ({keys})) FROM read_parquet($glob, hive_partitioning = false) "
                          "WHERE event_timestamp BETWEEN $s AND $e", {"glob": str(glob), "s": start, "e": end}
                          ).fetchone()[0]
