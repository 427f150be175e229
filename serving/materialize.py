"""materialize: the latest features into the online store, writing only the entities whose values changed, never
rolling it back.

**What a daily run writes.** The statistics write a row only when a value can change (activity, a window expiry,
the day an entity appears, a heartbeat). So after the online store caught up at P (the view's newest
materialization end in Feast's registry), the entities whose online values differ at `end` are exactly those with
a row stamped in (P, end]. Each view is therefore materialized over [P + 1 s, end] through Feast's own
`store.materialize` (any batch engine, the fast one included, sees an ordinary interval): Feast writes each
entity's latest row in that interval, which is its latest row overall; every other entity already holds, online,
the row a full [end - ttl, end] load would write. Late data is the exception: if a `stats` run changed the values of
a day already served (the statistics' change log, `Catalog.stats_changes`, says from which day), a changed row may
also have disappeared (an expiry row of removed activity), and only a full load writes every entity's now-latest
row; so that view is loaded over [end - ttl, end], as it is without a previous materialization, after a gap longer
than the ttl, or with `force`. `feast materialize-incremental` keeps working: it loads (P, end] (it does not know
about late data)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.errors import ConfigError
from feedstore.core.feast_repo import feature_store
from feedstore.core.progress import Progress
from feedstore.core.spec import FEATURE_SPEC
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
    rewritten, seq = _rewritten_since(cfg, online_store)
    entities, seconds = {}, {}
    views = sorted(store.list_feature_views(), key=lambda v: v.name)
    with Progress(len(views), f"materialize into {online_store}", unit="views", logger=log) as progress:
        for fv in views:
            t0 = time.perf_counter()
            progress.step = fv.name  # a view is one Feast call: the log's heartbeat names it while it runs
            start = end - fv.ttl
            last = max((e for _, e in fv.materialization_intervals or []), default=None)
            # incremental unless late data changed rows already served (a changed row may also have disappeared,
            # so only a full load writes each entity's now-latest row)
            if (last is not None and not force and end - fv.ttl <= last <= end
                    and (rewritten is None or rewritten > last)):
                start = max(start, last.astimezone(timezone.utc) + timedelta(seconds=1))  # rows stamped at midnight
            if start > end:
                entities[fv.name], seconds[fv.name] = 0, 0.0
                log.info("materialized %s: nothing changed since %s", fv.name, last.isoformat())
                progress.update()
                continue
            _quietly(store.materialize, start_date=start, end_date=end, feature_views=[fv.name])
            seconds[fv.name] = time.perf_counter() - t0
            entities[fv.name] = _count_latest(cfg, fv.name, start, end)
            log.info("materialized %s over [%s, %s]: %s entities written (%s) in %.1f s (%s/s) into %s", fv.name,
                     start.isoformat(), end.isoformat(), f"{entities[fv.name]:,}",
                     "every entity in the ttl window" if start == end - fv.ttl else "the ones that changed",
                     seconds[fv.name], f"{entities[fv.name] / max(seconds[fv.name], 1e-9):,.0f}", online_store)
            progress.update()
    if seq:
        from feedstore.core.io import write_json

        write_json({"seq": seq}, Catalog(cfg.data_dir).changes_materialized(online_store))
    return MaterializeResult(end, entities, seconds)


def _rewritten_since(cfg: PipelineConfig, online_store: str) -> tuple[datetime | None, int]:
    """(the stamp of the earliest snapshot day whose values a `stats` run changed after computing it before (late
    data), since this online store last caught up, or None; the newest change-log entry)."""
    cat = Catalog(cfg.data_dir)
    try:
        runs = json.loads(cat.stats_changes.read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return None, 0
    try:
        done = json.loads(cat.changes_materialized(online_store).read_text())["seq"]
    except (OSError, ValueError, KeyError):
        done = 0
    late = [r["late"] for r in runs if r["seq"] > done and r.get("late")]
    newest = runs[-1]["seq"] if runs else 0
    if not late:
        return None, newest
    return datetime.fromisoformat(min(late)).replace(tzinfo=timezone.utc) + timedelta(days=1), newest


def _count_latest(cfg: PipelineConfig, view: str, start: datetime, end: datetime) -> int:
    import duckdb

    keys = ", ".join(FEATURE_SPEC.view(view).keys)
    glob = Catalog(cfg.data_dir).view_glob(view)
    return duckdb.execute(f"SELECT count(DISTINCT ({keys})) FROM read_parquet($glob, hive_partitioning = false) "
                          "WHERE event_timestamp BETWEEN $s AND $e", {"glob": str(glob), "s": start, "e": end}
                          ).fetchone()[0]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _quietly(fn, *args, **kwargs):
    """Run a Feast call with its console output (a coloured banner, tqdm bars) captured: what it said goes to the
    DEBUG log without ANSI codes, so a redirected log or an Airflow task log holds no escape sequences."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return fn(*args, **kwargs)
    finally:
        for line in (out.getvalue() + err.getvalue()).splitlines():
            line = _ANSI.sub("", line).strip()
            if line:
                log.debug("feast: %s", line)
