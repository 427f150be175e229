"""The incremental update of the statistics: snapshot days [a, b] from those days' events, the stored tiles and the
lifetime state (`feedstore.ingestion.stats.tiles`), with the same rows and values as a full recompute.

**What a run reads.** The validated interactions of days a..b only (their tiles are recomputed), the stored tiles of
days a - (longest window) .. (newest processed day s), the state (lifetime sums as of s), and the users and items
tables (ids, birth days, attributes). Window sums for day D are sums of the tiles of D - w + 1 .. D; lifetime sums
start from the state minus the tiles after the sweep's first day. The daily run (a = b = s + 1) therefore reads one
day of events and 31 days of tiles, whatever the history's length. An active-days view (user x item: one state row
per pair ever seen) keeps its state log-structured instead: a base snapshot as of a day c plus the stored tiles
after c; the run looks up in DuckDB only the pairs active in the days it writes (a semi-join with the base and
those tiles) and writes only a small state naming the base, except when the tiles after c reach the longest
window or late data changed a tile the base includes: then a new base is written (compaction; in daily runs, at
most one run per longest-window days).

**Late or corrected data.** If the recomputed tiles of a day D' <= s differ from the stored ones, every later row
that could change is rewritten: days D'..s (windows through D' + the longest window, lifetime values up to s).
Recomputing a day whose tiles did not change rewrites just that day (idempotent). A run for a day after s + 1 also
writes the days between (expiry and heartbeat rows with no activity; their events, if any arrive later, are late
data). **No trusted state** (first run, a spec with new tiles, a crash between publish steps): the tiles of every
validated day are rebuilt from the events once, then the run proceeds as above.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedstore.core import duck
from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import offline_schema
from feedstore.core.errors import InputDataError
from feedstore.core.io import ParquetWriters, write_stats_parquet
from feedstore.core.progress import Progress
from feedstore.core.spec import FEATURE_SPEC, FeatureSpec, ViewSpec
from feedstore.ingestion.stats import tiles
from feedstore.ingestion.stats.compute import (
    EPOCH,
    StagedStats,
    _Activity,
    _load_entities,
    _load_events,
    _part,
    _snapshot_table,
    _sql_path,
    _sweep,
    _tile_sums,
    _write_pair_base,
)

log = logging.getLogger(__name__)

Tiles = dict[int, tuple[dict[str, np.ndarray], np.ndarray]]  # day -> (keys, (columns, rows) values)


@dataclass
class _ViewTiles:
    """One view's tiles as this run sees them: recomputed from events (`new`), as stored (`stored`, days <= s)."""

    view: ViewSpec
    names: list[str]
    new: Tiles
    stored: Tiles
    state: tiles.State | None
    differs: list[int]  # days of `new` whose tiles differ from the stored ones (absent = no activity)

    def at(self, day: int, lo: int, hi: int):
        """The tiles of `day` this run uses: recomputed inside [lo, hi], stored elsewhere."""
        return self.new.get(day) if lo <= day <= hi else self.stored.get(day)


def _same(x, y) -> bool:
    if x is None or y is None:
        return (x is None or x[1].shape[1] == 0) and (y is None or y[1].shape[1] == 0)
    return all(np.array_equal(x[0][k], y[0][k]) for k in x[0]) and np.array_equal(x[1], y[1])


def _split_days(t: dict[str, np.ndarray], keys: tuple[str, ...], names: list[str]) -> Tiles:
    """A (d, keys, tiles) result sorted by d into {day: (keys, values)}."""
    d = t["d"].astype(np.int64)
    out: Tiles = {}
    if not len(d):
        return out
    bounds = np.flatnonzero(np.diff(d)) + 1
    values = np.stack([t[n].astype(np.int64) for n in names])
    for a, b in zip([0, *bounds], [*bounds, len(d)], strict=True):
        out[int(d[a])] = ({k: t[k][a:b].astype(np.int64) for k in keys}, values[:, a:b])
    return out


