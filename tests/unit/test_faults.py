"""Fault injection: every kind is injected, counted exactly, and each faulty row breaks exactly one rule."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from feedstore.core.catalog import Catalog
from feedstore.ingestion.generate.faults import KINDS
from feedstore.ingestion.generate.run import write_raw_events
from tests.conftest import small_generation
from tests.helpers import read_raw


def violations(ev: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, cfg) -> pd.DataFrame:
    """An independent, rule-by-rule check of every defect kind (one boolean column per kind)."""
    m = ev.merge(users[["user_id", "signup_date"]], on="user_id", how="left").merge(
        items[["item_id", "creation_date"]], on="item_id", how="left"
    )
    first = ~m.interaction_id.duplicated(keep="first")
    return pd.DataFrame(
        {
            "duplicate_interaction_id": ~first,
            "null_user_id": m.user_id.isna(),
            "null_item_id": m.item_id.isna(),
            "unknown_user_id": m.user_id.notna() & m.signup_date.isna(),
            "unknown_item_id": m.item_id.notna() & m.creation_date.isna(),
            "unknown_device": ~m.device.isin(["mobile", "desktop", "tablet"]),
            "click_out_of_set": ~m.click.isin([0, 1]),
            "like_without_click": (m.like == 1) & (m.click == 0),
            "share_without_click": (m.share == 1) & (m.click == 0),
            "dwell_negative": m.dwell_time < 0,
            "dwell_too_long": m.dwell_time > 300,
            "before_signup": m.event_timestamp < m.signup_date,
            "before_creation": m.event_timestamp < m.creation_date,
            "after_end": m.event_timestamp >= pd.Timestamp(cfg.end_ts),
        }
    )


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    cfg = small_generation(interactions=40_000)
    data_dir = tmp_path_factory.mktemp("faulty")
    write_raw_events(cfg, data_dir, fault_rate=0.05, progress=False)
    return data_dir, cfg


def test_every_kind_is_injected_and_counted_exactly(faulty):
    data_dir, cfg = faulty
    manifest = json.loads(Catalog(data_dir).faults.read_text())
    ev, users, items = read_raw(data_dir)
    found = violations(ev, users, items, cfg)
    assert set(manifest["counts"]) == set(KINDS)
    for kind in KINDS:
        assert manifest["counts"][kind] > 0, kind
        assert int(found[kind].sum()) == manifest["counts"][kind], kind
    assert manifest["total"] == sum(manifest["counts"].values())
    assert manifest["total"] == pytest.approx(0.05 * 40_000, rel=0.1)


def test_each_faulty_row_breaks_exactly_one_rule(faulty):
    data_dir, cfg = faulty
    ev, users, items = read_raw(data_dir)
    per_row = violations(ev, users, items, cfg).sum(axis=1)
    assert per_row.max() == 1
    assert len(ev) == cfg.interactions


def test_future_dated_rows_land_in_their_own_date_partition(faulty):
    data_dir, cfg = faulty
    ev, _, _ = read_raw(data_dir)
    late = ev[ev.event_timestamp >= pd.Timestamp(cfg.end_ts)]
    assert len(late) > 0
    assert (late.event_timestamp.dt.strftime("%Y-%m-%d") == late["date"].astype(str)).all()


def test_faults_do_not_disturb_clean_rows(faulty, small_raw, tmp_path):
    """Fault injection uses its own random stream: the rows it did not touch equal a clean run's."""
    data_dir, cfg = faulty
    clean_dir = tmp_path / "clean"
    write_raw_events(cfg, clean_dir, progress=False)
    ev, users, items = read_raw(data_dir)
    clean, _, _ = read_raw(clean_dir)
    bad = violations(ev, users, items, cfg).any(axis=1)
    # after_end changes the timestamp, before_* swap ids: compare untouched rows by position within sorted ids
    untouched = ev[~bad].drop(columns="date").set_index("interaction_id").sort_index()
    reference = clean.drop(columns="date").set_index("interaction_id").loc[untouched.index]
    pd.testing.assert_frame_equal(untouched, reference, check_dtype=False)


def test_rate_bounds():
    with pytest.raises(ValueError):
        write_raw_events(small_generation(interactions=10), "/nonexistent", fault_rate=0.9, progress=False)
