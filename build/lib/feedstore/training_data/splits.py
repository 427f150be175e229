"""Temporal splits: cut timestamps from ratios or explicit cuts, split labels per row (all rows of one timestamp in one
split)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from feedstore.core.config import PipelineConfig


def _utc(ts) -> pd.Timestamp:
    """A config timestamp as UTC (naive means UTC)."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t


def time_cuts(sorted_us: np.ndarray, cfg: PipelineConfig) -> tuple[int, int]:
    """(train_end, val_end) in UTC microseconds: the configured cuts, or the timestamps at the ratio positions
    of the time-ordered rows (so all rows of one timestamp land in one split)."""
    s = cfg.splits
    if s.train_end is not None:
        return _utc(s.train_end).value // 1000, _utc(s.val_end).value // 1000
    n = len(sorted_us)
    return int(sorted_us[min(int(n * s.train), n - 1)]), int(sorted_us[min(int(n * (s.train + s.val)), n - 1)])


def label_rows(us: np.ndarray, cuts: tuple[int, int], cfg: PipelineConfig) -> np.ndarray:
    """Split label per row ("train"/"val"/"test"/"gap") from UTC microseconds and the cuts."""
    s = cfg.splits
    cut1, cut2 = cuts
    gap = int(s.gap_hours * 3_600_000_000)
    label = np.full(len(us), "gap", dtype=object)
    label[us < cut1] = "train"
    if not (s.val == 0 and s.train_end is None):
        label[(us >= cut1 + gap) & (us < cut2)] = "val"
    label[us >= cut2 + gap] = "test"
    return label


def describe_cuts(cuts: tuple[int, int], cfg: PipelineConfig) -> dict[str, Any]:
    iso = [pd.Timestamp(c, unit="us", tz="UTC").isoformat() for c in cuts]
    return {"train_end": iso[0], "val_end": iso[1], "gap_hours": cfg.splits.gap_hours}


def split_by_time(ts: pd.Series, cfg: PipelineConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Split labels of in-memory timestamps, and the cuts (the builder does the same on streamed batches)."""
    us = pd.DatetimeIndex(ts).tz_convert("UTC").as_unit("us").asi8
    cuts = time_cuts(np.sort(us), cfg)
    return label_rows(us, cuts, cfg), describe_cuts(cuts, cfg)
