"""One (day, block) of impressions: feed requests, who saw what, engagement; vectorized, seeded per
(seed, day, block)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedstore.core.config import DEVICES, GenerationConfig
from feedstore.core.contracts import (
    INTERACTIONS_SCHEMA,
    TIME_OF_DAY,
    time_of_day_code,
)
from feedstore.ingestion.generate import faults as faults_mod
from feedstore.ingestion.generate.world import (
    _STREAM_BLOCK,
    _STREAM_PILOT,
    US_PER_DAY,
    US_PER_HOUR,
    World,
    _rng,
    draw_world,
)

_DEVICE_LABELS = pa.array(list(DEVICES) + [faults_mod.UNKNOWN_DEVICE])


_TOD_LABELS = pa.array(list(TIME_OF_DAY))


def _item_day_cumw(world: World, day: int, order: np.ndarray) -> np.ndarray:
    """Cumulative exposure weight of items (in `order`) on `day`: popularity x quality x lifecycle."""
    im = world.cfg.items_model
    mid = world.start_us + day * US_PER_DAY + US_PER_DAY // 2
    age_days = np.maximum(mid - world.creation_us[order], 0) / US_PER_DAY
    lifecycle = np.exp2(-age_days / im.half_life_days) + im.evergreen_weight
    return np.cumsum(world.popularity[order] * (0.5 + world.quality[order]) * lifecycle)


def _weighted_pick(cumw: np.ndarray, lo: np.ndarray, hi: np.ndarray, r: np.ndarray) -> np.ndarray:
    """For each row, an index in [lo, hi) drawn with probability proportional to the weight (cumw's steps)."""
    base = np.where(lo > 0, cumw[np.maximum(lo - 1, 0)], 0.0)
    total = cumw[hi - 1] - base
    pos = np.searchsorted(cumw, base + r * total, side="right")
    return np.clip(pos, lo, hi - 1)


class _ItemSampler:
    """Weighted item draws for one day: within a category, or over all items, published before `ts`."""

    def __init__(self, world: World, day: int):
        self.world, self.day = world, day
        self.cumw = _item_day_cumw(world, day, world.item_order)
        self._cumw_all: np.ndarray | None = None

    def in_category(self, cat: np.ndarray, ts: np.ndarray, r: np.ndarray) -> np.ndarray:
        w = self.world
        rel_ts = ts - (w.start_us - 400 * US_PER_DAY)
        lo = w.category_start[cat]
        hi = np.searchsorted(w.item_key, (cat.astype(np.int64) << 52) + rel_ts, side="left")
        empty = hi <= lo  # nothing of this category published yet: fall back to any category
        item = w.item_order[_weighted_pick(self.cumw, np.where(empty, 0, lo), np.where(empty, w.n_items, hi), r)]
        if empty.any():
            item[empty] = self.anywhere(ts[empty], r[empty])
        return item

    def anywhere(self, ts: np.ndarray, r: np.ndarray) -> np.ndarray:
        w = self.world
        if self._cumw_all is None:
            self._cumw_all = _item_day_cumw(w, self.day, w.items_by_creation)
        hi = np.searchsorted(w.creation_sorted, ts, side="left")
        return w.items_by_creation[_weighted_pick(self._cumw_all, np.zeros_like(hi), hi, r)]


def _repeats(ev_req: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Mask of impressions whose item already appeared earlier in the same request."""
    order = np.lexsort((item, ev_req))
    same = (ev_req[order][1:] == ev_req[order][:-1]) & (item[order][1:] == item[order][:-1])
    mask = np.zeros(len(item), dtype=bool)
    mask[order[1:][same]] = True
    return mask


def _redraw_repeats(samplers: _ItemSampler, ev_req, item, cat, ts, rng, rounds: int = 4) -> np.ndarray:
    """Redraw repeated items of a request: a few rounds in the same category, then over all categories."""
    for attempt in range(2 * rounds):
        rep = np.flatnonzero(_repeats(ev_req, item))
        if not len(rep):
            break
        r = rng.random(len(rep))
        item[rep] = samplers.in_category(cat[rep], ts[rep], r) if attempt < rounds else samplers.anywhere(ts[rep], r)
    return item


def _separate_leftover_repeats(ev_req: np.ndarray, item: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Last resort for tiny catalogues: a repeat that survives redraws is shown k microseconds later (a new
    request). Timestamps are whole milliseconds, so this never reorders events or crosses a day."""
    rep = _repeats(ev_req, item)
    if rep.any():
        ts = ts.copy()
        ts[rep] += 1 + (np.cumsum(rep) - 1)[rep] % 999
    return ts


def _impressions(world: World, day: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Who saw what, when, on which device; plus every click log-odds term except the intercept."""
    cfg = world.cfg
    day_start = world.start_us + day * US_PER_DAY
    # feed requests: sizes ~ geometric with the configured mean, trimmed to exactly n impressions
    p = 1.0 / cfg.request_size_mean
    sizes = rng.geometric(p, max(n, 1)).astype(np.int64)
    cum = np.cumsum(sizes)
    n_req = int(np.searchsorted(cum, n)) + 1 if n else 0
    sizes = sizes[:n_req]
    if n_req:
        sizes[-1] -= cum[n_req - 1] - n
    hour = np.searchsorted(world.hour_cdf, rng.random(n_req), side="right").clip(0, 23)
    req_ts = day_start + hour * US_PER_HOUR + 1000 * rng.integers(0, 3_600_000, n_req)
    order = np.argsort(req_ts, kind="stable")
    req_ts, sizes = req_ts[order], sizes[order]

    # users who signed up strictly before the request, weighted by activity
    n_elig = np.searchsorted(world.signup_sorted, req_ts, side="left")
    total = world.user_cumw[n_elig - 1]
    last_active = np.searchsorted(world.user_cumw, total, side="left")
    pos = np.minimum(np.searchsorted(world.user_cumw, rng.random(n_req) * total, side="right"), last_active)
    req_user = world.users_by_signup[pos]
    loyal = rng.random(n_req) < cfg.devices.loyalty
    other = np.searchsorted(world.device_cdf, rng.random(n_req), side="right").clip(0, len(DEVICES) - 1)
    req_device = np.where(loyal, world.device_pref[req_user], other)

    ev_req = np.repeat(np.arange(n_req), sizes)
    ts, user = req_ts[ev_req], req_user[ev_req]

    # category from the user's preferences, drifting linearly from vector A to B over the range
    n_c = cfg.preferences.categories
    drift = cfg.preferences.drift * np.clip((ts - world.start_us) / (world.end_us - world.start_us), 0, 1)
    r = rng.random(n) + user
    use_b = rng.random(n) < drift
    cat = np.empty(n, dtype=np.int64)
    cat[use_b] = np.searchsorted(world.flat_cum_b, r[use_b], side="right")
    cat[~use_b] = np.searchsorted(world.flat_cum_a, r[~use_b], side="right")
    cat -= user * n_c
    cat = np.clip(cat, 0, n_c - 1)
    explore = rng.random(n) < cfg.preferences.exploration
    cat = np.where(explore, rng.integers(0, n_c, n), cat)

    # item of that category published strictly before the request; a request never shows an item twice
    samplers = _ItemSampler(world, day)
    item = samplers.in_category(cat, ts, rng.random(n))
    item = _redraw_repeats(samplers, ev_req, item, cat, ts, rng)
    ts = _separate_leftover_repeats(ev_req, item, ts)
    cat = world.category[item]

    # click log-odds, all terms but the intercept
    im, tmp = cfg.items_model, cfg.temporal
    q = world.quality[item]
    q_mean = im.quality_alpha / (im.quality_alpha + im.quality_beta)
    age_days = (ts - world.creation_us[item]) / US_PER_DAY
    affinity = (1 - drift) * world.pref_a[user, cat] + drift * world.pref_b[user, cat]
    hour_ev = (ts // US_PER_HOUR) % 24
    dow = ((ts // US_PER_DAY) + 3) % 7
    logit = (
        world.propensity[user]
        + world.category_effect[cat]
        + im.quality_ctr_effect * (q - q_mean)
        + cfg.preferences.affinity_ctr_effect * np.log(np.maximum(affinity * n_c, 0.05))
        + im.viral_ctr_lift * np.exp2(-age_days / im.half_life_days)
        + tmp.evening_ctr_lift * ((hour_ev >= 17) & (hour_ev < 22))
        + tmp.weekend_ctr_lift * (dow >= 5)
    )
    return {
        "ts": ts, "user": user, "item": item, "device": req_device[ev_req], "quality": q, "logit": logit,
        "hour": hour_ev, "dow": dow,
    }


def _engage(world: World, imp: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw click, like, share and dwell time for the impressions."""
    eng = world.cfg.engagement
    im = world.cfg.items_model
    n = len(imp["ts"])
    q = imp["quality"]
    q_mean = im.quality_alpha / (im.quality_alpha + im.quality_beta)
    p_click = 1.0 / (1.0 + np.exp(-(world.base_logit + imp["logit"])))
    click = rng.random(n) < p_click
    p_like = np.clip(eng.like_given_click * (0.5 + q) / (0.5 + q_mean), 0.0, 1.0)
    like = click & (rng.random(n) < p_like)
    share = click & (rng.random(n) < np.where(like, eng.share_given_like, eng.share_given_no_like))
    raw_dwell = eng.dwell_scale_seconds * (0.5 + q) * rng.weibull(eng.dwell_weibull_shape, n)
    dwell = np.where(click, np.clip(np.round(raw_dwell, 2), 0.01, eng.dwell_cap_seconds), 0.0)
    as_int8 = lambda a: a.astype(np.int8)  # noqa: E731
    return {"click": as_int8(click), "like": as_int8(like), "share": as_int8(share), "dwell": dwell}


def _calibrate_base_logit(world: World) -> float:
    """Intercept such that the expected CTR over a pilot sample (8 days across the range) is `target_ctr`."""
    rng = _rng(world.cfg.seed, _STREAM_PILOT)
    days = np.unique(np.linspace(0, world.cfg.n_days - 1, 8).round().astype(int))
    logits = np.concatenate([_impressions(world, int(d), 4000, rng)["logit"] for d in days])
    target = world.cfg.engagement.target_ctr
    lo, hi = -30.0, 30.0
    for _ in range(60):  # bisection: mean sigmoid is monotone in the intercept
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(mid + logits)))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def interaction_ids(seq: np.ndarray) -> pa.Array:
    """Unique ids 'evt-000000000123' from global sequence numbers, built straight into an Arrow buffer."""
    n = len(seq)
    if n and (seq.min() < 0 or seq.max() >= 10**12):
        raise ValueError("interaction sequence numbers must be in [0, 10**12)")
    table = _digit_table()
    buf = np.empty((n, 4), dtype="<u4")
    buf[:, 0] = np.frombuffer(b"evt-", dtype="<u4")[0]
    rest, low = np.divmod(seq, 10_000)
    high, mid = np.divmod(rest, 10_000)
    buf[:, 1], buf[:, 2], buf[:, 3] = table[high], table[mid], table[low]
    offsets = np.arange(0, 16 * (n + 1), 16, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(buf)])


