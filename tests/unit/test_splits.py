"""Temporal splits: disjoint, ordered, complete, one timestamp in one split, gaps, explicit cuts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feedstore.core.config import PipelineConfig
from feedstore.training_data.report import psi
from feedstore.training_data.splits import split_by_time


def stamps(n=10_000, unit="us", seed=0):
    rng = np.random.default_rng(seed)
    base = pd.Timestamp("2024-03-01", tz="UTC")
    secs = np.sort(rng.integers(0, 30 * 86400, n))
    secs[100:130] = secs[100]  # a feed request: many rows, one timestamp
    return pd.Series(pd.DatetimeIndex(base + pd.to_timedelta(secs, unit="s")).as_unit(unit))


@pytest.mark.parametrize("unit", ["us", "ns", "ms"])
def test_ratio_split_is_ordered_disjoint_and_complete(unit):
    ts = stamps(unit=unit)
    label, cuts = split_by_time(ts, PipelineConfig())
    assert set(label) == {"train", "val", "test"}
    counts = pd.Series(label).value_counts(normalize=True)
    assert counts["train"] == pytest.approx(0.70, abs=0.02) and counts["test"] == pytest.approx(0.15, abs=0.02)
    frame = pd.DataFrame({"ts": ts, "split": label})
    assert frame[frame.split == "train"].ts.max() < frame[frame.split == "val"].ts.min()
    assert frame[frame.split == "val"].ts.max() < frame[frame.split == "test"].ts.min()
    assert frame.groupby("ts").split.nunique().max() == 1  # one timestamp, one split
    assert pd.Timestamp(cuts["train_end"]).year == 2024


def test_gap_drops_rows_between_splits():
    ts = stamps()
    cfg = PipelineConfig(splits={"gap_hours": 24})
    label, cuts = split_by_time(ts, cfg)
    gap = ts[label == "gap"]
    assert len(gap) > 0
    train_end = pd.Timestamp(cuts["train_end"])
    assert ((gap >= train_end) & (gap < train_end + pd.Timedelta(hours=24)) |
            (gap >= pd.Timestamp(cuts["val_end"]))).all()


def test_explicit_cuts():
    ts = stamps()
    cfg = PipelineConfig(splits={"train_end": "2024-03-20T00:00:00", "val_end": "2024-03-25T00:00:00"})
    label, _ = split_by_time(ts, cfg)
    assert (ts[label == "train"] < pd.Timestamp("2024-03-20", tz="UTC")).all()
    assert (ts[label == "test"] >= pd.Timestamp("2024-03-25", tz="UTC")).all()


def test_psi():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50_000)
    assert psi(a, rng.normal(size=50_000)) < 0.01
    assert psi(a, rng.normal(1.0, 1, size=50_000)) > 0.25
    assert psi(np.zeros(10), np.zeros(10)) == 0.0