def update_stats(cfg: PipelineConfig, start: date, end: date | None = None,
                 spec: FeatureSpec = FEATURE_SPEC, *, compact_after: int | None = None) -> StagedStats:
    """Snapshot days [start, end] (default end: the last validated day) of every view, staged for the gate, plus
    the days late data makes stale; the tiles and states it changed are staged with them. `compact_after`: an
    active-days view's base snapshot is rewritten once the tiles after it span that many days (default: the
    spec's longest window, so a daily run reads no tile older than the windows need)."""
    t0 = time.perf_counter()
    cat = Catalog(cfg.data_dir)
    inter = cat.source(spec.source)
    for p in (inter, cat.validated_users, cat.validated_items):
        if not p.exists():
            raise InputDataError(f"{p}: not found (run `feedstore validate` first)")
    n_cat = cfg.generation.preferences.categories
    parts = {tiles.day_no(d): sorted(p.glob("*.parquet")) for d, p in Catalog.day_partitions(inter).items()}
    parts = {d: f for d, f in sorted(parts.items()) if f}
    if not parts:
        raise InputDataError(f"{inter}: no validated interactions")
    a = tiles.day_no(start)
    b = tiles.day_no(end) if end else max(list(parts)[-1], a)
    if b < a:
        raise InputDataError(f"snapshot range is empty: end {end} is before start {start}")

    # the stored state, trusted only if every view's state covers the same day, was built by this spec, names
    # exactly the tile partitions on disk and (active-days views) a base snapshot that is there
    states = {v.name: tiles.read_state(cat.tile_state(v.name), v) for v in spec.views}
    disk = {v.name: tiles.listing(cat.tiles(v.name)) for v in spec.views}
    trusted = all(
        st is not None and st.spec == tiles.fingerprint(v, n_cat)
        and st.tokens == {d: tiles.token_of(p) for d, p in disk[v.name].items()}
        and (v.rows != "active_days" or (st.base is not None and st.base_as_of <= st.as_of  # type: ignore[operator]
                                         and (cat.tile_bases(v.name) / st.base).is_file()))
        for v, st in ((v, states[v.name]) for v in spec.views)) and len({st.as_of for st in states.values()}) == 1
    if compact_after is None:
        compact_after = max((w for v in spec.views for w in v.window_shifts), default=30)
    if trusted:
        s = next(iter(states.values())).as_of
        ev_lo, ev_hi = a, b
    else:
        ev_lo, ev_hi = min(next(iter(parts)), a), max(list(parts)[-1], b)
        s = ev_hi
        log.warning("no usable incremental state under %s (first run, a new spec or an interrupted publish): "
                    "building the tiles of every validated day (%s..%s) from the events once",
                    cat.intermediate, tiles.day_str(ev_lo), tiles.day_str(ev_hi))
    files = [str(f) for d, fs in parts.items() if ev_lo <= d <= ev_hi for f in fs]
    start_w = min(a, s + 1)

    workers = os.cpu_count() or 1
    con = duck.connect(threads=workers)
    try:
        _load_events(con, cat, files or [str(next(iter(parts.values()))[0])], tiles_date(ev_lo), tiles_date(ev_hi))
        if not files:
            con.execute("DELETE FROM ev")
    except duckdb.Error as e:
        raise InputDataError(f"{inter}: cannot read validated interactions ({str(e).splitlines()[0]})") from None

    views: dict[str, _ViewTiles] = {}
    with Progress(2 * len(spec.views), "stats (incremental)", unit="steps (tiles, rows per view)",
                  logger=log) as progress:  # closed on every exit: its heartbeat never outlives a failed run
        for view in spec.views:
            progress.step = f"{view.name} tiles"
            sums, names, _ = _tile_sums(view, n_cat)
            keys = ", ".join(view.keys)
            new = _split_days(con.execute(f"SELECT d, {keys}, {', '.join(sums)} FROM ev GROUP BY d, {keys} "
                                          f"ORDER BY d, {keys}").fetchnumpy(), view.keys, names)
            if trusted:
                first = start_w - max(view.window_shifts, default=0)
                stored = {d: tiles.read_tiles(p, view.keys, names) for d, p in disk[view.name].items() if d >= first}
                state = states[view.name]
            else:  # the rebuilt tiles are the stored ones; the state is their sum (active-days views: from the events)
                stored = new
                state = _sum_state(view, new, s, n_cat) if view.rows == "change_points" else None
            differs = [d for d in range(a, b + 1) if not trusted or not _same(new.get(d), stored.get(d))]
            views[view.name] = _ViewTiles(view, names, new, stored, state, differs)
            progress.update()
        late = trusted and any(d <= s for vt in views.values() for d in vt.differs)
        end_w = max(b, s) if late else b
        if late:
            log.info("late or corrected data: the tiles of %s changed, rewriting snapshot days %s..%s",
                     ", ".join(sorted({tiles.day_str(d) for vt in views.values() for d in vt.differs if d <= s})),
                     tiles.day_str(start_w), tiles.day_str(end_w))

        version = cat.publication("stats").begin()  # a new version of offline/, switched to in one step at publish
        staged = Catalog.staged(version.path)  # its intermediate/ sits outside offline/, where Feast's globs read
        stage = staged.offline
        origin_day = (cfg.generation.start - EPOCH).days
        tables = {"users": cat.validated_users, "items": cat.validated_items}
        rows: dict[str, int] = {}
        tile_days: dict[str, list[str] | None] = {}
        try:
            stage.mkdir()
            writer = ParquetWriters(workers, write_stats_parquet)
            try:
                for vt in views.values():
                    view = vt.view
                    progress.step = f"{view.name} rows"
                    # the tiles this run (re)computed and the new state
                    write = sorted(vt.new) if not trusted else vt.differs
                    tokens = {} if not trusted else dict(vt.state.tokens)
                    for d in write:
                        tokens.pop(d, None)
                        if d in vt.new and vt.new[d][1].shape[1]:
                            tokens[d] = tiles.new_token()
                            writer.write(f"tiles:{view.name}", tiles.tiles_table(vt.new[d][0], vt.names, vt.new[d][1]),
                                         tiles.tile_file(staged.tiles(view.name), d, tokens[d]))
                    tile_days[view.name] = None if not trusted else [tiles.day_str(d) for d in write]
                    if view.rows == "change_points":
                        state = _change_points(cfg, con, vt, start_w, end_w, a, b, s, staged, writer, tables,
                                               origin_day, n_cat)
                    else:
                        state = _active_days(con, vt, start_w, end_w, a, b, s, staged, n_cat, cat.tile_bases(view.name),
                                             disk[view.name] if trusted else {}, compact_after)
                    if not trusted and view.rows == "change_points":
                        state = vt.state
                    if state is not None:
                        state.tokens, state.spec = tokens, tiles.fingerprint(view, n_cat)
                        tiles.write_state(state, view, staged.tile_state(view.name))
                    progress.update()
            finally:
                writer.close()
            rows = {v: n for v, n in writer.rows.items() if not v.startswith("tiles:")}
            for v in (v for v in spec.views if v.rows == "active_days"):
                rows[v.name] = sum(pq.ParquetFile(f).metadata.num_rows for f in staged.view(v.name).rglob("*.parquet"))
            days = [tiles.day_str(d) for d in range(start_w, end_w + 1)]
        except BaseException:
            version.discard()
            raise
    seconds = time.perf_counter() - t0
    log.info("stats updated incrementally for %d snapshot days (%s..%s; events of %s..%s, state as of %s) in "
             "%.2f s: %s", len(days), days[0], days[-1], tiles.day_str(ev_lo), tiles.day_str(ev_hi),
             tiles.day_str(s) if trusted else "none", seconds,
             ", ".join(f"{v.name} {rows.get(v.name, 0):,} rows" for v in spec.views))
    changed = [d for vt in views.values() for d in vt.differs if d <= s] if trusted else [ev_lo]
    return StagedStats(stage, cat.offline, days, rows, seconds, [v.name for v in spec.views], cat.root, tile_days,
                       version, late_from=tiles.day_str(min(changed)) if changed else None)