_DIGITS: np.ndarray | None = None


def _digit_table() -> np.ndarray:
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), dtype="<u4")
    return _DIGITS


def block_sizes(n_day: int, block_events: int) -> list[int]:
    """Split a day's events into near-equal blocks of at most `block_events`."""
    n_blocks = max(1, math.ceil(n_day / block_events))
    base, extra = divmod(n_day, n_blocks)
    return [base + (1 if b < extra else 0) for b in range(n_blocks)]


def generate_block(world: World, day: int, block: int, n: int, first_seq: int) -> dict[str, np.ndarray]:
    """The clean events of one (day, block), as numpy columns sorted by timestamp."""
    rng = _rng(world.cfg.seed, _STREAM_BLOCK, day, block)
    imp = _impressions(world, day, n, rng)
    eng = _engage(world, imp, rng)
    return {
        "seq": first_seq + np.arange(n, dtype=np.int64),
        "user_id": imp["user"].astype(np.int64),
        "item_id": imp["item"].astype(np.int64),
        "ts": imp["ts"],
        "click": eng["click"],
        "like": eng["like"],
        "share": eng["share"],
        "dwell": eng["dwell"],
        "device": imp["device"].astype(np.int8),
    }


def block_table(cols: dict[str, np.ndarray], user_null: np.ndarray | None = None,
                item_null: np.ndarray | None = None) -> pa.Table:
    """Arrow table in the interactions contract from numpy columns (time fields derived from `ts`)."""
    ts = cols["ts"]
    hour = (ts // US_PER_HOUR) % 24
    dow = (((ts // US_PER_DAY) + 3) % 7).astype(np.int8)
    arrays = [
        interaction_ids(cols["seq"]) if "ids" not in cols else cols["ids"],
        pa.array(cols["user_id"], pa.int64(), mask=user_null),
        pa.array(cols["item_id"], pa.int64(), mask=item_null),
        pa.array(ts, pa.int64()).cast(INTERACTIONS_SCHEMA.field("event_timestamp").type),
        pa.array(cols["click"], pa.int8()),
        pa.array(cols["like"], pa.int8()),
        pa.array(cols["share"], pa.int8()),
        pa.array(cols["dwell"], pa.float64()),
        pc.take(_DEVICE_LABELS, pa.array(cols["device"], pa.int8())),
        pc.take(_TOD_LABELS, pa.array(time_of_day_code(hour).astype(np.int8))),
        pa.array(dow, pa.int8()),
    ]
    return pa.Table.from_arrays(arrays, schema=INTERACTIONS_SCHEMA)


def build_world(cfg: GenerationConfig) -> World:
    """The world of `cfg`, with the click intercept calibrated to the configured CTR."""
    world = draw_world(cfg)
    world.base_logit = _calibrate_base_logit(world)
    return world
