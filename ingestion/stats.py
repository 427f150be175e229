"""Timestamped user, item and user x item statistics: offline Parquet sources for Feast, point-in-time by construction.

**The contract.** A row for day D is stamped ``event_timestamp = D + 1 day, 00:00 UTC`` (the end of the day it
covers) and aggregates only events with ``event_timestamp <`` that stamp, i.e. events on days <= D. A window of
w days at that row covers days D - w + 1 .. D. A point-in-time join picks, for an event at time t, the latest
row stamped <= t, so features never see the event itself or anything after it (they lag by up to one day:
the statistics are daily batch features).

**Rows are written when a value can change, plus a heartbeat.** For each user and item: on every day with
activity, on the day an activity day leaves each window (so windows fall back to 0 instead of going stale), on
the day the entity appears (signup / publication, or the pipeline's first day `generation.start` for entities
that existed before it), and every `heartbeat_days` days (anchored on 1970-01-01). These rules do not depend on
which days are being computed, so recomputing one day gives exactly what a full run gives for it.
Between two rows nothing changes, so the feature views' ttl only needs to cover the heartbeat
(``ttl = heartbeat_days + 1 day``). User x item rows are written on the days the pair is active (ttl 30 days).
Ages (days since signup / publication) are not stored: on-demand views compute them from the stored timestamps
at request time, so they are exact at any moment. Stored timestamps are truncated to whole seconds, because
Feast keeps UnixTimestamp features at second resolution online (milliseconds offline would be training/serving
skew; `feedstore check-skew` found exactly that).

Windows are differences of per-entity cumulative sums, looked up with DuckDB ASOF joins: no dense
entity x day grid, no Python loop. Every sum is over integers (dwell in milliseconds), so results are exact and
bit-for-bit reproducible whatever the data layout. Recomputing day D rewrites only `date=D` partitions.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from feedstore.config import PipelineConfig
from feedstore.errors import InputDataError
from feedstore.io import replace_dir

log = logging.getLogger(__name__)

USER_VIEW = "user_daily_stats"
ITEM_VIEW = "item_daily_stats"
USER_ITEM_VIEW = "user_item_daily_stats"
VIEWS = (USER_VIEW, ITEM_VIEW, USER_ITEM_VIEW)
USER_ITEM_TTL_DAYS = 30
COUNTS = ("impressions", "clicks", "likes", "shares")
TIMESTAMP = pa.timestamp("us", tz="UTC")


def window_names(windows: list[int]) -> list[str]:
    return [f"{w}d" for w in windows] + ["lifetime"]


def offline_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "offline"


def view_dir(data_dir: Path, view: str) -> Path:
    return offline_dir(data_dir) / view


def _windowed_fields(prefix: str, windows: list[int]) -> list[pa.Field]:
    fields = []
    for wn in window_names(windows):
        fields += [pa.field(f"{prefix}_{m}_{wn}", pa.int64()) for m in COUNTS]
        fields += [pa.field(f"{prefix}_dwell_mean_{wn}", pa.float64()),
                   pa.field(f"{prefix}_ctr_smoothed_{wn}", pa.float64())]
        if prefix == "item":
            fields.append(pa.field(f"item_log_popularity_{wn}", pa.float64()))
    return fields


def schemas(cfg: PipelineConfig) -> dict[str, pa.Schema]:
    """The offline tables' contract (the Feast views in feature_repo/ mirror it; a test keeps them equal)."""
    w = cfg.features.windows_days
    return {
        USER_VIEW: pa.schema([
            pa.field("user_id", pa.int64()), pa.field("event_timestamp", TIMESTAMP),
            *_windowed_fields("user", w),
            pa.field("user_category_affinity", pa.list_(pa.float32())),
            pa.field("user_signup_timestamp", TIMESTAMP),
        ]),
        ITEM_VIEW: pa.schema([
            pa.field("item_id", pa.int64()), pa.field("event_timestamp", TIMESTAMP),
            *_windowed_fields("item", w),
            pa.field("item_category", pa.int32()),
            pa.field("item_creation_timestamp", TIMESTAMP),
        ]),
        USER_ITEM_VIEW: pa.schema([
            pa.field("user_id", pa.int64()), pa.field("item_id", pa.int64()), pa.field("event_timestamp", TIMESTAMP),
            pa.field("user_item_impressions", pa.int64()), pa.field("user_item_clicks", pa.int64()),
        ]),
    }


