"""Incremental statistics (tiles + lifetime state) against a full recompute: a daily run reads only its day's
events and the tiles its windows need, late data rewrites every later row it changes, and any sequence of daily
runs (in order, out of order, repeated) leaves every offline table equal to a full recompute."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feedstore.core.catalog import Catalog
from feedstore.core.spec import FEATURE_SPEC
from feedstore.ingestion.stats import tiles
from feedstore.ingestion.stats.compute import compute_stats
from feedstore.ingestion.stats.incremental import update_stats
from tests.conftest import pipeline_config
from tests.helpers import assert_same_offline

VIEWS = list(FEATURE_SPEC.views)


def _publish(cfg, start=None, end=None):
    """The statistics without the gate (tested elsewhere): a full recompute, or the update of [start, end]."""
    with (compute_stats(cfg, end=end) if start is None else update_stats(cfg, start, end)) as staged:
        staged.publish()
    return staged


def _full_copy(src: Path, dst: Path) -> Path:
    """A copy of `src` with only raw + validated data and a full recompute of the statistics."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("offline", "intermediate"))
    _publish(pipeline_config(dst))
    return dst


def _hold_back(data_dir: Path, after: date, holding: Path) -> None:
    """Move the validated partitions after `after` aside (they "arrive" later)."""
    holding.mkdir()
    for part in Catalog(data_dir).validated_interactions.glob("date=*"):
        if date.fromisoformat(part.name.split("=")[1]) > after:
            shutil.move(part, holding / part.name)


def _arrive(data_dir: Path, holding: Path, day: date) -> None:
    part = holding / f"date={day.isoformat()}"
    if part.exists():
        shutil.move(part, Catalog(data_dir).validated_interactions / part.name)


@pytest.fixture
def base(stats_data, tmp_path) -> Path:
    d = tmp_path / "incr"
    shutil.copytree(stats_data, d)
    return d


def test_full_run_writes_tiles_and_state(base):
    cat = Catalog(base)
    for view in VIEWS:
        assert cat.tile_state(view.name).exists()
        days = sorted(p.name for p in cat.tiles(view.name).glob("date=*"))
        assert days[0] == "date=2024-02-01" and days[-1] == "date=2024-03-31"
    users = pq.read_table(next(cat.tiles("user_daily_stats").glob("date=2024-03-10/*.parquet")))
    # the spec's tiles, not a hand list: every plain tile and one column per category of per-category tiles
    assert users.column_names[:6] == ["user_id", "impressions", "clicks", "likes", "shares", "dwell_ms"]
    assert "category_clicks_0" in users.column_names


def test_corrected_middle_day_rewrites_every_later_row(base, tmp_path):
    """Change the events of a day in the middle, update that day only: every row of every table equals a full
    recompute (windows through the day + 30, lifetime values to the newest day)."""
    day = date(2024, 3, 5)
    part = Catalog(base).validated_interactions / f"date={day}"
    files = sorted(part.glob("*.parquet"))
    table = pq.read_table(files[0])
    ev = table.to_pandas()
    rng = np.random.default_rng(3)
    flip = rng.random(len(ev)) < 0.3
    ev.loc[flip & (ev.click == 0), ["click", "dwell_time"]] = [1, 12.5]
    ev = ev[rng.random(len(ev)) > 0.2]  # drop a fifth
    for f in files:
        f.unlink()
    pq.write_table(pa_table(ev, table.schema), files[0])
    before = {p: p.stat().st_mtime_ns for p in (base / "offline").rglob("*.parquet")}
    staged = _publish(pipeline_config(base), start=day, end=day)
    assert staged.days[0] == day.isoformat() and staged.days[-1] == "2024-03-31"
    assert_same_offline(base, _full_copy(base, tmp_path / "full"))
    untouched = {p for p, t in before.items() if p.exists() and p.stat().st_mtime_ns == t}
    rewritten = {p.parent.name for p in before if p not in untouched}
    assert rewritten and min(rewritten) == f"date={day}"  # earlier days not rewritten


