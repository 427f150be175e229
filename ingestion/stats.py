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

**How.** DuckDB aggregates events into per-(entity, day) sums; one sweep over the days then keeps each entity's
running sum per window (add the day, subtract the day leaving the window) and gathers the rows due that day:
per-day vectorized work on (entities x columns) arrays, no entity x day grid, no loop over rows. Each day's rows
are written as that day's Parquet partition on a writer thread while the sweep goes on. Every sum is over
integers (dwell in milliseconds), so results are exact and bit-for-bit reproducible whatever the data layout.
Recomputing day D rewrites only `date=D` partitions.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedstore import duck
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


# ------------------------------------------------------------------------------------------ sweep

EPOCH = date(1970, 1, 1)
BASE = ("n", "c", "l", "s", "dw")  # per-day sums: impressions, clicks, likes, shares, dwell (integer ms)


@dataclass(frozen=True)
class _Entities:
    """One kind of entity, in id order: row `i` of every per-entity array is entity `ids[i]`."""

    ids: np.ndarray  # int64, sorted
    birth_day: np.ndarray  # int32 day number of signup / publication
    first_row_day: np.ndarray  # int32: the day it gets its first row, max(birth, generation.start)

    def born_by(self, day: int) -> np.ndarray:
        """Positions of every entity existing on `day` (for heartbeat rows)."""
        return self._by_birth[: np.searchsorted(self._birth_sorted, day, side="right")]

    def first_rows_on(self, day: int) -> np.ndarray:
        a, b = np.searchsorted(self._first_sorted, [day, day + 1])
        return self._by_first[a:b]

    def __post_init__(self) -> None:
        for name, days in (("birth", self.birth_day), ("first", self.first_row_day)):
            order = np.argsort(days, kind="stable")
            object.__setattr__(self, f"_by_{name}", order)
            object.__setattr__(self, f"_{name}_sorted", days[order])


