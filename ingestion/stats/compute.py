"""Timestamped statistics compiled from the feature spec (`feedstore.core.spec`), on DuckDB + numpy.

**The contract.** A row for day D is stamped ``event_timestamp = D + 1 day, 00:00 UTC`` (the end of the day it
covers) and aggregates only events with ``event_timestamp <`` that stamp, i.e. events on days <= D. A window of
w days at that row covers days D - w + 1 .. D. A point-in-time join picks, for an event at time t, the latest
row stamped <= t, so features never see the event itself or anything after it (they lag by up to one day:
the statistics are daily batch features).

**Rows** follow each view's row policy (see `ViewSpec`): change points + heartbeat for users and items (on every
day with activity, on the day an activity day leaves each window, on the day the entity appears (signup /
publication, or the pipeline's first day `generation.start` for entities that existed before it), and every
`heartbeat_days` days anchored on 1970-01-01), active days for user x item pairs. These rules do not depend on
which days are being computed, so recomputing one day gives exactly what a full run gives for it.
Ages are not stored: on-demand views compute them from the stored timestamps at request time.

**How.** DuckDB sums each view's tiles (the spec's per-(entity, day) partial aggregates) per entity and day; one
sweep over the days then keeps each entity's running sum per window (add the day, subtract the day leaving the
window) and gathers the rows due that day: per-day vectorized work on (entities x tiles) arrays, no entity x day
grid, no loop over rows. Derived features (means, smoothed rates, log popularity, distributions) are computed
from the sums by the spec's formulas. Each day's rows are written as that day's Parquet partition on a writer
thread while the sweep goes on. Every sum is over integers, so results are exact and bit-for-bit reproducible.

The result is staged (`StagedStats`): the runner runs the gate on it, then publishes; recomputing day D
rewrites only `date=D` partitions.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedstore.core import duck
from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import DAY_US, TIMESTAMP, offline_schema
from feedstore.core.errors import InputDataError
from feedstore.core.io import (
    ParquetWriters,
    VersionStage,
    link_tree,
    replace_dir,
    write_stats_parquet,
)
from feedstore.core.progress import Progress
from feedstore.core.spec import FEATURE_SPEC, FeatureSpec, ViewSpec
from feedstore.ingestion.stats import tiles

log = logging.getLogger(__name__)

EPOCH = date(1970, 1, 1)
_DAY_NO = "(CAST(({c}) AS DATE) - DATE '1970-01-01')::INTEGER"


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


def _sweep(ents: _Entities, act: _Activity, lo: int, hi: int, shifts: tuple[int, ...], heartbeat: int,
           narrow: int, wide: tuple[int, ...] = (), lifetime: np.ndarray | None = None,
           final: dict | None = None) -> Iterator[_Snapshot]:
    """Walk the days once, keeping each entity's running sum per window; yield the rows of days lo..hi.

    Per day: add the day's activity to every window, subtract the activity that leaves each w-day window
    (day - w), then emit a row for every entity whose value changed (active today, or activity left a window)
    plus first rows and heartbeat rows. The state is (entities x columns) per window: small and cache-resident,
    so the per-day work is a handful of vectorized scatters and gathers, never a loop over rows.
    Sums are kept column-major ((columns, entities)); every window keeps the first `narrow` columns (the plain
    tiles), only the windows in `wide` also keep the per-category columns after them.
    `lifetime`: the lifetime sums before the first activity day given (the incremental run's state; default 0);
    `final`, if given, receives the sums as of `hi` (`final[None]`: the lifetime state).
    """
    n_ent, width = len(ents.ids), act.values.shape[0]
    cols = {w: width if w in wide else narrow for w in [None, *shifts]}
    sums = {w: np.zeros((k, n_ent), np.int64) for w, k in cols.items()}
    if lifetime is not None:
        sums[None][:] = lifetime
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
    if final is not None:
        final.update(sums)


def _part(staged: Catalog, view: str, day: int) -> Path:
    return staged.view(view) / Catalog.partition((EPOCH + timedelta(days=day)).isoformat()) / "part-0.parquet"


def _stamp(day: int, rows: int) -> pa.Array:
    """`event_timestamp` of a snapshot row for `day`: the midnight ending it."""
    return pa.array(np.full(rows, (day + 1) * DAY_US, np.int64), TIMESTAMP)


# ------------------------------------------------------------------------------------------ compute


def _tile_sums(view: ViewSpec, categories: int) -> tuple[list[str], list[str], int]:
    """SQL select items of the view's tiles (plain tiles first, then per-category ones), their column names, and
    how many are plain."""
    plain = [t for t in view.tiles if not t.per_category]
    wide = [t for t in view.tiles if t.per_category]
    sql = [f"CAST(sum({t.sql}) AS BIGINT) AS \"{t.name}\"" for t in plain]
    names = [t.name for t in plain]
    for t in wide:
        sql += [f"CAST(sum(({t.sql}) * CAST(category = {k} AS INTEGER)) AS BIGINT) AS \"{t.name}_{k}\""
                for k in range(categories)]
        names += [f"{t.name}_{k}" for k in range(categories)]
    return sql, names, len(plain)


def _feature_columns(view: ViewSpec, snap: _Snapshot, index: dict[str, int], categories: int) -> dict[str, object]:
    """Every feature column of `view` for one snapshot, from the window sums, by the spec's formulas."""
    cols: dict[str, object] = {}
    for f, w, name in view.windowed():
        sums = snap.sums[w]
        x = sums[index[f.of]]
        if f.kind == "count":
            cols[name] = x
        elif f.kind == "mean":  # 0 when there is nothing to divide by
            cols[name] = x / (f.divisor * np.maximum(sums[index[f.per]], 1))
        elif f.kind == "beta_rate":
            a = f.prior_mean * f.prior_strength
            b = (1 - f.prior_mean) * f.prior_strength
            cols[name] = (x + a) / (sums[index[f.per]] + (a + b))
        elif f.kind == "log1p":
            cols[name] = np.log1p(x)
        else:  # pragma: no cover - ViewSpec validates kinds
            raise ValueError(f"{view.name}.{f.name}: unsupported kind {f.kind}")
    for f in view.distributions():
        sums = snap.sums[f.window]
        first = index[f"{f.of}_0"]
        per, k = sums[index[f.per]], sums[first: first + categories]
        dist = ((k + f.pseudo) / (per + f.pseudo * categories)).T.astype(np.float32)
        cols[f.name] = pa.FixedSizeListArray.from_arrays(pa.array(dist.ravel()), categories).cast(
            pa.list_(pa.float32()))
    return cols


@dataclass
class StagedStats:
    """Computed, unpublished statistics: `root` (inside `version`, a new version of `offline/`, see
    feedstore.core.io.Publication) holds `<view>/date=D/` for every computed day, and `intermediate` the tiles and
    states the run wrote. `publish()` carries the other days over from the published version and switches
    `offline/` to the new one in one atomic step; then the tiles, then the states (a state names the tiles it
    includes, and an active-days view's state the base snapshot it builds on, moved in before it under a new name,
    so a crash between the steps is detected by the next run). Leaving the `with` block without
    publishing drops the version."""

    root: Path
    offline: Path
    days: list[str]
    rows: dict[str, int]
    seconds: float
    views: list[str]
    data_dir: Path
    tile_days: dict[str, list[str] | None]  # None: the view's whole tile table
    version: VersionStage
    late_from: str | None = None  # the first already-computed day whose values may have changed (late data)
    published: bool = field(default=False)

    @property
    def staged(self) -> Catalog:
        """The version's layout (its path changes when it is published): its `intermediate` sits outside the
        offline/ version, since nothing hidden may sit where Feast's source globs read."""
        return Catalog.staged(self.version.path)

    def publish(self) -> None:
        """Publish: each computed day's partitions replace the old ones (days with no rows lose theirs), every other
        day is kept; then the tile partitions and states the run computed."""
        current = self.version.publication.published("offline")
        if current is not None:
            recomputed = {Catalog.partition(d) for d in self.days}
            link_tree(current, self.root, skip=lambda rel: len(rel.parts) >= 2 and rel.parts[1] in recomputed)
        self.version.publish()  # readers see the whole old offline/ or the whole new one
        cat = Catalog(self.data_dir)
        # the old tile partitions are set aside, hidden; the next stats run removes them on a background thread
        for view, days in self.tile_days.items():
            staged_tiles = self.staged.tiles(view)
            if days is None:
                replace_dir(staged_tiles if staged_tiles.exists() else None, cat.tiles(view), keep_old=True)
                continue
            for day in days:
                part = staged_tiles / Catalog.partition(day)
                replace_dir(part if part.exists() else None, cat.tiles(view) / Catalog.partition(day), keep_old=True)
        for view in self.views:
            staged_bases = self.staged.tile_bases(view)
            for base in sorted(staged_bases.glob("base-*.parquet")) if staged_bases.is_dir() else []:
                cat.tile_bases(view).mkdir(parents=True, exist_ok=True)
                os.replace(base, cat.tile_bases(view) / base.name)  # a new name: the published state's base stays
            state = self.staged.tile_state(view)
            if state.exists():
                cat.tile_state(view).parent.mkdir(parents=True, exist_ok=True)
                os.replace(state, cat.tile_state(view))
            tiles.prune_bases(cat.tile_bases(view), cat.tile_state(view))  # bases no state names
        _log_change(cat, self.days, self.late_from)
        shutil.rmtree(self.staged.intermediate, ignore_errors=True)
        self.published = True
        log.info("stats published for %d days (%s..%s): %s -> %s", len(self.days), self.days[0], self.days[-1],
                 ", ".join(f"{v} {self.rows.get(v, 0):,} rows" for v in self.views), self.offline)

    def discard(self) -> None:
        self.version.discard()

    def __enter__(self) -> StagedStats:
        return self

    def __exit__(self, *exc) -> None:
        if not self.published:
            self.discard()


def _log_change(cat: Catalog, days: list[str], late_from: str | None) -> None:
    """Append the rewritten snapshot days, and the first one whose values may have changed (late data), to the
    change log materialization reads (the newest 1,000 runs)."""
    import json

    from feedstore.core.io import write_json

    try:
        doc = json.loads(cat.stats_changes.read_text())
    except (OSError, ValueError):
        doc = {"runs": []}
    seq = (doc["runs"][-1]["seq"] + 1) if doc["runs"] else 1
    doc["runs"] = [*doc["runs"][-999:], {"seq": seq, "first": days[0], "last": days[-1], "late": late_from}]
    write_json(doc, cat.stats_changes)


def _load_entities(con: duckdb.DuckDBPyConnection, view: ViewSpec, table: Path,
                   origin_day: int) -> tuple[_Entities, dict[str, np.ndarray]]:
    """Every entity of a change-point view in id order, its birth and first-row days, and its attributes; also
    creates the DuckDB table `<entity>_pos` (id -> position)."""
    key = view.keys[0]
    born = view.born()
    attrs = [f"epoch_us(date_trunc('second', {a.column})) AS \"{a.name}\"" if a.transform == "second"
             else f"{a.column} AS \"{a.name}\"" for a in view.attributes]
    t = con.execute(f"""SELECT {key}, {_DAY_NO.format(c=born.column)} AS __birth{''.join(', ' + a for a in attrs)}
                        FROM read_parquet($f) ORDER BY {key}""", {"f": str(table)}).fetchnumpy()
    con.execute(f"CREATE OR REPLACE TABLE {view.entity}_pos AS SELECT {key}, "
                f"CAST(row_number() OVER (ORDER BY {key}) - 1 AS BIGINT) AS pos FROM read_parquet($f)",
                {"f": str(table)})
    birth = t.pop("__birth").astype(np.int32)
    ids = t.pop(key).astype(np.int64)
    return _Entities(ids, birth, np.maximum(birth, origin_day).astype(np.int32)), t


def _load_events(con: duckdb.DuckDBPyConnection, cat: Catalog, files: list[str], lo: date | None, hi: date) -> None:
    """DuckDB tables `item_category` and `ev`: the validated interactions of days lo..hi (lo None: from the first)
    with the item's category and the day number `d`."""
    con.execute("CREATE OR REPLACE TABLE item_category AS SELECT item_id, CAST(category AS INTEGER) AS category "
                "FROM read_parquet($f)", {"f": str(cat.validated_items)})
    con.execute(f"""CREATE OR REPLACE TABLE ev AS
        SELECT e.* EXCLUDE (interaction_id, event_timestamp), {_DAY_NO.format(c='e.event_timestamp')} AS d,
               i.category
        FROM read_parquet($files, hive_partitioning = false) e JOIN item_category i USING (item_id)
        WHERE CAST(e.event_timestamp AS DATE) <= $hi
          AND (CAST($lo AS DATE) IS NULL OR CAST(e.event_timestamp AS DATE) >= $lo)""",
                {"files": files, "hi": hi, "lo": lo})


def _snapshot_table(view: ViewSpec, ents: _Entities, attrs: dict[str, np.ndarray], snap: _Snapshot,
                    index: dict[str, int], categories: int, schema: pa.Schema) -> pa.Table:
    """The offline rows of one snapshot day of a change-point view."""
    return pa.table({
        view.keys[0]: ents.ids[snap.pos], "event_timestamp": _stamp(snap.day, len(snap.pos)),
        **_feature_columns(view, snap, index, categories),
        **{a.name: (pa.array(attrs[a.name][snap.pos], TIMESTAMP) if a.dtype == "timestamp"
                    else attrs[a.name][snap.pos]) for a in view.attributes},
    }, schema=schema)


def compute_stats(cfg: PipelineConfig, *, end: date | None = None, spec: FeatureSpec = FEATURE_SPEC,
                  bar: bool | None = None) -> StagedStats:
    """Stage `stats`, full recompute, staged for the gate (the caller publishes): every view for snapshot days
    [first day of data, `end` (default: the last)], and the tiles and lifetime state rebuilt from the same events.
    (A day range is `feedstore.ingestion.stats.incremental.update_stats`.)"""
    t0 = time.perf_counter()
    cat = Catalog(cfg.data_dir)
    inter = cat.source(spec.source)
    for p in (inter, cat.validated_users, cat.validated_items):
        if not p.exists():
            raise InputDataError(f"{p}: not found (run `feedstore validate` first)")
    n_cat = cfg.generation.preferences.categories
    workers = os.cpu_count() or 1
    con = duck.connect(threads=workers)
    files = [str(Catalog.parquet_glob(inter))]
    try:
        first, last = con.execute("SELECT CAST(min(event_timestamp) AS DATE), CAST(max(event_timestamp) AS DATE) "
                                  "FROM read_parquet($files, hive_partitioning = false)", {"files": files}).fetchone()
    except duckdb.Error as e:
        raise InputDataError(f"{inter}: cannot read validated interactions ({str(e).splitlines()[0]})") from None
    if first is None:
        raise InputDataError(f"{inter}: no validated interactions")
    lo, hi = first, end or last
    if hi < lo:
        raise InputDataError(f"snapshot range is empty: end {hi} is before start {lo}")
    origin_day = (cfg.generation.start - EPOCH).days  # every entity existing by then gets a row on the first day
    tables = {"users": cat.validated_users, "items": cat.validated_items}

    # the events every tile reads: validated interactions through day `hi`, with the item's category and day number
    _load_events(con, cat, files, None, hi)

    def activity(view: ViewSpec, sums: list[str]) -> _Activity:
        t = con.execute(f"SELECT d, pos, {', '.join(sums)} FROM ev JOIN {view.entity}_pos USING ({view.keys[0]}) "
                        f"GROUP BY d, pos ORDER BY d, pos").fetchnumpy()
        return _Activity(t.pop("d").astype(np.int32), t.pop("pos").astype(np.int64),
                         np.stack([v.astype(np.int64) for v in t.values()]))

    version = cat.publication("stats").begin()
    staged = Catalog.staged(version.path)  # its intermediate/ sits outside offline/: moved to the tile store at publish
    stage = staged.offline
    stage.mkdir()
    lo_n, hi_n = (lo - EPOCH).days, (hi - EPOCH).days
    rows: dict[str, int] = {}
    try:
        # active-days views run in DuckDB on a side thread while the sweeps run (DuckDB releases the GIL)
        side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stats-side")
        pending = {v.name: side.submit(_write_active_days, con.cursor(), v, staged.view(v.name), lo, hi)
                   for v in spec.views if v.rows == "active_days"}
        pair_tiles = [side.submit(_stage_pair_intermediates, con.cursor(), v, staged, hi_n, n_cat)
                      for v in spec.views if v.rows == "active_days"]
        writer = ParquetWriters(workers, write_stats_parquet)
        swept = [v for v in spec.views if v.rows == "change_points"]
        progress = Progress(len(swept) * (hi_n - lo_n + 1), "stats", unit="days", bar=bar)
        try:
            for view in swept:
                ents, attrs = _load_entities(con, view, tables[view.entity_table], origin_day)
                sums, names, narrow = _tile_sums(view, n_cat)
                index = {n: i for i, n in enumerate(names)}
                schema = offline_schema(view)
                wide = tuple(f.window for f in view.distributions())
                act = activity(view, sums)
                final: dict = {}
                for snap in _sweep(ents, act, lo_n, hi_n, view.window_shifts, view.heartbeat_days, narrow, wide,
                                   final=final):
                    writer.write(view.name, _snapshot_table(view, ents, attrs, snap, index, n_cat, schema),
                                 _part(staged, view.name, snap.day))
                    progress.update()
                _stage_intermediates(writer, view, ents, act, names, final[None][:narrow], hi_n, n_cat, staged)
        finally:
            progress.close()
            writer.close()
            side.shutdown(wait=True)
        for fut in [*pending.values(), *pair_tiles]:
            fut.result()  # re-raise a failure of a side query
        rows = {**{v: n for v, n in writer.rows.items() if not v.startswith("tiles:")},
                **{v: _check_written(staged.view(v), offline_schema(spec.view(v))) for v in pending}}
        days = [(lo + timedelta(days=i)).isoformat() for i in range((hi - lo).days + 1)]
    except BaseException:
        version.discard()
        raise
    seconds = time.perf_counter() - t0
    log.info("stats computed for %d snapshot days (%s..%s) in %.2f s: %s", len(days), lo, hi, seconds,
             ", ".join(f"{v.name} {rows.get(v.name, 0):,} rows" for v in spec.views))
    return StagedStats(stage, cat.offline, days, rows, seconds, [v.name for v in spec.views], cat.root,
                       {v.name: None for v in spec.views}, version,
                       late_from=days[0])  # a full recompute may change any day


def _stage_intermediates(writer: ParquetWriters, view: ViewSpec, ents: _Entities, act: _Activity, names: list[str],
                         lifetime: np.ndarray, as_of: int, categories: int, staged: Catalog) -> None:
    """A full run's tiles of a change-point view (one partition per active day, from the activity it swept) and
    its lifetime state as of `as_of`."""
    tokens = {}
    bounds = np.flatnonzero(np.diff(act.day)) + 1
    for a, b in zip([0, *bounds], [*bounds, len(act.day)], strict=True):
        if a == b:
            continue
        day, token = int(act.day[a]), tiles.new_token()
        table = tiles.tiles_table({view.keys[0]: ents.ids[act.pos[a:b]]}, names, act.values[:, a:b])
        writer.write(f"tiles:{view.name}", table, tiles.tile_file(staged.tiles(view.name), day, token))
        tokens[day] = token
    tiles.write_state(tiles.State(as_of, {view.keys[0]: ents.ids}, lifetime, tokens,
                                  tiles.fingerprint(view, categories)), view,
                      staged.tile_state(view.name))


def _stage_pair_intermediates(con: duckdb.DuckDBPyConnection, view: ViewSpec, staged: Catalog, as_of: int,
                              categories: int) -> None:
    """A full run's tiles of an active-days view (one partition per day), its base snapshot as of `as_of` and the
    state naming it."""
    sums, names, plain = _tile_sums(view, categories)
    keys = ", ".join(view.keys)
    t = con.sql(f"SELECT d, {keys}, {', '.join(sums)} FROM ev GROUP BY d, {keys} ORDER BY d, {keys}"
                ).to_arrow_table()
    day = t.column("d").to_numpy()
    t = t.drop(["d"])
    tokens = {}
    bounds = np.flatnonzero(np.diff(day)) + 1
    for a, b in zip([0, *bounds], [*bounds, len(day)], strict=True):
        if a == b:
            continue
        token = tiles.new_token()
        write_stats_parquet(t.slice(a, b - a).cast(pa.schema([pa.field(n, pa.int64()) for n in t.column_names])),
                            tiles.tile_file(staged.tiles(view.name), int(day[a]), token))
        tokens[int(day[a])] = token
    base = tiles.new_base_name()
    _write_pair_base(con, view, f"SELECT {keys}, {', '.join(sums[:plain])} FROM ev GROUP BY {keys}",
                     staged.tile_bases(view.name) / base)
    state = tiles.State.of_base(view, as_of, base, as_of)
    state.tokens, state.spec = tokens, tiles.fingerprint(view, categories)
    tiles.write_state(state, view, staged.tile_state(view.name))


def _write_pair_base(con: duckdb.DuckDBPyConnection, view: ViewSpec, query: str, path: Path) -> int:
    """Write an active-days view's base snapshot: `query`'s rows (the keys and the lifetime sums) in key order, from
    DuckDB straight to Parquet; return the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ", ".join(view.keys)
    cols = ", ".join([*view.keys, *(f'CAST("{n}" AS BIGINT) AS "{n}"' for n in tiles.lifetime_names(view))])
    return con.execute(f"COPY (SELECT {cols} FROM ({query}) ORDER BY {keys}) TO '{_sql_path(path)}' "
                       f"(FORMAT parquet, COMPRESSION zstd)").fetchone()[0]


def _write_active_days(con: duckdb.DuckDBPyConnection, view: ViewSpec, out: Path, lo: date, hi: date) -> None:
    """An active-days view: the running lifetime sums of each key on each day it was active."""
    if any(f.kind != "count" for f in view.features):
        raise NotImplementedError(f"{view.name}: active-days views support count features only")
    keys = ", ".join(view.keys)
    tiles = ", ".join(f"CAST(sum({t.sql}) AS BIGINT) AS \"{t.name}\"" for t in view.tiles)
    outputs = ", ".join(f"CAST(sum(\"{f.of}\") OVER w AS BIGINT) AS \"{view.column_name(f, None)}\""
                        for f in view.features)
    # Read in (day, keys) order and write each day's file here, not with COPY ... PARTITION_BY: a partitioned COPY
    # on several threads writes rows (and files) in scheduling order, so two runs gave different bytes.
    reader = con.sql(f"""
        SELECT {keys}, CAST(DATE '1970-01-01' + d + 1 AS TIMESTAMPTZ) AS event_timestamp, {outputs}, d
        FROM (SELECT {keys}, d, {tiles} FROM ev GROUP BY ALL)
        WINDOW w AS (PARTITION BY {keys} ORDER BY d ROWS UNBOUNDED PRECEDING)
        QUALIFY DATE '1970-01-01' + d BETWEEN $lo AND $hi
        ORDER BY d, {keys}""", params={"lo": lo, "hi": hi}).to_arrow_reader(1 << 20)
    schema = offline_schema(view)
    pending: list[pa.RecordBatch] = []

    def flush() -> None:
        if pending:
            day = pending[0].column("d")[0].as_py()
            table = pa.Table.from_batches(pending).drop_columns(["d"]).combine_chunks().cast(schema)
            write_stats_parquet(table, out / Catalog.partition((EPOCH + timedelta(days=day)).isoformat())
                                / "part-0.parquet")
            pending.clear()

    for batch in reader:
        days = batch.column("d").to_numpy()
        cuts = np.flatnonzero(np.diff(days)) + 1
        for a, b in zip([0, *cuts], [*cuts, len(days)], strict=True):
            if pending and pending[0].column("d")[0].as_py() != days[a]:
                flush()
            pending.append(batch.slice(a, b - a))
    flush()


def _check_written(out: Path, schema: pa.Schema) -> int:
    """Every written file has exactly the contract's schema; return the row count."""
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


def _sql_path(path: Path) -> str:
    """A path as a SQL string literal body (COPY ... TO takes no parameter): quotes doubled."""
    return str(path).replace("'", "''")
