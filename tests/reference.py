"""Brute-force references: slow, plain pandas, obviously correct. Tests compare the pipeline against them."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

COUNTS = {"impressions": None, "clicks": "click", "likes": "like", "shares": "share"}


#: The documented feature definitions (README "Timestamped statistics"), restated here on purpose: the reference
#: must not be derived from the spec it checks.
WINDOWS = (1, 7, 30)
CTR_PRIOR = (0.1, 20.0)  # mean, strength
AFFINITY = (1.0, 30)  # pseudo-clicks per category, window days


def windowed_stats(events: pd.DataFrame, key: str, prefix: str, at: pd.Timestamp, entities,
                   windows: tuple[int, ...] = WINDOWS, extra_counts: dict | None = None) -> pd.DataFrame:
    """Every windowed statistic of each of `entities` from events strictly before `at` (index: entity id).
    `extra_counts`: {feature name: event mask function} for counts added in a test."""
    alpha = CTR_PRIOR[0] * CTR_PRIOR[1]
    beta = (1 - CTR_PRIOR[0]) * CTR_PRIOR[1]
    past = events[events.event_timestamp < at]
    out = {}
    for w in [*windows, None]:
        name = f"{w}d" if w else "lifetime"
        sub = past if w is None else past[past.event_timestamp >= at - timedelta(days=w)]
        g = sub.groupby(key)
        n = g.size()
        c = g["click"].sum()
        out[f"{prefix}_impressions_{name}"] = n
        out[f"{prefix}_clicks_{name}"] = c
        out[f"{prefix}_likes_{name}"] = g["like"].sum()
        out[f"{prefix}_shares_{name}"] = g["share"].sum()
        dwell = sub[sub.click == 1].groupby(key)["dwell_time"].sum()
        out[f"_dwell_{name}"] = dwell
        for extra, mask in (extra_counts or {}).items():
            out[f"{prefix}_{extra}_{name}"] = sub[mask(sub)].groupby(key).size()
    frame = pd.DataFrame(out).reindex(entities).fillna(0)
    for w in [*windows, None]:
        name = f"{w}d" if w else "lifetime"
        n, c = frame[f"{prefix}_impressions_{name}"], frame[f"{prefix}_clicks_{name}"]
        frame[f"{prefix}_dwell_mean_{name}"] = np.where(c > 0, frame[f"_dwell_{name}"] / c.where(c > 0, 1), 0.0)
        frame[f"{prefix}_ctr_smoothed_{name}"] = (c + alpha) / (n + alpha + beta)
        if prefix == "item":
            frame[f"item_log_popularity_{name}"] = np.log1p(n)
    return frame.drop(columns=[c for c in frame.columns if c.startswith("_dwell_")])


def user_affinity(events: pd.DataFrame, items: pd.DataFrame, at: pd.Timestamp, n_cat: int) -> pd.Series:
    """Per user: (clicks in category k over the affinity window + a) / (clicks + a * C), for k = 0..C-1."""
    a, window = AFFINITY
    start = at - timedelta(days=window)
    past = events[(events.event_timestamp < at) & (events.event_timestamp >= start)]
    past = past[past.click == 1].merge(items[["item_id", "category"]], on="item_id")
    table = past.pivot_table(index="user_id", columns="category", values="click", aggfunc="sum", fill_value=0)
    table = table.reindex(columns=range(n_cat), fill_value=0)
    total = table.sum(axis=1)
    return table.add(a).div(total + a * n_cat, axis=0).apply(lambda r: r.to_numpy(dtype=np.float32).tolist(), axis=1)


def latest_row(rows: pd.DataFrame, keys: list[str], at: pd.Timestamp, ttl: timedelta) -> pd.DataFrame:
    """Point-in-time lookup: per key, the latest row with event_timestamp <= at and >= at - ttl."""
    ok = rows[(rows.event_timestamp <= at) & (rows.event_timestamp >= at - ttl)]
    return ok.sort_values("event_timestamp").groupby(keys).tail(1).set_index(keys)
