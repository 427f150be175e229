"""Synthetic feed events: users, items and impressions with click / like / share / dwell, fast and reproducible.

How it is built (vectorized throughout, no per-event Python):

* A `World` holds users and items and their latent traits, drawn once from the seed.
* Events are produced per *(day, block)* with a random stream seeded by ``(seed, day, block)``. Days never share
  random state, so the output does not depend on how many workers run or in which order; a day with more
  than ``block_events`` events is cut into blocks of that size (a documented part of the data's identity).
* Within a block: feed *requests* (1+ impressions sharing user, device and timestamp) get an hour from the
  diurnal curve; the user is drawn by activity weight among users who signed up *before* the request; each
  impression's category comes from the user's (drifting) preferences; the item is drawn by
  popularity x quality x lifecycle among items of that category published *before* the request; engagement
  follows a logistic model whose intercept is calibrated to ``target_ctr``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import ndtri

from feedstore.config import DEVICES, GenerationConfig
from feedstore.io import replace_dir, staged_dir, write_json, write_parquet
from ingestion import faults as faults_mod
from ingestion.schemas import (
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    TIME_OF_DAY,
    USERS_SCHEMA,
    faults_path,
    interactions_dir,
    items_path,
    raw_dir,
    time_of_day_code,
    users_path,
)

log = logging.getLogger(__name__)

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
_STREAM_WORLD, _STREAM_DAYS, _STREAM_BLOCK, _STREAM_FAULTS, _STREAM_PILOT = 0, 1, 2, 3, 4
_DEVICE_LABELS = pa.array(list(DEVICES) + [faults_mod.UNKNOWN_DEVICE])
_TOD_LABELS = pa.array(list(TIME_OF_DAY))
_SEGMENTS = np.array(["power", "regular", "casual", "inactive"], dtype=object)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _to_us(ts) -> int:
    return int(ts.timestamp()) * 1_000_000


@dataclass
class World:
    """Users, items and their latent traits; everything a block needs, derived from config + seed only."""

    cfg: GenerationConfig
    start_us: int
    end_us: int
    # users
    signup_us: np.ndarray
    activity: np.ndarray
    propensity: np.ndarray
    device_pref: np.ndarray
    pref_a: np.ndarray
    pref_b: np.ndarray
    preferred_category: np.ndarray
    segment: np.ndarray
    # items
    category: np.ndarray
    creation_us: np.ndarray
    quality: np.ndarray
    popularity: np.ndarray
    category_effect: np.ndarray
    # derived lookup structures
    users_by_signup: np.ndarray
    signup_sorted: np.ndarray
    user_cumw: np.ndarray
    flat_cum_a: np.ndarray
    flat_cum_b: np.ndarray
    item_order: np.ndarray
    item_key: np.ndarray
    category_start: np.ndarray
    items_by_creation: np.ndarray
    creation_sorted: np.ndarray
    hour_cdf: np.ndarray
    device_cdf: np.ndarray
    day_counts: np.ndarray
    base_logit: float = 0.0

    @property
    def n_users(self) -> int:
        return len(self.signup_us)

    @property
    def n_items(self) -> int:
        return len(self.creation_us)


def build_world(cfg: GenerationConfig) -> World:
    """Draw users and items from the seed and precompute the samplers' lookup tables."""
    rng = _rng(cfg.seed, _STREAM_WORLD)
    start_us, end_us = _to_us(cfg.start_ts), _to_us(cfg.end_ts)
    period = end_us - start_us
    n_u, n_i, n_c = cfg.users, cfg.items, cfg.preferences.categories
    act = cfg.activity

    # --- users: signup spread (some before the range, the rest during it), log-normal activity
    n_initial = max(1, round(act.initial_user_fraction * n_u))
    signup = np.empty(n_u, dtype=np.int64)
    signup[:n_initial] = start_us - 1000 * rng.integers(1, 365 * 86_400_000, n_initial)
    signup[n_initial:] = start_us + 1000 * rng.integers(0, period // 1000, n_u - n_initial)
    signup = signup[rng.permutation(n_u)]
    # Stratified log-normal quantiles, randomly assigned: the exact distribution shape at any size and seed
    # (independent draws make the top-1% share swing by +-0.07 between seeds at 10K users).
    activity = np.exp(act.sigma * ndtri((np.arange(n_u) + 0.5) / n_u))[rng.permutation(n_u)]
    activity[rng.random(n_u) < act.inactive_user_fraction] = 0.0
    # There must be someone to serve the first request: the most active user joined before the range.
    active_before = (activity > 0) & (signup < start_us)
    if not active_before.any():
        top = int(np.argmax(activity)) if activity.max() > 0 else 0
        activity[top] = max(activity[top], 1.0)
        signup[top] = start_us - 86_400_000_000
    propensity = rng.normal(0.0, cfg.engagement.user_propensity_sigma, n_u)
    mix = np.array([cfg.devices.mix[d] for d in DEVICES])
    device_cdf = np.cumsum(mix / mix.sum())
    device_pref = np.minimum(np.searchsorted(device_cdf, rng.random(n_u), side="right"), len(DEVICES) - 1)
    alpha = np.full(n_c, cfg.preferences.concentration)
    pref_a = rng.dirichlet(alpha, n_u) if n_c > 1 else np.ones((n_u, 1))
    pref_b = rng.dirichlet(alpha, n_u) if n_c > 1 else np.ones((n_u, 1))
    preferred = pref_a.argmax(axis=1).astype(np.int32)
    rank = np.argsort(np.argsort(-activity, kind="stable"), kind="stable") / max(n_u, 1)
    segment = np.where(activity == 0, 3, np.where(rank < 0.10, 0, np.where(rank < 0.40, 1, 2)))

    # --- items: publication spread, quality (seed's Beta(5, 2)), popularity prior, category
    im = cfg.items_model
    n_item_initial = max(1, round(act.initial_item_fraction * n_i))
    creation = np.empty(n_i, dtype=np.int64)
    creation[:n_item_initial] = start_us - 1000 * rng.integers(1, 30 * 86_400_000, n_item_initial)
    creation[n_item_initial:] = start_us + 1000 * rng.integers(0, period // 1000, n_i - n_item_initial)
    creation = creation[rng.permutation(n_i)]
    category = rng.integers(0, n_c, n_i).astype(np.int32)
    quality = rng.beta(im.quality_alpha, im.quality_beta, n_i)
    popularity = rng.lognormal(0.0, im.popularity_sigma, n_i)
    category_effect = rng.permutation(np.linspace(-im.category_ctr_spread, im.category_ctr_spread, n_c))

    # --- lookup tables
    users_by_signup = np.argsort(signup, kind="stable")
    user_cumw = np.cumsum(activity[users_by_signup])
    offsets = np.arange(n_u, dtype=np.float64)[:, None]
    flat_cum_a = (np.cumsum(pref_a, axis=1) + offsets).ravel()
    flat_cum_b = (np.cumsum(pref_b, axis=1) + offsets).ravel()
    rel_creation = creation - (start_us - 400 * US_PER_DAY)  # non-negative, < 2**52 for any sane range
    item_order = np.lexsort((rel_creation, category))
    item_key = (category.astype(np.int64) << 52)[item_order] + rel_creation[item_order]
    category_start = np.searchsorted(category[item_order], np.arange(n_c + 1))
    items_by_creation = np.argsort(creation, kind="stable")
    hours = np.asarray(cfg.temporal.hourly_weights, dtype=np.float64)
    hour_cdf = np.cumsum(hours / hours.sum())

    # --- events per day: weekly cycle x how much user activity exists by then; one multinomial draw
    day_start = start_us + US_PER_DAY * np.arange(cfg.n_days, dtype=np.int64)
    weekday = (np.datetime64(cfg.start, "D") + np.arange(cfg.n_days)).astype("datetime64[D]").view(np.int64)
    weekday = (weekday + 3) % 7  # 1970-01-01 was a Thursday (3)
    weekly = np.where(weekday >= 5, cfg.temporal.weekend_volume_multiplier, 1.0)
    signup_sorted = signup[users_by_signup]
    mass = user_cumw[np.searchsorted(signup_sorted, day_start + US_PER_DAY // 2) - 1]
    day_p = weekly * mass
    day_counts = _rng(cfg.seed, _STREAM_DAYS).multinomial(cfg.interactions, day_p / day_p.sum())

    world = World(
        cfg=cfg, start_us=start_us, end_us=end_us, signup_us=signup, activity=activity, propensity=propensity,
        device_pref=device_pref, pref_a=pref_a, pref_b=pref_b, preferred_category=preferred, segment=segment,
        category=category, creation_us=creation, quality=quality, popularity=popularity,
        category_effect=category_effect, users_by_signup=users_by_signup, signup_sorted=signup_sorted,
        user_cumw=user_cumw, flat_cum_a=flat_cum_a, flat_cum_b=flat_cum_b, item_order=item_order,
        item_key=item_key, category_start=category_start, items_by_creation=items_by_creation,
        creation_sorted=creation[items_by_creation], hour_cdf=hour_cdf, device_cdf=device_cdf,
        day_counts=day_counts,
    )
    world.base_logit = _calibrate_base_logit(world)
    return world


# ------------------------------------------------------------------------------------------ one block


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


# ------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class BlockTask:
    day: int
    block: int
    n: int
    first_seq: int


@dataclass(frozen=True)
class BlockResult:
    rows_by_date: dict[str, int]
    faults: dict[str, int]
    rows: int


_WORKER: dict = {}


def _init_worker(cfg: GenerationConfig, fault_rate: float, out_dir: str) -> None:
    _WORKER["world"] = build_world(cfg)
    _WORKER["fault_rate"] = fault_rate
    _WORKER["out_dir"] = Path(out_dir)


def _run_task(task: BlockTask) -> BlockResult:
    world: World = _WORKER["world"]
    return _write_block(world, task, _WORKER["fault_rate"], _WORKER["out_dir"])


def _write_block(world: World, task: BlockTask, fault_rate: float, out_dir: Path) -> BlockResult:
    cols = generate_block(world, task.day, task.block, task.n, task.first_seq)
    counts: dict[str, int] = {}
    user_null = item_null = None
    if fault_rate > 0 and task.n:
        frng = _rng(world.cfg.seed, _STREAM_FAULTS, task.day, task.block)
        counts, user_null, item_null = faults_mod.inject(world, cols, fault_rate, frng)
    table = block_table(cols, user_null, item_null)
    event_day = cols["ts"] // US_PER_DAY
    days = np.unique(event_day)
    rows_by_date: dict[str, int] = {}
    for d in days:
        part = table if len(days) == 1 else table.filter(pa.array(event_day == d))
        date = str(np.datetime64(int(d), "D"))
        write_parquet(part, out_dir / f"date={date}" / f"part-{task.day:05d}-{task.block:03d}.parquet")
        rows_by_date[date] = part.num_rows
    return BlockResult(rows_by_date=rows_by_date, faults=counts, rows=table.num_rows)


def users_table(world: World) -> pa.Table:
    n = world.n_users
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(n, dtype=np.int64)),
            pa.array(world.signup_us, pa.int64()).cast(USERS_SCHEMA.field("signup_date").type),
            pa.array(_SEGMENTS[world.segment].tolist(), pa.string()),
            pa.array(world.preferred_category, pa.int32()),
            pc.take(_DEVICE_LABELS, pa.array(world.device_pref.astype(np.int8))),
            pa.array(world.activity),
            pa.array(world.propensity),
        ],
        schema=USERS_SCHEMA,
    )


def items_table(world: World) -> pa.Table:
    n = world.n_items
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(n, dtype=np.int64)),
            pa.array(world.category, pa.int32()),
            pa.array(world.creation_us, pa.int64()).cast(ITEMS_SCHEMA.field("creation_date").type),
            pa.array(world.quality),
            pa.array(world.popularity),
        ],
        schema=ITEMS_SCHEMA,
    )