# ------------------------------------------------------------------------------------------ SQL


def _cumulative_sql(name: str, key: str, extra: list[str]) -> str:
    sums = ", ".join(f"sum({c}) OVER w AS cum_{c}" for c in ["n", "c", "l", "s", "dw", *extra])
    return (f"CREATE TEMP TABLE {name}_cum AS SELECT {key}, d, {sums} FROM {name}_daily "
            f"WINDOW w AS (PARTITION BY {key} ORDER BY d ROWS UNBOUNDED PRECEDING)")


def _points_sql(name: str, key: str, entity_table: str, entity_day: str, shifts: list[int], heartbeat: int,
                origin: date) -> str:
    expiry = "\n".join(f"UNION SELECT {key}, d + {s} FROM {name}_daily" for s in shifts)
    return f"""
        CREATE TEMP TABLE {name}_points AS
        SELECT * FROM (
            SELECT {key}, d AS snap FROM {name}_daily
            {expiry}
            UNION SELECT e.{key}, days.snap FROM {entity_table} e JOIN days ON days.snap >= e.{entity_day}
                  WHERE (days.snap - DATE '1970-01-01') % {heartbeat} = 0
                     OR days.snap = greatest(e.{entity_day}, DATE '{origin.isoformat()}')
        ) WHERE snap BETWEEN $lo AND $hi
    """


def _window_select(prefix: str, key: str, windows: list[int], cfg: PipelineConfig) -> tuple[str, str]:
    """(select list, ASOF joins) for windowed counts, dwell means and smoothed CTRs."""
    f = cfg.features
    alpha, beta = f.ctr_prior_mean * f.ctr_prior_strength, (1 - f.ctr_prior_mean) * f.ctr_prior_strength
    joins = [f"ASOF LEFT JOIN {prefix}_cum now ON p.{key} = now.{key} AND p.snap >= now.d"]
    cols = []
    for w, wn in zip([*windows, None], window_names(windows), strict=True):
        if w is None:
            val = lambda c: f"coalesce(now.cum_{c}, 0)"  # noqa: E731
        else:
            joins.append(f"ASOF LEFT JOIN {prefix}_cum w{w} ON p.{key} = w{w}.{key} AND p.snap - {w} >= w{w}.d")
            val = lambda c, w=w: f"(coalesce(now.cum_{c}, 0) - coalesce(w{w}.cum_{c}, 0))"  # noqa: E731
        n, c, likes, s, dw = (val(x) for x in ("n", "c", "l", "s", "dw"))
        cols += [f"{n}::BIGINT AS {prefix}_impressions_{wn}", f"{c}::BIGINT AS {prefix}_clicks_{wn}",
                 f"{likes}::BIGINT AS {prefix}_likes_{wn}", f"{s}::BIGINT AS {prefix}_shares_{wn}",
                 f"CASE WHEN {c} > 0 THEN {dw} / (1000.0 * {c}) ELSE 0.0 END AS {prefix}_dwell_mean_{wn}",
                 f"({c} + {alpha!r}) / ({n} + {alpha + beta!r}) AS {prefix}_ctr_smoothed_{wn}"]
        if prefix == "item":
            cols.append(f"ln(1 + {n}) AS item_log_popularity_{wn}")
    return ",\n".join(cols), "\n".join(joins)


@dataclass(frozen=True)
class StatsSummary:
    rows: dict[str, int]
    days: list[str]
    seconds: float
    out_dir: Path