@dataclass(frozen=True)
class _Activity:
    """Per-day sums of one kind of entity, sorted by (day, entity position)."""

    day: np.ndarray  # int32 day number
    pos: np.ndarray  # int64 entity position
    values: np.ndarray  # (columns, rows) int64: BASE, then per-category clicks for users

    def __post_init__(self) -> None:
        first, last = (int(self.day[0]), int(self.day[-1])) if len(self.day) else (0, -1)
        object.__setattr__(self, "_first", first)  # rows of day d: _bounds[d - first] .. _bounds[d - first + 1]
        object.__setattr__(self, "_bounds", np.searchsorted(self.day, np.arange(first, last + 2)).tolist())

    def on(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        i = day - self._first
        if i < 0 or i + 1 >= len(self._bounds):
            return self.pos[:0], self.values[:, :0]
        a, b = self._bounds[i], self._bounds[i + 1]
        return self.pos[a:b], self.values[:, a:b]


@dataclass
class _Snapshot:
    """The rows of one snapshot day: entity positions and the sums over each window (None = lifetime)."""

    day: int
    pos: np.ndarray
    sums: dict[int | None, np.ndarray]  # window -> (columns, rows) int64


def _sweep(ents: _Entities, act: _Activity, lo: int, hi: int, shifts: list[int], heartbeat: int,
           wide: int | None = None) -> Iterator[_Snapshot]:
    """Walk the days once, keeping each entity's running sum per window; yield the rows of days lo..hi.

    Per day: add the day's activity to every window, subtract the activity that leaves each w-day window
    (day - w), then emit a row for every entity whose value changed (active today, or activity left a window)
    plus first rows and heartbeat rows. The state is (entities x columns) per window: small and cache-resident,
    so the per-day work is a handful of vectorized scatters and gathers, never a loop over rows.
    Sums are kept column-major ((columns, entities)); only window `wide` keeps the columns after BASE.
    """
    n_ent, width = len(ents.ids), act.values.shape[0]
    cols = {w: width if w == wide else len(BASE) for w in [None, *shifts]}
    sums = {w: np.zeros((k, n_ent), np.int64) for w, k in cols.items()}
    mark = np.zeros(n_ent, bool)  # entities getting a row today
    first = min(lo, int(act.day[0])) if len(act.day) else lo
    for day in range(first, hi + 1):
        pos, vals = act.on(day)
        changed = [pos]
        for w, state in sums.items():
            state[:, pos] += vals[: cols[w]]
            if w is not None:
                gone, gone_vals = act.on(day - w)
                state[:, gone] -= gone_vals[: cols[w]]
                changed.append(gone)
        if day < lo:
            continue
        changed.append(ents.first_rows_on(day))
        if day % heartbeat == 0:  # day numbers count from 1970-01-01, so heartbeats do not depend on lo
            changed.append(ents.born_by(day))
        for part in changed:
            mark[part] = True
        rows = np.flatnonzero(mark)
        mark[rows] = False
        rows = rows[ents.birth_day[rows] <= day]  # never a row before the entity exists
        yield _Snapshot(day, rows, {w: state[:, rows] for w, state in sums.items()})


def _windowed_columns(prefix: str, snap: _Snapshot, windows: list[int], cfg: PipelineConfig) -> dict[str, np.ndarray]:
    """Counts, dwell means, smoothed CTRs (and log popularity for items) of every window, by contract name."""
    f = cfg.features
    alpha, beta = f.ctr_prior_mean * f.ctr_prior_strength, (1 - f.ctr_prior_mean) * f.ctr_prior_strength
    cols = {}
    for w, wn in zip([*windows, None], window_names(windows), strict=True):
        n, c, likes, s, dw = snap.sums[w][: len(BASE)]
        cols |= {f"{prefix}_impressions_{wn}": n, f"{prefix}_clicks_{wn}": c, f"{prefix}_likes_{wn}": likes,
                 f"{prefix}_shares_{wn}": s,
                 f"{prefix}_dwell_mean_{wn}": dw / (1000.0 * np.maximum(c, 1)),  # 0 when there is no click
                 f"{prefix}_ctr_smoothed_{wn}": (c + alpha) / (n + (alpha + beta))}
        if prefix == "item":
            cols[f"item_log_popularity_{wn}"] = np.log1p(n)
    return cols


class _DayWriter:
    """Writes one Parquet file per day partition on a small thread pool (Parquet encoding releases the GIL),
    with a bounded number of files in flight so memory stays bounded whatever the history length."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stats-writer")
        self._slots = threading.BoundedSemaphore(4 * workers)
        self._futures: list = []
        self.rows: dict[str, int] = {}

    def write(self, view: str, table: pa.Table, path: Path) -> None:
        self._slots.acquire()
        self.rows[view] = self.rows.get(view, 0) + table.num_rows

        def job() -> None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # not feedstore.io.PARQUET_OPTIONS: its zstd level 3 made `feedstore stats` 0.4-1 s slower (measured);
                # no dictionary encoding: it costs ~20% of the write time and saves ~5% of the size here
                pq.write_table(table, path, compression="zstd", use_dictionary=False)
            finally:
                self._slots.release()

        self._futures.append(self._pool.submit(job))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for fut in self._futures:
            fut.result()  # re-raise the first write error


def _part(stage: Path, view: str, day: int) -> Path:
    return stage / view / f"date={EPOCH + timedelta(days=day)}" / "part-0.parquet"


def _stamp(day: int, rows: int) -> pa.Array:
    """`event_timestamp` of a snapshot row for `day`: the midnight ending it."""
    return pa.array(np.full(rows, (day + 1) * 86_400_000_000, np.int64), TIMESTAMP)


# ------------------------------------------------------------------------------------------ compute


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
    workers = os.cpu_count() or 1
    con = duck.connect(threads=workers)
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
    origin = cfg.generation.start  # the pipeline's first day: every entity existing by then gets a row on it

    # entity tables in id order (a row's position is its index in every per-entity array)
    day_no = "(({c})::DATE - DATE '1970-01-01')::INTEGER"
    con.execute(f"""CREATE TABLE users AS
        SELECT user_id, (row_number() OVER (ORDER BY user_id) - 1)::BIGINT AS pos, {day_no.format(c='signup_date')}
               AS birth, epoch_us(date_trunc('second', signup_date)) AS signup_us
        FROM read_parquet('{vdir / 'users.parquet'}') ORDER BY user_id""")
    con.execute(f"""CREATE TABLE items AS
        SELECT item_id, (row_number() OVER (ORDER BY item_id) - 1)::BIGINT AS pos, {day_no.format(c='creation_date')}
               AS birth, epoch_us(date_trunc('second', creation_date)) AS creation_us, category::INTEGER AS category
        FROM read_parquet('{vdir / 'items.parquet'}') ORDER BY item_id""")
    con.execute(f"""CREATE TABLE ev AS
        SELECT e.user_id, e.item_id, {day_no.format(c='e.event_timestamp')} AS d, e.click, e."like", e.share,
               -- dwell in integer milliseconds: sums are then exact and independent of summation order (a
               -- parallel SUM of doubles is not, and features must be bit-for-bit reproducible)
               CASE WHEN e.click = 1 THEN round(e.dwell_time * 1000)::BIGINT ELSE 0 END AS dw, i.category
        FROM read_parquet('{glob}', hive_partitioning = false) e JOIN items i USING (item_id)
        WHERE e.event_timestamp::DATE <= $hi""", {"hi": hi})
    sums = ('count(*)::BIGINT AS n, sum(click)::BIGINT AS c, sum("like")::BIGINT AS l, sum(share)::BIGINT AS s, '
            'sum(dw)::BIGINT AS dw')
    cat_sums = "".join(f", sum(click * (category = {k})::INT)::BIGINT AS k{k}" for k in range(n_cat))

    def entities(table: str, key: str) -> tuple[_Entities, dict[str, np.ndarray]]:
        t = con.execute(f"SELECT * EXCLUDE (pos) FROM {table} ORDER BY pos").fetchnumpy()
        birth = t.pop("birth").astype(np.int32)
        ids = t.pop(key).astype(np.int64)
        return _Entities(ids, birth, np.maximum(birth, (origin - EPOCH).days).astype(np.int32)), t

    def activity(table: str, key: str, extra: str) -> _Activity:
        t = con.execute(f"SELECT d, pos, {sums}{extra} FROM ev JOIN {table} USING ({key}) "
                        f"GROUP BY d, pos ORDER BY d, pos").fetchnumpy()
        return _Activity(t.pop("d").astype(np.int32), t.pop("pos").astype(np.int64),
                         np.stack([v.astype(np.int64) for v in t.values()]))

    stage = offline_dir(data_dir) / f".stats-staging-{uuid.uuid4().hex[:8]}"
    stage.mkdir(parents=True)
    lo_n, hi_n = (lo - EPOCH).days, (hi - EPOCH).days
    shifts = sorted({*windows, f.affinity_window_days})
    contract = schemas(cfg)
    try:
        # user x item pairs: DuckDB writes them on another thread while the sweeps run (it releases the GIL)
        side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stats-pairs")
        pairs = side.submit(_write_pairs, con.cursor(), stage / USER_ITEM_VIEW, lo, hi)
        writer = _DayWriter(workers)
        try:
            users, user_attrs = entities("users", "user_id")
            items, item_attrs = entities("items", "item_id")
            aw, a = f.affinity_window_days, f.affinity_pseudo_clicks
            for snap in _sweep(users, activity("users", "user_id", cat_sums), lo_n, hi_n, shifts,
                               f.heartbeat_days, wide=aw):
                k = snap.sums[aw]
                clicks = k[BASE.index("c")]
                affinity = ((k[len(BASE):] + a) / (clicks + a * n_cat)).T.astype(np.float32)
                table = pa.table({
                    "user_id": users.ids[snap.pos], "event_timestamp": _stamp(snap.day, len(snap.pos)),
                    **_windowed_columns("user", snap, windows, cfg),
                    "user_category_affinity": pa.FixedSizeListArray.from_arrays(pa.array(affinity.ravel()), n_cat)
                    .cast(pa.list_(pa.float32())),
                    "user_signup_timestamp": pa.array(user_attrs["signup_us"][snap.pos], TIMESTAMP),
                }, schema=contract[USER_VIEW])
                writer.write(USER_VIEW, table, _part(stage, USER_VIEW, snap.day))
            for snap in _sweep(items, activity("items", "item_id", ""), lo_n, hi_n, shifts, f.heartbeat_days):
                table = pa.table({
                    "item_id": items.ids[snap.pos], "event_timestamp": _stamp(snap.day, len(snap.pos)),
                    **_windowed_columns("item", snap, windows, cfg),
                    "item_category": item_attrs["category"][snap.pos],
                    "item_creation_timestamp": pa.array(item_attrs["creation_us"][snap.pos], TIMESTAMP),
                }, schema=contract[ITEM_VIEW])
                writer.write(ITEM_VIEW, table, _part(stage, ITEM_VIEW, snap.day))
        finally:
            writer.close()
            side.shutdown(wait=True)
        pairs.result()  # re-raise a failure of the pairs query
        rows = {**writer.rows, USER_ITEM_VIEW: _check_written(stage / USER_ITEM_VIEW, contract[USER_ITEM_VIEW])}
        days = [(lo + timedelta(days=i)).isoformat() for i in range((hi - lo).days + 1)]
        if validate:
            from ingestion.stats_validation import validate_stats

            validate_stats(cfg, stage, days)
        _publish(data_dir, stage, days)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    seconds = time.perf_counter() - t0
    log.info("stats for %d snapshot days (%s..%s) in %.2f s: %s -> %s", len(days), lo, hi, seconds,
             ", ".join(f"{v} {rows.get(v, 0):,} rows" for v in VIEWS), offline_dir(data_dir))
    return StatsSummary(rows, days, seconds, offline_dir(data_dir))


def _write_pairs(con: duckdb.DuckDBPyConnection, out: Path, lo: date, hi: date) -> None:
    """user x item rows: running totals of the pair on each day it was active."""
    con.execute(f"""COPY (
        SELECT user_id, item_id, (DATE '1970-01-01' + d + 1)::TIMESTAMPTZ AS event_timestamp,
               (sum(n) OVER w)::BIGINT AS user_item_impressions, (sum(c) OVER w)::BIGINT AS user_item_clicks,
               strftime(DATE '1970-01-01' + d, '%Y-%m-%d') AS date
        FROM (SELECT user_id, item_id, d, count(*) AS n, sum(click) AS c FROM ev GROUP BY ALL)
        WINDOW w AS (PARTITION BY user_id, item_id ORDER BY d ROWS UNBOUNDED PRECEDING)
        QUALIFY DATE '1970-01-01' + d BETWEEN DATE '{lo}' AND DATE '{hi}'
        ORDER BY date, user_id, item_id
    ) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date), FILENAME_PATTERN 'part-{{i}}')""")


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
