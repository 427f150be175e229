"""The generator: contract, invariants, determinism, and each data pattern at small scale."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feedstore.core.catalog import Catalog
from feedstore.core.contracts import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA
from feedstore.ingestion.generate.events import block_sizes, build_world, generate_block, interaction_ids
from feedstore.ingestion.generate.run import (
    plan_tasks,
    recorded_generation,
    write_raw_events,
)
from tests.conftest import small_generation
from tests.helpers import file_bytes, read_raw


def events_of(cfg) -> pd.DataFrame:
    """All clean events of a config, in memory (no files), with item and user traits joined."""
    world = build_world(cfg)
    blocks = [generate_block(world, t.day, t.block, t.n, t.first_seq) for t in plan_tasks(world)]
    cols = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    df = pd.DataFrame(cols)
    df["hour"] = (df.ts // 3_600_000_000) % 24
    df["dow"] = ((df.ts // 86_400_000_000) + 3) % 7
    df["category"] = world.category[df.item_id]
    df["quality"] = world.quality[df.item_id]
    df["age_days"] = (df.ts - world.creation_us[df.item_id]) / 86_400_000_000
    df["preferred"] = world.preferred_category[df.user_id]
    return df, world


# ---------------------------------------------------------------------------------------------- contract


def test_files_follow_the_contract(small_raw):
    data_dir, cfg = small_raw
    assert pq.read_schema(data_dir / "raw" / "users.parquet").remove_metadata() == USERS_SCHEMA.remove_metadata()
    assert pq.read_schema(data_dir / "raw" / "items.parquet").remove_metadata() == ITEMS_SCHEMA.remove_metadata()
    parts = sorted(Catalog(data_dir).raw_interactions.glob("date=*/*.parquet"))
    assert len(parts) == cfg.n_days
    for part in parts[:3]:
        assert pq.read_schema(part).remove_metadata() == INTERACTIONS_SCHEMA.remove_metadata()
    ev, users, items = read_raw(data_dir)
    assert len(ev) == cfg.interactions
    assert len(users) == cfg.users and len(items) == cfg.items
    assert ev.interaction_id.is_unique
    # the hive directory is the event's UTC date
    assert (ev.event_timestamp.dt.strftime("%Y-%m-%d") == ev["date"].astype(str)).all()
    assert str(ev.event_timestamp.dt.tz) == "UTC"
    faults = json.loads(Catalog(data_dir).faults.read_text())
    assert faults["total"] == 0 and set(faults["counts"].values()) == {0}


def test_no_defects_without_fault_injection(small_raw):
    data_dir, cfg = small_raw
    ev, users, items = read_raw(data_dir)
    m = ev.merge(users, on="user_id", how="left").merge(items, on="item_id", how="left")
    assert m.signup_date.notna().all() and m.creation_date.notna().all()  # referential integrity
    assert (m.event_timestamp > m.signup_date).all()
    assert (m.event_timestamp > m.creation_date).all()
    assert (ev.event_timestamp >= pd.Timestamp(cfg.start_ts)).all()
    assert (ev.event_timestamp < pd.Timestamp(cfg.end_ts)).all()
    for col in ("click", "like", "share"):
        assert set(ev[col].unique()) <= {0, 1}
    assert ((ev.like == 0) | (ev.click == 1)).all() and ((ev.share == 0) | (ev.click == 1)).all()
    assert ((ev.dwell_time > 0) == (ev.click == 1)).all()
    assert ev.dwell_time.between(0, 300).all()
    assert set(ev.device) <= {"mobile", "desktop", "tablet"}
    assert (ev.day_of_week == ev.event_timestamp.dt.dayofweek).all()
    hour = ev.event_timestamp.dt.hour
    expected_tod = np.select([hour.between(5, 11), hour.between(12, 16), hour.between(17, 21)],
                             ["morning", "afternoon", "evening"], "night")
    assert (ev.time_of_day == expected_tod).all()
    assert ev[["user_id", "item_id"]].notna().all().all()
    assert not ev.duplicated(["user_id", "item_id", "event_timestamp"]).any()  # no double-logged impression


def test_tiny_catalogue_still_never_repeats_an_item_in_a_request():
    df, _ = events_of(small_generation(items=3, users=50, interactions=3_000, request_size_mean=4.0))
    assert not df.duplicated(["user_id", "item_id", "ts"]).any()
    assert len(df) == 3_000


def test_interaction_ids_are_fixed_width_and_unique():
    ids = interaction_ids(np.array([0, 7, 123456789012 % 10**12, 999_999_999_999]))
    assert ids.to_pylist() == ["evt-000000000000", "evt-000000000007", "evt-123456789012", "evt-999999999999"]
    with pytest.raises(ValueError):
        interaction_ids(np.array([10**12]))


@pytest.mark.parametrize(("n", "block"), [(0, 1000), (999, 1000), (1000, 1000), (1001, 1000), (5_000_001, 1_048_576)])
def test_block_sizes_cover_the_day(n, block):
    sizes = block_sizes(n, block)
    assert sum(sizes) == n and max(sizes) <= block and max(sizes) - min(sizes) <= 1


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    cfg = small_generation(interactions=8_000, users=300, items=600)
    write_raw_events(cfg, tmp_path / "a", progress=False)
    write_raw_events(cfg, tmp_path / "b", progress=False)
    write_raw_events(cfg.model_copy(update={"seed": 8}), tmp_path / "c", progress=False)
    a, b, c = (file_bytes(tmp_path / x / "raw") for x in "abc")
    assert a == b
    first_day = "interactions/date=2024-03-04/part-00000-000.parquet"
    assert a[first_day] != c[first_day]
    assert a["users.parquet"] != c["users.parquet"]


def test_worker_count_does_not_change_output(tmp_path):
    cfg = small_generation(interactions=20_000, users=300, items=600)
    write_raw_events(cfg, tmp_path / "one", workers=1, progress=False)
    write_raw_events(cfg, tmp_path / "two", workers=2, progress=False)
    assert file_bytes(tmp_path / "one" / "raw") == file_bytes(tmp_path / "two" / "raw")


def test_blocks_within_a_day_are_exact_and_unique(tmp_path):
    cfg = small_generation(interactions=30_000, users=300, items=600, start="2024-03-04", end="2024-03-06",
                           block_events=4_000)
    write_raw_events(cfg, tmp_path, progress=False)
    ev, _, _ = read_raw(tmp_path)
    assert len(ev) == 30_000 and ev.interaction_id.is_unique
    assert len(list(Catalog(tmp_path).raw_interactions.glob("date=2024-03-04/*.parquet"))) > 1


def test_zero_interactions_is_valid(tmp_path):
    summary = write_raw_events(small_generation(interactions=0), tmp_path, progress=False)
    assert summary.interactions == 0
    assert (tmp_path / "raw" / "users.parquet").exists()


# ---------------------------------------------------------------------------------------------- patterns


def _top_share(df, n_users, q):
    counts = np.sort(np.bincount(df.user_id, minlength=n_users))[::-1]
    return counts[: max(1, int(q * n_users))].sum() / counts.sum()


def test_power_law_grows_with_sigma():
    flat, _ = events_of(small_generation(activity={"sigma": 0.0, "inactive_user_fraction": 0.0}))
    skewed, _ = events_of(small_generation(activity={"sigma": 2.3}))
    assert _top_share(flat, 2_000, 0.01) < 0.05
    assert _top_share(skewed, 2_000, 0.01) > 0.3


def test_inactive_users_never_interact_and_cold_start_exists():
    df, world = events_of(small_generation(activity={"sigma": 1.0, "inactive_user_fraction": 0.2}))
    inactive = np.flatnonzero(world.activity == 0)
    assert len(inactive) > 300
    assert not np.isin(df.user_id.unique(), inactive).any()
    late_items = world.creation_us > world.start_us
    assert late_items.mean() == pytest.approx(0.8, abs=0.02)


def test_diurnal_curve_peaks_in_the_evening():
    df, _ = events_of(small_generation())
    by_hour = df.groupby("hour").size()
    assert by_hour.idxmax() in range(18, 24)
    assert by_hour.idxmin() in range(0, 7)
    assert by_hour.max() / by_hour.min() > 5
    evening = df.hour.between(17, 21)
    assert df[evening].click.mean() > df[~evening].click.mean()


@pytest.mark.parametrize(("multiplier", "low", "high"), [(1.0, 0.9, 1.12), (1.5, 1.35, 1.7)])
def test_weekend_volume(multiplier, low, high):
    df, _ = events_of(small_generation(temporal={"weekend_volume_multiplier": multiplier}))
    per_day = df.groupby(df.ts // 86_400_000_000).agg(n=("ts", "size"), dow=("dow", "first"))
    ratio = per_day[per_day.dow >= 5].n.mean() / per_day[per_day.dow < 5].n.mean()
    assert low < ratio < high


@pytest.mark.parametrize("target", [0.05, 0.12, 0.25])
def test_ctr_is_calibrated_to_target(target):
    df, _ = events_of(small_generation(engagement={"target_ctr": target}))
    assert df.click.mean() == pytest.approx(target, rel=0.12)


def test_preferences_drift_slowly():
    def stability(drift):
        df, _ = events_of(small_generation(preferences={"drift": drift, "exploration": 0.0}, interactions=80_000))
        half = df.ts >= df.ts.median()
        top = df.assign(half=half).groupby(["user_id", "half"]).category.agg(lambda s: s.value_counts().idxmax())
        top = top.unstack().dropna()
        return (top[False] == top[True]).mean()

    assert stability(0.0) > stability(1.0) + 0.1
    df, _ = events_of(small_generation())
    assert (df.category == df.preferred).mean() > 0.25  # 10 categories: uniform would be 0.1


def test_recency_and_lifecycle_decay():
    df, _ = events_of(small_generation(items_model={"half_life_days": 2.0, "evergreen_weight": 0.0}))
    fresh = df[df.age_days < 8]
    per_day = np.bincount(fresh.age_days.astype(int), minlength=8)
    # exposure halves roughly every 2 days (eligible item counts are ~flat across ages)
    assert 1.4 < per_day[0] / per_day[2] < 2.9
    assert (df.age_days < 7).mean() > 0.5
    assert df[df.age_days < 1].click.mean() > df[df.age_days > 7].click.mean()  # viral phase


def test_popularity_and_quality_drive_engagement():
    df, world = events_of(small_generation())
    exposures = np.bincount(df.item_id, minlength=world.n_items)
    weight = world.popularity * (0.5 + world.quality)
    assert pd.Series(exposures).corr(pd.Series(weight), method="spearman") > 0.2
    q = pd.qcut(df.quality, 4, labels=False)
    assert df[q == 3].click.mean() > 1.2 * df[q == 0].click.mean()


def test_categories_differ_in_engagement():
    spread, _ = events_of(small_generation(items_model={"category_ctr_spread": 0.8}))
    flat, _ = events_of(
        small_generation(items_model={"category_ctr_spread": 0.0}, preferences={"affinity_ctr_effect": 0.0})
    )
    ratio = lambda d: d.groupby("category").click.mean().max() / d.groupby("category").click.mean().min()  # noqa: E731
    assert ratio(spread) > 1.8 > 1.3 > ratio(flat)


def test_signals_likes_shares_and_dwell():
    df, _ = events_of(small_generation())
    clicks = df[df.click == 1]
    assert (df.like <= df.click).all() and (df.share <= df.click).all()
    assert clicks[clicks.like == 1].share.mean() > 2 * clicks[clicks.like == 0].share.mean()
    assert 0.01 <= df.like.mean() <= 0.15
    assert clicks.dwell.max() <= 300 and clicks.dwell.min() > 0
    assert clicks.dwell.mean() / clicks.dwell.median() > 1.2  # heavy tail
    q = pd.qcut(clicks.quality, 3, labels=False)
    assert clicks[q == 2].dwell.mean() > 1.1 * clicks[q == 0].dwell.mean()


def test_feed_requests_share_user_device_and_timestamp():
    df, _ = events_of(small_generation())
    per_request = df.groupby(["user_id", "ts"]).agg(n=("item_id", "size"), devices=("device", "nunique"))
    assert per_request.n.mean() == pytest.approx(3.0, rel=0.1)
    assert (per_request.devices == 1).all()


def test_generating_one_day_writes_exactly_that_days_partition(tmp_path):
    from datetime import date

    cfg = small_generation(interactions=8_000, users=300, items=600)
    write_raw_events(cfg, tmp_path / "full", progress=False)
    write_raw_events(cfg, tmp_path / "day", progress=False, days=[date(2024, 3, 10)])
    day = tmp_path / "day" / "raw" / "interactions"
    assert [p.name for p in day.iterdir()] == ["date=2024-03-10"]
    full = file_bytes(tmp_path / "full" / "raw" / "interactions" / "date=2024-03-10")
    assert file_bytes(day) == {f"date=2024-03-10/{name}": data for name, data in full.items()} != {}
    assert sorted(p.name for p in (tmp_path / "day" / "raw").iterdir()) == [
        "faults.json", "generation.json", "interactions", "items.parquet", "users.parquet"]
    # the generation record says which days the raw data holds: the full run all, the one-day run that day
    assert recorded_generation(tmp_path / "full") == cfg
    one_day = recorded_generation(tmp_path / "day")
    assert (one_day.start, one_day.end) == (date(2024, 3, 10), date(2024, 3, 10))
    assert one_day.model_copy(update={"start": cfg.start, "end": cfg.end}) == cfg
    with pytest.raises(ValueError, match="outside the configured range"):
        write_raw_events(cfg, tmp_path / "day", progress=False, days=[date(2023, 1, 1)])
