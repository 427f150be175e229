"""The synthetic world: users, items and their latent traits, drawn once from the seed, and the lookup tables the
samplers use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from feedstore.core.config import DEVICES, GenerationConfig
from feedstore.core.contracts import DAY_US

_STREAM_WORLD, _STREAM_DAYS, _STREAM_BLOCK, _STREAM_FAULTS, _STREAM_PILOT = 0, 1, 2, 3, 4
US_PER_HOUR = 3_600_000_000


US_PER_DAY = 24 * US_PER_HOUR




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


def draw_world(cfg: GenerationConfig) -> World:
    """Draw users and items from the seed and precompute the samplers' lookup tables (intercept not calibrated)."""
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
        signup[top] = start_us - DAY_US
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
    return world