def pa_table(frame: pd.DataFrame, schema):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def test_a_daily_run_reads_only_its_day_and_the_tiles_its_windows_need(base, tmp_path):
    """Full run through Mar 20; then Mar 21 arrives. Remove every older validated partition and every tile older
    than the longest window: the update of Mar 21 still equals a full recompute with all the data."""
    holding = tmp_path / "holding"
    _hold_back(base, date(2024, 3, 20), holding)
    shutil.rmtree(base / "offline")
    shutil.rmtree(base / "intermediate")
    _publish(pipeline_config(base))
    _arrive(base, holding, date(2024, 3, 21))
    reference = _full_copy(base, tmp_path / "full")
    cat = Catalog(base)
    for part in cat.validated_interactions.glob("date=*"):
        if part.name != "date=2024-03-21":
            shutil.move(part, tmp_path / f"old-{part.name}")
    for view in VIEWS:
        for part in cat.tiles(view.name).glob("date=*"):
            if part.name < f"date={date(2024, 3, 21) - timedelta(days=31)}":
                shutil.rmtree(part)
    # the state names the tiles it includes: tell it the old ones are gone on purpose (archived, not lost)
    import json

    import pyarrow.parquet as pq_

    for view in VIEWS:
        path = cat.tile_state(view.name)
        t = pq_.read_table(path)
        meta = json.loads(t.schema.metadata[b"feedstore.tiles"])
        meta["tiles"] = {d: tok for d, tok in meta["tiles"].items() if d >= str(date(2024, 3, 21) - timedelta(31))}
        pq_.write_table(t.replace_schema_metadata({b"feedstore.tiles": json.dumps(meta).encode()}), path)
    staged = _publish(pipeline_config(base), start=date(2024, 3, 21), end=date(2024, 3, 21))
    assert staged.days == ["2024-03-21"]
    for part in (tmp_path).glob("old-date=*"):
        shutil.move(part, cat.validated_interactions / part.name.removeprefix("old-"))
    assert_same_offline(base, reference)


@pytest.mark.parametrize("order", [
    "in_order",
    "out_of_order_and_repeated",
])
def test_any_sequence_of_daily_runs_equals_a_full_recompute(base, tmp_path, order):
    holding = tmp_path / "holding"
    _hold_back(base, date(2024, 3, 14), holding)
    shutil.rmtree(base / "offline")
    shutil.rmtree(base / "intermediate")
    _publish(pipeline_config(base))  # the history so far, as a full run
    days = [date(2024, 3, 15) + timedelta(days=i) for i in range(7)]
    if order != "in_order":
        days = [days[0], days[2], days[1], days[1], days[5], days[3], days[4], days[6], days[2], days[6]]
    cfg = pipeline_config(base)
    for day in days:
        _arrive(base, holding, day)
        _publish(cfg, start=day, end=day)
    assert_same_offline(base, _full_copy(base, tmp_path / "full"))
    _assert_same_lifetime(base, tmp_path / "full")


def _lifetime(data_dir: Path, view) -> pd.DataFrame:
    """A view's lifetime sums as its state holds them: the state's rows, or (active-days views) the base snapshot
    plus the stored tiles after the base day."""
    cat = Catalog(data_dir)
    st = tiles.read_state(cat.tile_state(view.name), view)
    assert st is not None
    if st.base is None:
        return pq.read_table(cat.tile_state(view.name)).to_pandas()
    keys, names = list(view.keys), tiles.lifetime_names(view)
    parts = [pq.read_table(cat.tile_bases(view.name) / st.base).to_pandas()]
    parts += [pq.read_table(p, columns=[*keys, *names]).to_pandas()
              for d, p in tiles.listing(cat.tiles(view.name)).items() if st.base_as_of < d <= st.as_of]
    return pd.concat(parts).groupby(keys, as_index=False).sum()


def _assert_same_lifetime(a_dir: Path, b_dir: Path) -> None:
    """The intermediates of two data dirs hold the same lifetime sums (keys whose sums are all 0 aside)."""
    for view in VIEWS:
        keys = list(view.keys)
        a, b = (f[(f.drop(columns=keys) != 0).any(axis=1)].sort_values(keys).reset_index(drop=True)
                for f in (_lifetime(a_dir, view), _lifetime(b_dir, view)))
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=view.name)


PAIRS = next(v for v in VIEWS if v.rows == "active_days")


def _pair_state(data_dir: Path) -> tiles.State:
    st = tiles.read_state(Catalog(data_dir).tile_state(PAIRS.name), PAIRS)
    assert st is not None and st.base is not None
    return st


def _correct_day(data_dir: Path, day: date, seed: int) -> None:
    """Change the validated events of `day` (late or corrected data): some clicks added, a fifth dropped."""
    files = sorted((Catalog(data_dir).validated_interactions / f"date={day}").glob("*.parquet"))
    table = pq.read_table(files[0])
    ev = table.to_pandas()
    rng = np.random.default_rng(seed)
    flip = rng.random(len(ev)) < 0.3
    ev.loc[flip & (ev.click == 0), ["click", "dwell_time"]] = [1, 12.5]
    ev = ev[rng.random(len(ev)) > 0.2]
    for f in files:
        f.unlink()
    pq.write_table(pa_table(ev, table.schema), files[0])


