"""Fault injection: corrupt a fraction of rows the way real pipelines get corrupted, and count each kind exactly.

Every faulty row carries exactly one defect kind, chosen so that it does not also trip another rule
(e.g. a negative dwell is put on a non-click row, so "dwell > 0 iff click" still holds). That makes the
counts in `raw/faults.json` the exact number of rows a validator must quarantine for each reason.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from feedstore.ingestion.generate.world import World

UNKNOWN_DEVICE = "smart_fridge"

#: Defect kinds, in the order they are assigned.
KINDS: tuple[str, ...] = (
    "duplicate_interaction_id",
    "null_user_id",
    "null_item_id",
    "unknown_user_id",
    "unknown_item_id",
    "unknown_device",
    "click_out_of_set",
    "like_without_click",
    "share_without_click",
    "dwell_negative",
    "dwell_too_long",
    "before_signup",
    "before_creation",
    "after_end",
)

_US_PER_HOUR = 3_600_000_000


def _swap_to_later(ids: np.ndarray, ts: np.ndarray, appears_sorted: np.ndarray, order: np.ndarray,
                   rng: np.random.Generator, pick) -> None:
    """Replace ids (on rows `pick` chooses among those where one exists) by an entity that appears after `ts`."""
    later = np.searchsorted(appears_sorted, ts, side="right")
    rows = pick(later < len(appears_sorted))
    lo = later[rows]
    ids[rows] = order[lo + (rng.random(len(rows)) * (len(appears_sorted) - lo)).astype(np.int64)]


def inject(world: World, cols: dict[str, np.ndarray], rate: float, rng: np.random.Generator):
    """Corrupt ~`rate` of the rows of one block in place; return (counts per kind, user null mask, item null mask)."""
    n = len(cols["ts"])
    n_faulty = int(rng.binomial(n, rate))
    wanted = np.bincount(rng.integers(0, len(KINDS), n_faulty), minlength=len(KINDS))
    taken = np.zeros(n, dtype=bool)
    user_null = np.zeros(n, dtype=bool)
    item_null = np.zeros(n, dtype=bool)
    counts: dict[str, int] = {}
    clicked = cols["click"] == 1
    ts = cols["ts"]

    def pick(kind_index: int, eligible: np.ndarray) -> np.ndarray:
        candidates = np.flatnonzero(eligible & ~taken)
        k = min(int(wanted[kind_index]), len(candidates))
        rows = np.sort(rng.choice(candidates, size=k, replace=False)) if k else candidates[:0]
        taken[rows] = True
        counts[KINDS[kind_index]] = k
        return rows

    for i, kind in enumerate(KINDS):
        if kind == "duplicate_interaction_id":
            # copy the id of an earlier row of the block; that source row stays clean (and keeps its id)
            rows = pick(i, np.arange(n) > 0)
            src = (rng.random(len(rows)) * rows).astype(np.int64)
            ok = ~taken[src]  # a source that is itself a duplicate would blur the count: drop that row
            taken[rows[~ok]] = False
            rows, src = rows[ok], src[ok]
            counts[kind] = len(rows)
            cols["seq"][rows] = cols["seq"][src]
            taken[src] = True
        elif kind == "null_user_id":
            user_null[pick(i, np.ones(n, bool))] = True
        elif kind == "null_item_id":
            item_null[pick(i, np.ones(n, bool))] = True
        elif kind == "unknown_user_id":
            rows = pick(i, np.ones(n, bool))
            cols["user_id"][rows] = world.n_users + rng.integers(0, 1_000_000, len(rows))
        elif kind == "unknown_item_id":
            rows = pick(i, np.ones(n, bool))
            cols["item_id"][rows] = world.n_items + rng.integers(0, 1_000_000, len(rows))
        elif kind == "unknown_device":
            cols["device"][pick(i, np.ones(n, bool))] = 3  # index of UNKNOWN_DEVICE in the generator's labels
        elif kind == "click_out_of_set":
            cols["click"][pick(i, clicked)] = 2  # on a clicked row, so dwell > 0 stays consistent
        elif kind == "like_without_click":
            cols["like"][pick(i, ~clicked)] = 1
        elif kind == "share_without_click":
            cols["share"][pick(i, ~clicked)] = 1
        elif kind == "dwell_negative":
            rows = pick(i, ~clicked)
            cols["dwell"][rows] = -np.round(1 + 59 * rng.random(len(rows)), 2)
        elif kind == "dwell_too_long":
            rows = pick(i, clicked)
            cols["dwell"][rows] = np.round(300.01 + 600 * rng.random(len(rows)), 2)
        elif kind == "before_signup":  # a real user who signs up only after the event
            _swap_to_later(cols["user_id"], ts, world.signup_sorted, world.users_by_signup, rng, partial(pick, i))
        elif kind == "before_creation":  # a real item published only after the event
            _swap_to_later(cols["item_id"], ts, world.creation_sorted, world.items_by_creation, rng,
                           partial(pick, i))
        elif kind == "after_end":
            # future-dated: 1-72 h past the configured end (time_of_day / day_of_week follow the new time)
            rows = pick(i, np.ones(n, bool))
            cols["ts"][rows] = world.end_us + (1000 * rng.integers(_US_PER_HOUR // 1000, 72 * _US_PER_HOUR // 1000,
                                                                   len(rows)))
    return counts, (user_null if user_null.any() else None), (item_null if item_null.any() else None)