def tiles_date(day: int) -> date:
    return EPOCH + timedelta(days=day)


def _sum_state(view: ViewSpec, days: Tiles, as_of: int, categories: int) -> tiles.State:
    """The lifetime state as of `as_of`: the sum of every day's plain tiles per key."""
    narrow = len(tiles.lifetime_names(view))
    if not days:
        return tiles.State(as_of, {k: np.zeros(0, np.int64) for k in view.keys}, np.zeros((narrow, 0), np.int64))
    keys = {k: np.concatenate([t[0][k] for t in days.values()]) for k in view.keys}
    values = np.concatenate([t[1][:narrow] for t in days.values()], axis=1)
    uniq, inverse = np.unique(np.stack([keys[k] for k in view.keys]), axis=1, return_inverse=True)
    out = np.zeros((narrow, uniq.shape[1]), np.int64)
    np.add.at(out.T, inverse.ravel(), values.T)
    return tiles.State(as_of, {k: uniq[i] for i, k in enumerate(view.keys)}, out)


def _positions(ids: np.ndarray, known: np.ndarray, what: str) -> np.ndarray:
    """Positions of `ids` in the sorted entity ids `known`; an id missing there is an error."""
    pos = np.minimum(np.searchsorted(known, ids), max(len(known) - 1, 0))
    bad = known[pos] != ids if len(known) else np.ones(len(ids), bool)
    if bad.any():
        raise InputDataError(f"{what}: {int(bad.sum())} ids are not in the validated entity table (e.g. "
                             f"{int(ids[bad][0])}); rebuild with a full `feedstore stats`")
    return pos