def test_daily_runs_across_pair_base_compactions_equal_a_full_recompute(base, tmp_path):
    """The user x item state is a base snapshot plus the tiles after it, compacted (here) once the tiles after the
    base span 3 days: in-order daily runs rewrite the base only at compactions and keep just one base file; then
    repeated and out-of-order runs of days before the base day (the base stays), late data before the base day
    (forces a compaction) and after it (the base stays) still leave every table and the lifetime sums equal to a
    full recompute."""
    holding = tmp_path / "holding"
    _hold_back(base, date(2024, 3, 14), holding)
    shutil.rmtree(base / "offline")
    shutil.rmtree(base / "intermediate")
    _publish(pipeline_config(base))
    cfg = pipeline_config(base)
    assert _pair_state(base).base_as_of == tiles.day_no(date(2024, 3, 14))

    def run(day: date) -> None:
        with update_stats(cfg, day, day, compact_after=3) as staged:
            staged.publish()

    seen = []
    for day in (date(2024, 3, 15) + timedelta(days=i) for i in range(8)):  # Mar 15..22
        _arrive(base, holding, day)
        before = _pair_state(base)
        run(day)
        after = _pair_state(base)
        assert after.as_of == tiles.day_no(day)
        compacted = tiles.day_no(day) - before.base_as_of >= 3
        assert (after.base != before.base) == compacted, day
        assert after.base_as_of == (tiles.day_no(day) if compacted else before.base_as_of)
        assert [f.name for f in Catalog(base).tile_bases(PAIRS.name).iterdir()] == [after.base]  # old bases pruned
        seen.append(compacted)
    assert seen == [False, False, True, False, False, True, False, False]  # bases as of Mar 17, then Mar 20
    assert_same_offline(base, _full_copy(base, tmp_path / "full1"))
    _assert_same_lifetime(base, tmp_path / "full1")

    # repeated and out of order, before the base day (Mar 20): the base is not rewritten
    kept = _pair_state(base).base
    for day in (date(2024, 3, 18), date(2024, 3, 21), date(2024, 3, 16)):
        run(day)
    assert _pair_state(base).base == kept
    # late data before the base day: Mar 19 changes; its update rewrites Mar 19..22 and compacts the base
    _correct_day(base, date(2024, 3, 19), seed=5)
    run(date(2024, 3, 19))
    st = _pair_state(base)
    assert st.base != kept and st.base_as_of == st.as_of == tiles.day_no(date(2024, 3, 22))
    # two new days, late data after the base day (the base stays), then a new day that compacts
    kept = _pair_state(base).base
    for day in (date(2024, 3, 23), date(2024, 3, 24)):
        _arrive(base, holding, day)
        run(day)
    _correct_day(base, date(2024, 3, 23), seed=6)
    run(date(2024, 3, 23))
    assert _pair_state(base).base == kept and _pair_state(base).as_of == tiles.day_no(date(2024, 3, 24))
    _arrive(base, holding, date(2024, 3, 25))
    run(date(2024, 3, 25))
    assert _pair_state(base).base_as_of == tiles.day_no(date(2024, 3, 25))
    assert_same_offline(base, _full_copy(base, tmp_path / "full2"))
    _assert_same_lifetime(base, tmp_path / "full2")


def test_a_missing_pair_base_is_not_trusted(base, tmp_path):
    """A state naming a base snapshot that is not there (a lost file) is not trusted: the run rebuilds the
    intermediates from the events and its rows equal a full recompute."""
    cat = Catalog(base)
    (cat.tile_bases(PAIRS.name) / _pair_state(base).base).unlink()
    _publish(pipeline_config(base), start=date(2024, 3, 31), end=date(2024, 3, 31))
    assert (cat.tile_bases(PAIRS.name) / _pair_state(base).base).is_file()
    assert_same_offline(base, _full_copy(base, tmp_path / "full"))
    _assert_same_lifetime(base, tmp_path / "full")


def test_first_incremental_run_without_state_builds_it_once(base, tmp_path):
    """A data dir without intermediates (made before them, or wiped): the first update rebuilds the tiles from
    the validated events once and gives the same rows as a full recompute."""
    shutil.rmtree(base / "intermediate")
    _publish(pipeline_config(base), start=date(2024, 3, 20), end=date(2024, 3, 20))
    assert_same_offline(base, _full_copy(base, tmp_path / "full"))
    assert Catalog(base).tile_state("user_daily_stats").exists()