@dataclass(frozen=True)
class GenerateSummary:
    users: int
    items: int
    interactions: int
    rows_by_date: dict[str, int]
    faults: dict[str, int]
    seconds: float
    out_dir: Path


def plan_tasks(world: World) -> list[BlockTask]:
    tasks, seq = [], 0
    for day, n_day in enumerate(world.day_counts.tolist()):
        for block, n in enumerate(block_sizes(n_day, world.cfg.block_events)):
            tasks.append(BlockTask(day=day, block=block, n=n, first_seq=seq))
            seq += n
    return tasks


def generate(
    cfg: GenerationConfig,
    data_dir: Path,
    *,
    fault_rate: float = 0.0,
    workers: int = 1,
    progress: bool = True,
    days: list | None = None,
) -> GenerateSummary:
    """Generate users, items and interactions under `<data_dir>/raw/`, replacing what was there atomically.

    With `days` (dates), only those days' partitions are (re)written, byte-identical to what a full run writes
    for them (each day has its own random stream); other partitions are left alone. That is how the daily DAG
    "ingests" one day.
    """
    if not 0.0 <= fault_rate <= 0.5:
        raise ValueError(f"fault rate must be in [0, 0.5], got {fault_rate}")
    t0 = time.perf_counter()
    world = build_world(cfg)
    tasks = [t for t in plan_tasks(world) if t.n > 0]
    if days is not None:
        wanted = {(d - cfg.start).days for d in days}
        outside = [d for d in days if not 0 <= (d - cfg.start).days < cfg.n_days]
        if outside:
            raise ValueError(f"days {outside} are outside the configured range {cfg.start}..{cfg.end}")
        tasks = [t for t in tasks if t.day in wanted]
    log.info(
        "generating %s interactions for %s users / %s items over %s days (%s blocks, %s worker%s, seed %s)",
        f"{cfg.interactions:,}", f"{cfg.users:,}", f"{cfg.items:,}", cfg.n_days, len(tasks), workers,
        "" if workers == 1 else "s", cfg.seed,
    )
    raw = raw_dir(data_dir)
    rows_by_date: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    target = interactions_dir(data_dir)
    day_stage = target.with_name(f".day-staging-{time.time_ns()}")
    with staged_dir(target if days is None else day_stage) as stage:
        results = _run_tasks(cfg, world, tasks, fault_rate, stage, workers, progress)
        for res in results:
            rows_by_date.update(res.rows_by_date)
            faults.update(res.faults)
        write_parquet(users_table(world), users_path(data_dir))
        write_parquet(items_table(world), items_path(data_dir))
        fault_doc = {
            "rate": fault_rate,
            "seed": cfg.seed,
            "total": int(sum(faults.values())),
            "counts": {k: int(faults.get(k, 0)) for k in faults_mod.KINDS},
        }
        write_json(fault_doc, faults_path(data_dir))
        if days is not None:  # move just these partitions into place (each replaced whole)
            for part in sorted(stage.glob("date=*")):
                replace_dir(part, target / part.name)
    if days is not None:
        import shutil

        shutil.rmtree(day_stage, ignore_errors=True)
    total = int(sum(rows_by_date.values()))
    seconds = time.perf_counter() - t0
    log.info(
        "wrote %s interactions in %d date partitions to %s (%.2f s, %s events/s)",
        f"{total:,}", len(rows_by_date), interactions_dir(data_dir), seconds, f"{total / max(seconds, 1e-9):,.0f}",
    )
    log.info("wrote %s and %s", users_path(data_dir), items_path(data_dir))
    if fault_rate:
        log.info("injected %s faulty rows (rate %.4f), counts per kind in %s",
                 f"{fault_doc['total']:,}", fault_rate, faults_path(data_dir))
    return GenerateSummary(
        users=world.n_users, items=world.n_items, interactions=total, rows_by_date=dict(sorted(rows_by_date.items())),
        faults=dict(fault_doc["counts"]), seconds=seconds, out_dir=raw,
    )


def _run_tasks(cfg, world, tasks, fault_rate, stage, workers, progress):
    from tqdm import tqdm

    bar = tqdm(total=sum(t.n for t in tasks), unit="ev", unit_scale=True, disable=not progress or None,
               desc="generate", leave=False)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                res = _write_block(world, task, fault_rate, stage)
                bar.update(task.n)
                yield res
            return
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(cfg, fault_rate, str(stage))) as pool:
            chunksize = max(1, len(tasks) // (8 * workers))
            for task, res in zip(tasks, pool.map(_run_task, tasks, chunksize=chunksize), strict=True):
                bar.update(task.n)
                yield res
    finally:
        bar.close()