def _change_points(cfg: PipelineConfig, con: duckdb.DuckDBPyConnection, vt: _ViewTiles, start_w: int, end_w: int,
                   a: int, b: int, s: int, staged: Catalog, writer: ParquetWriters, tables: dict[str, Path],
                   origin_day: int, categories: int) -> tiles.State | None:
    """Rows of days start_w..end_w of a change-point view from tiles; the new state if the run reaches s."""
    view, key = vt.view, vt.view.keys[0]
    ents, attrs = _load_entities(con, view, tables[view.entity_table], origin_day)
    names = vt.names
    narrow = len(tiles.lifetime_names(view))
    index = {n: i for i, n in enumerate(names)}
    first = start_w - max(view.window_shifts, default=0)
    # lifetime sums as of first - 1: the state minus every stored tile from `first` on
    lifetime = np.zeros((narrow, len(ents.ids)), np.int64)
    lifetime[:, _positions(vt.state.keys[key], ents.ids, f"{view.name} state")] = vt.state.values
    for d, (k, v) in vt.stored.items():
        if d >= first:
            np.subtract.at(lifetime.T, _positions(k[key], ents.ids, f"{view.name} tiles"), v[:narrow].T)
    day, pos, vals = [], [], []
    for d in range(first, end_w + 1):
        t = vt.at(d, a, b)
        if t is not None and t[1].shape[1]:
            day.append(np.full(t[1].shape[1], d, np.int32))
            pos.append(_positions(t[0][key], ents.ids, f"{view.name} tiles"))
            vals.append(t[1])
    act = _Activity(np.concatenate(day) if day else np.zeros(0, np.int32),
                    np.concatenate(pos) if pos else np.zeros(0, np.int64),
                    np.concatenate(vals, axis=1) if vals else np.zeros((len(names), 0), np.int64))
    schema = offline_schema(view)
    wide = tuple(f.window for f in view.distributions())
    final: dict = {}
    for snap in _sweep(ents, act, start_w, end_w, view.window_shifts, view.heartbeat_days, narrow, wide,
                       lifetime=lifetime, final=final):
        writer.write(view.name, _snapshot_table(view, ents, attrs, snap, index, categories, schema),
                     _part(staged, view.name, snap.day))
    if end_w < s:
        return None
    return tiles.State(end_w, {key: ents.ids}, final[None][:narrow])