def compute_stats(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None,
                  validate: bool = True) -> StatsSummary:
    """Compute the three offline tables for snapshot days [start, end] (default: the validated data's days)."""
    from ingestion.validate import validated_dir

    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir)
    vdir = validated_dir(data_dir)
    inter = vdir / "interactions"
    for p in (inter, vdir / "users.parquet", vdir / "items.parquet"):
        if not p.exists():
            raise InputDataError(f"{p}: not found (run `feedstore validate` first)")
    f = cfg.features
    windows = f.windows_days
    n_cat = cfg.generation.preferences.categories
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET threads = {os.cpu_count() or 1}")
    glob = str(inter / "**" / "*.parquet")
    try:
        first, last = con.execute(
            f"SELECT min(event_timestamp)::DATE, max(event_timestamp)::DATE "
            f"FROM read_parquet('{glob}', hive_partitioning = false)").fetchone()
    except duckdb.Error as e:
        raise InputDataError(f"{inter}: cannot read validated interactions ({str(e).splitlines()[0]})") from None
    if first is None:
        raise InputDataError(f"{inter}: no validated interactions")
    lo, hi = start or first, end or last
    if hi < lo:
        raise InputDataError(f"snapshot range is empty: end {hi} is before start {lo}")
    params = {"lo": lo, "hi": hi}

    con.execute(f"""CREATE TEMP TABLE users AS SELECT user_id, signup_date, signup_date::DATE AS day
                    FROM read_parquet('{vdir / 'users.parquet'}')""")
    con.execute(f"""CREATE TEMP TABLE items AS SELECT item_id, category, creation_date, creation_date::DATE AS day
                    FROM read_parquet('{vdir / 'items.parquet'}')""")
    con.execute(f"""CREATE TEMP TABLE ev AS
        SELECT e.user_id, e.item_id, e.event_timestamp::DATE AS d, e.click, e."like", e.share,
               -- dwell in integer milliseconds: sums are then exact and independent of summation order (a
               -- parallel SUM of doubles is not, and features must be bit-for-bit reproducible)
               CASE WHEN e.click = 1 THEN round(e.dwell_time * 1000)::BIGINT ELSE 0 END AS dw, i.category
        FROM read_parquet('{glob}', hive_partitioning = false) e JOIN items i USING (item_id)
        WHERE e.event_timestamp::DATE <= $hi""", {"hi": hi})
    con.execute("CREATE TEMP TABLE days AS SELECT range::DATE AS snap FROM range($lo::DATE, $hi::DATE + 1, "
                "INTERVAL 1 DAY)", params)
    base = 'count(*) AS n, sum(click) AS c, sum("like") AS l, sum(share) AS s, sum(dw) AS dw'
    cats = [f"k{k}" for k in range(n_cat)]
    cat_sums = ", ".join(f"sum(click * (category = {k})::INT) AS k{k}" for k in range(n_cat))
    con.execute(f"CREATE TEMP TABLE user_daily AS SELECT user_id, d, {base}, {cat_sums} FROM ev GROUP BY ALL")
    con.execute(f"CREATE TEMP TABLE item_daily AS SELECT item_id, d, {base} FROM ev GROUP BY ALL")
    con.execute(_cumulative_sql("user", "user_id", cats))
    con.execute(_cumulative_sql("item", "item_id", []))
    shifts = sorted({*windows, f.affinity_window_days})
    origin = cfg.generation.start  # the pipeline's first day: every entity existing by then gets a row on it
    con.execute(_points_sql("user", "user_id", "users", "day", shifts, f.heartbeat_days, origin), params)
    con.execute(_points_sql("item", "item_id", "items", "day", shifts, f.heartbeat_days, origin), params)

    stage = offline_dir(data_dir) / f".stats-staging-{uuid.uuid4().hex[:8]}"
    stage.mkdir(parents=True)
    rows: dict[str, int] = {}
    try:
        # users: windows, affinity over `affinity_window_days`, signup time
        sel, joins = _window_select("user", "user_id", windows, cfg)
        aw, a = f.affinity_window_days, f.affinity_pseudo_clicks
        aff_join = "" if aw in windows else (
            f"ASOF LEFT JOIN user_cum w{aw} ON p.user_id = w{aw}.user_id AND p.snap - {aw} >= w{aw}.d")
        clicks_aw = f"(coalesce(now.cum_c, 0) - coalesce(w{aw}.cum_c, 0))"
        affinity = "list_value(" + ", ".join(
            f"((coalesce(now.cum_k{k}, 0) - coalesce(w{aw}.cum_k{k}, 0) + {a!r}) / ({clicks_aw} + {a * n_cat!r}))"
            f"::FLOAT" for k in range(n_cat)) + ")"
        user_sql = f"""
            SELECT p.user_id, (p.snap + 1)::TIMESTAMPTZ AS event_timestamp, {sel},
                   {affinity} AS user_category_affinity, date_trunc('second', u.signup_date) AS user_signup_timestamp,
                   strftime(p.snap, '%Y-%m-%d') AS date
            FROM user_points p JOIN users u USING (user_id) {joins} {aff_join}
            ORDER BY date, p.user_id"""
        sel, joins = _window_select("item", "item_id", windows, cfg)
        item_sql = f"""
            SELECT p.item_id, (p.snap + 1)::TIMESTAMPTZ AS event_timestamp, {sel},
                   i.category::INTEGER AS item_category,
                   date_trunc('second', i.creation_date) AS item_creation_timestamp,
                   strftime(p.snap, '%Y-%m-%d') AS date
            FROM item_points p JOIN items i USING (item_id) {joins}
            ORDER BY date, p.item_id"""
        pair_sql = f"""
            SELECT user_id, item_id, (d + 1)::TIMESTAMPTZ AS event_timestamp,
                   (sum(n) OVER w)::BIGINT AS user_item_impressions, (sum(c) OVER w)::BIGINT AS user_item_clicks,
                   strftime(d, '%Y-%m-%d') AS date
            FROM (SELECT user_id, item_id, d, count(*) AS n, sum(click) AS c FROM ev GROUP BY ALL)
            WINDOW w AS (PARTITION BY user_id, item_id ORDER BY d ROWS UNBOUNDED PRECEDING)
            QUALIFY d BETWEEN DATE '{lo}' AND DATE '{hi}'
            ORDER BY date, user_id, item_id"""
        contract = schemas(cfg)
        for view, sql in ((USER_VIEW, user_sql), (ITEM_VIEW, item_sql), (USER_ITEM_VIEW, pair_sql)):
            out = stage / view
            con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date), "
                        f"FILENAME_PATTERN 'part-{{i}}')")
            rows[view] = _check_written(out, contract[view])
        days = [d.isoformat() for d in (r[0] for r in con.execute("SELECT snap FROM days ORDER BY 1").fetchall())]
        if validate:
            from ingestion.stats_validation import validate_stats

            validate_stats(cfg, stage, days)
        _publish(data_dir, stage, days)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    seconds = time.perf_counter() - t0
    log.info("stats for %d snapshot days (%s..%s) in %.2f s: %s -> %s", len(days), lo, hi, seconds,
             ", ".join(f"{v} {n:,} rows" for v, n in rows.items()), offline_dir(data_dir))
    return StatsSummary(rows, days, seconds, offline_dir(data_dir))


def _check_written(out: Path, schema: pa.Schema) -> int:
    """Every written file has exactly the contract's schema; return the row count."""
    import pyarrow.parquet as pq

    total = 0
    for part in out.rglob("*.parquet"):
        actual = pq.read_schema(part).remove_metadata()
        if [(f.name, _normal(f.type)) for f in actual] != [(f.name, _normal(f.type)) for f in schema]:
            diff = {f"{f.name}: {f.type}" for f in actual} ^ {f"{f.name}: {f.type}" for f in schema}
            raise AssertionError(f"{part}: schema differs from the contract: {sorted(diff)}")  # a bug, not input
        total += pq.ParquetFile(part).metadata.num_rows
    return total


def _normal(t: pa.DataType) -> str:
    """Type identity ignoring list item names (DuckDB writes 'element', Arrow defaults to 'item')."""
    return f"list<{t.value_type}>" if pa.types.is_list(t) else str(t)


def _publish(data_dir: Path, stage: Path, days: list[str]) -> None:
    """Replace each computed day's partition of each view (days with no rows lose their old partition)."""
    for view in VIEWS:
        for day in days:
            staged = stage / view / f"date={day}"
            replace_dir(staged if staged.exists() else None, view_dir(data_dir, view) / f"date={day}")