def _active_days(con: duckdb.DuckDBPyConnection, vt: _ViewTiles, start_w: int, end_w: int, a: int, b: int, s: int,
                 staged: Catalog, categories: int, bases: Path, files: dict[int, Path],
                 compact_after: int) -> tiles.State | None:
    """Rows of days start_w..end_w of an active-days view (each key's running lifetime sums on its active days),
    in DuckDB; the new state if the run reaches s (or if there was no trusted state).

    The lifetime sums before start_w are needed only for the keys active in the rows written: a semi-join of those
    keys with the base snapshot (as of c, under `bases`) plus the stored tiles of c + 1 .. start_w - 1, or minus
    those of start_w .. c (`files`: the stored tiles, those the state includes). Nothing of the base is read into
    Python and the base is not rewritten, unless the tiles after c reach `compact_after` days or late data changed
    a tile of a day <= c: then a new base as of end_w is written (compaction), in DuckDB. Without a trusted state
    (`vt.state` None; the events of every validated day are loaded), the sums come from the events, and the base is
    written from them as of s."""
    view = vt.view
    keys = ", ".join(view.keys)
    narrow = tiles.lifetime_names(view)

    def frame(days: Tiles, lo: int, hi: int) -> pa.Table:
        chosen = [(d, t) for d, t in sorted(days.items()) if lo <= d <= hi and t[1].shape[1]]
        cols = {"d": pa.array(np.concatenate([np.full(t[1].shape[1], d, np.int64) for d, t in chosen])
                              if chosen else np.zeros(0, np.int64))}
        for k in view.keys:
            cols[k] = pa.array(np.concatenate([t[0][k] for _, t in chosen]) if chosen else np.zeros(0, np.int64))
        for i, n in enumerate(vt.names):
            cols[n] = pa.array(np.concatenate([t[1][i] for _, t in chosen]) if chosen else np.zeros(0, np.int64))
        return pa.table(cols)

    def read(paths: list[Path]) -> str:
        return "read_parquet([{}], hive_partitioning = false)".format(", ".join(f"'{_sql_path(p)}'" for p in paths))

    act = pa.concat_tables([frame(vt.new, a, b),
                            frame({d: t for d, t in vt.stored.items() if not a <= d <= b}, start_w, end_w)])
    con.register("st_act", act)
    sums = ", ".join(f"CAST(sum(\"{n}\") AS BIGINT) AS \"{n}\"" for n in narrow)
    neg = ", ".join(f"-\"{n}\" AS \"{n}\"" for n in narrow)
    cols = ", ".join(f'"{n}"' for n in narrow)
    sql, _, plain = _tile_sums(view, categories)
    from_events = f"SELECT {keys}, {', '.join(sql[:plain])} FROM ev"
    state = vt.state
    if state is None:  # lifetime sums before start_w, from the events
        c, parts = start_w - 1, [f"{from_events} WHERE d < {start_w} GROUP BY {keys}"]
    else:  # the base as of c, plus (minus) the stored tiles after it (after start_w - 1)
        c = state.base_as_of
        parts = [f"SELECT {keys}, {cols} FROM {read([bases / state.base])}"]
        plus = [p for d, p in sorted(files.items()) if c < d < start_w]
        minus = [p for d, p in sorted(files.items()) if start_w <= d <= c]
        parts += [f"SELECT {keys}, {cols} FROM {read(plus)}"] if plus else []
        parts += [f"SELECT {keys}, {neg} FROM {read(minus)}"] if minus else []
    con.execute(f"CREATE OR REPLACE TEMP TABLE st_keys AS SELECT DISTINCT {keys} FROM st_act")
    semi = " UNION ALL ".join(f"SELECT * FROM ({q}) SEMI JOIN st_keys USING ({keys})" for q in parts)
    con.execute(f"CREATE OR REPLACE TEMP TABLE st_base AS SELECT {keys}, {sums} FROM ({semi}) GROUP BY {keys}")
    outputs = ", ".join(f"CAST(coalesce(b.\"{f.of}\", 0) + sum(x.\"{f.of}\") OVER w AS BIGINT) AS "
                        f"\"{view.column_name(f, None)}\"" for f in view.features)
    out = staged.view(view.name)
    if act.num_rows:
        con.execute(f"""COPY (
            SELECT {', '.join('x.' + k for k in view.keys)},
                   CAST(DATE '1970-01-01' + CAST(x.d AS INTEGER) + 1 AS TIMESTAMPTZ) AS event_timestamp, {outputs},
                   strftime(DATE '1970-01-01' + CAST(x.d AS INTEGER), '%Y-%m-%d') AS date
            FROM st_act x LEFT JOIN st_base b USING ({keys})
            WINDOW w AS (PARTITION BY {', '.join('x.' + k for k in view.keys)} ORDER BY x.d
                         ROWS UNBOUNDED PRECEDING)
            ORDER BY date, {', '.join('x.' + k for k in view.keys)}
        ) TO '{_sql_path(out)}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date),
                                 FILENAME_PATTERN 'part-{{i}}')""")
    base = tiles.new_base_name()
    if state is None:  # the first base: every loaded event (days through s)
        n = _write_pair_base(con, view, f"{from_events} GROUP BY {keys}", staged.tile_bases(view.name) / base)
        log.info("%s: base snapshot as of %s written from the events (%d keys)", view.name, tiles.day_str(s), n)
        return tiles.State.of_base(view, s, base, s)
    if end_w < s:
        return None
    late_before_c = [d for d in vt.differs if d <= c]
    if not late_before_c and end_w - c < compact_after:
        return tiles.State.of_base(view, end_w, state.base, c)  # the same base: tiles c + 1 .. end_w after it
    # compaction: the lifetime sums of every key as of end_w (before start_w, plus the rows this run sums)
    query = f"SELECT {keys}, {sums} FROM ({' UNION ALL '.join([*parts, f'SELECT {keys}, {cols} FROM st_act'])}) " \
            f"GROUP BY {keys}"
    n = _write_pair_base(con, view, query, staged.tile_bases(view.name) / base)
    log.info("%s: base snapshot compacted as of %s (%d keys; %s)", view.name, tiles.day_str(end_w), n,
             f"late data changed tiles of {tiles.day_str(min(late_before_c))}.. it included" if late_before_c
             else f"the tiles after the base of {tiles.day_str(c)} reached {end_w - c} days")
    return tiles.State.of_base(view, end_w, base, end_w)
