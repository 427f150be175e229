"""Realism report: each data pattern the generator promises, its target, and the value measured on the files.

Measured with DuckDB straight from `<data-dir>/raw/`, so it checks what was written (at any scale), not what
the generator meant to write.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from feedstore.core import duck
from feedstore.core.catalog import Catalog
from feedstore.core.config import GenerationConfig
from feedstore.core.contracts import DAY_US
from feedstore.core.io import write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    pattern: str
    metric: str
    target: str
    measured: float
    ok: bool


def _band(pattern: str, metric: str, value: float, band: tuple[float, float]) -> Check:
    lo, hi = band
    return Check(pattern, metric, f"[{lo:g}, {hi:g}]", round(float(value), 4), bool(lo <= value <= hi))


def _cmp(pattern: str, metric: str, value: float, op: str, ref: float) -> Check:
    ok = {">": value > ref, "<": value < ref, "==": value == ref, ">=": value >= ref, "<=": value <= ref}[op]
    return Check(pattern, metric, f"{op} {ref:g}", round(float(value), 4), bool(ok))


def _ntile_ends(counts: np.ndarray, values: np.ma.MaskedArray | np.ndarray, buckets: int) -> tuple[float | None, ...]:
    """avg(value) over the first and the last of `buckets` equal parts of the rows (as SQL's ntile splits them:
    the first N % buckets parts one row longer), given runs of `counts` equal `values` (null: masked) in order."""
    counts = np.asarray(counts, dtype=np.int64)
    valid = ~np.ma.getmaskarray(values)
    vals = np.ma.getdata(values).astype(np.float64)
    total = int(counts.sum())
    size, longer = divmod(total, buckets)
    ends = np.cumsum(counts)
    starts = ends - counts
    out = []
    for lo, hi in ((0, size + (1 if longer else 0)), (total - size, total)):
        overlap = np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None) * valid
        n = overlap.sum()
        out.append(float((overlap * np.where(valid, vals, 0)).sum() / n) if n else None)
    return tuple(out)


def measure(data_dir: Path, cfg: GenerationConfig) -> list[Check]:
    """Measure every pattern on the files under `<data_dir>/raw/`."""
    con = duck.connect()
    glob = str(Catalog.parquet_glob(Catalog(data_dir).raw_interactions))
    # The files are read once, into memory (only the columns the checks use, plus the event's hour, weekday and
    # date, computed once), and every check below runs on these tables, the scalar ones in a single pass:
    # re-reading hundreds of partition files for each of ~30 queries was most of the report's cost.
    con.execute(f"CREATE TEMP TABLE users AS SELECT user_id, signup_date, preferred_category "
                f"FROM read_parquet({duck.literal(Catalog(data_dir).raw_users)})")
    con.execute(f"CREATE TEMP TABLE items AS SELECT item_id, creation_date, category, base_quality "
                f"FROM read_parquet({duck.literal(Catalog(data_dir).raw_items)})")
    # faulty rows (--inject-faults) may name unknown users or items: the patterns are measured on the rest
    con.execute(f"""CREATE TEMP TABLE ev AS
                    SELECT user_id, item_id, event_timestamp, click, "like", share, dwell_time,
                           hour(event_timestamp) AS hour, isodow(event_timestamp) AS dow,
                           CAST(event_timestamp AS DATE) AS d
                    FROM read_parquet({duck.literal(glob)}, hive_partitioning = false)
                    WHERE user_id IN (SELECT user_id FROM users) AND item_id IN (SELECT item_id FROM items)""")
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    one = lambda sql: q(sql)[0][0]  # noqa: E731
    t = cfg.realism_targets
    checks: list[Check] = []
    start, end = cfg.start_ts.isoformat(), cfg.end_ts.isoformat()

    n_users = one("SELECT count(*) FROM users")
    n_items = one("SELECT count(*) FROM items")
    s = dict(zip(["n_events", "ev_ctr", "rest_ctr", "we_ctr", "wd_ctr", "outside",
                  "ctr", "like_rate", "share_like", "share_nolike", "unclicked_signals", "dwell_mismatch"], q(f"""
        SELECT count(*),
               avg(click) FILTER (WHERE hour BETWEEN 17 AND 21), avg(click) FILTER (WHERE hour NOT BETWEEN 17 AND 21),
               avg(click) FILTER (WHERE dow >= 6), avg(click) FILTER (WHERE dow < 6),
               count(*) FILTER (WHERE event_timestamp < TIMESTAMPTZ '{start}'
                                   OR event_timestamp >= TIMESTAMPTZ '{end}'),
               avg(click), avg("like"), avg(share) FILTER (WHERE "like" = 1),
               avg(share) FILTER (WHERE click = 1 AND "like" = 0),
               count(*) FILTER (WHERE click = 0 AND ("like" = 1 OR share = 1)),
               count(*) FILTER (WHERE (dwell_time > 0) <> (click = 1))
        FROM ev""")[0], strict=True))
    n_events = s["n_events"]
    if n_events == 0:
        return [_cmp("volume", "interactions", 0, ">", 0)]

    # --- power-law user activity
    # events per user, and per item below (a null id is one more group, as it always was); the distinct ids with
    # events are the non-null groups
    by_user = con.execute("SELECT count(*) AS n, user_id IS NULL AS null_id FROM ev GROUP BY user_id "
                          "ORDER BY 1 DESC").fetchnumpy()
    per_user = by_user["n"].astype(np.float64)
    users_with = int((~by_user["null_id"].astype(bool)).sum())
    by_item = con.execute("SELECT count(*) AS n, item_id IS NULL AS null_id FROM ev GROUP BY item_id "
                          "ORDER BY 1").fetchnumpy()
    items_with = int((~by_item["null_id"].astype(bool)).sum())
    padded = np.concatenate([per_user, np.zeros(max(n_users - len(per_user), 0))])
    top1 = padded[: max(1, math.ceil(0.01 * n_users))].sum() / n_events
    top10 = padded[: max(1, math.ceil(0.10 * n_users))].sum() / n_events
    checks.append(_band("power-law activity", "share of events by top 1% of users", top1, t.top1_user_share))
    checks.append(_band("power-law activity", "share of events by top 10% of users", top10, t.top10_user_share))

    # --- temporal patterns
    hours = dict(q("SELECT hour, count(*) FROM ev GROUP BY 1"))
    hourly = np.array([hours.get(h, 0) for h in range(24)], dtype=np.float64)
    peak, trough = int(hourly.argmax()), int(hourly.argmin())
    checks.append(_band("diurnal curve", "peak-hour / trough-hour volume", hourly[peak] / max(hourly[trough], 1),
                        t.peak_to_trough_hour_ratio))
    checks.append(_cmp("diurnal curve", "peak hour (UTC) is in the evening, 17-23", peak, ">=", 17))
    checks.append(_cmp("diurnal curve", "trough hour (UTC) is at night, before 07", trough, "<", 7))
    wk = q(f"""
        WITH days AS (SELECT d::DATE AS d FROM range(TIMESTAMP '{cfg.start}', TIMESTAMP '{cfg.end}' + INTERVAL 1 DAY,
                                                     INTERVAL 1 DAY) r(d)),
             per_day AS (SELECT d, count(*) AS n FROM ev GROUP BY 1)
        SELECT avg(CASE WHEN isodow(days.d) >= 6 THEN coalesce(n, 0) END),
               avg(CASE WHEN isodow(days.d) < 6 THEN coalesce(n, 0) END)
        FROM days LEFT JOIN per_day USING (d)""")[0]
    if wk[0] is not None and wk[1]:
        checks.append(_band("weekly cycle", "events per weekend day / per weekday", wk[0] / wk[1],
                            t.weekend_to_weekday_volume))
    ev_ctr, rest_ctr = s["ev_ctr"], s["rest_ctr"]
    if ev_ctr is not None and rest_ctr:
        checks.append(_cmp("more engagement in evenings", "CTR 17-22h / CTR other hours", ev_ctr / rest_ctr, ">", 1.0))
    we_ctr, wd_ctr = s["we_ctr"], s["wd_ctr"]
    if we_ctr is not None and wd_ctr:
        checks.append(_cmp("more engagement on weekends", "CTR weekend / CTR weekday", we_ctr / wd_ctr, ">", 1.0))

    # --- cold start and time integrity
    # events with their item's attributes and age in microseconds (integer arithmetic, not INTERVALs), built once
    con.execute("""CREATE TEMP TABLE ei AS
                   SELECT user_id, item_id, event_timestamp, click, dwell_time, creation_date, category, base_quality,
                          epoch_us(event_timestamp) - epoch_us(creation_date) AS age_us
                   FROM ev JOIN items USING (item_id)""")
    day_us = DAY_US
    before_creation, young = q(f"SELECT count(*) FILTER (WHERE event_timestamp < creation_date), "
                               f"avg((age_us < {7 * day_us})::INT) FROM ei")[0]
    checks.append(_cmp("no event before its user's signup", "events before signup",
                       one("SELECT count(*) FROM ev JOIN users USING (user_id) "
                           "WHERE event_timestamp < signup_date"), "==", 0))
    checks.append(_cmp("no event before its item's creation", "events before creation", before_creation, "==", 0))
    checks.append(_cmp("events inside the date range", "events outside [start, end]", s["outside"], "==", 0))
    checks.append(_band("cold start", "share of users with no events", 1 - users_with / n_users,
                        t.users_without_events))
    checks.append(_band("cold start", "share of items with no events", 1 - items_with / n_items,
                        t.items_without_events))
    checks.append(_cmp("cold start", "share of users signing up during the range",
                       one(f"SELECT avg((signup_date >= TIMESTAMPTZ '{start}')::INT) FROM users"), ">", 0))
    checks.append(_cmp("cold start", "share of items published during the range",
                       one(f"SELECT avg((creation_date >= TIMESTAMPTZ '{start}')::INT) FROM items"), ">", 0))

    # --- preferences and their drift
    n_c = cfg.preferences.categories
    own = one("SELECT avg((i.category = u.preferred_category)::INT) FROM ev "
              "JOIN users u USING (user_id) JOIN items i USING (item_id)")
    checks.append(_cmp("category preferences", "share of impressions in the user's preferred category",
                       own, ">", 1.0 / n_c))
    mid = cfg.start_ts + (cfg.end_ts - cfg.start_ts) / 2
    stable = one(f"""
        WITH c AS (SELECT user_id, (event_timestamp >= TIMESTAMPTZ '{mid.isoformat()}')::INT AS half, category,
                          count(*) AS n
                   FROM ei GROUP BY ALL),
             top AS (SELECT user_id, half, first(category ORDER BY n DESC, category) AS cat, sum(n) AS total
                     FROM c GROUP BY ALL)
        SELECT avg((a.cat = b.cat)::INT) FROM top a JOIN top b USING (user_id)
        WHERE a.half = 0 AND b.half = 1 AND a.total >= 20 AND b.total >= 20""")
    if stable is not None:
        checks.append(_band("preferences drift slowly",
                             "users whose top category is the same in both halves (>= 20 events each)",
                             stable, (0.5, 0.99 if cfg.preferences.drift > 0 else 1.0)))

    # --- recency and lifecycle
    ages = dict(q(f"""SELECT floor((age_us / 1e6) / 86400)::INT AS a, count(*)
                      FROM ei
                      WHERE creation_date < TIMESTAMPTZ '{end}' - INTERVAL 30 DAY
                        AND creation_date >= TIMESTAMPTZ '{start}' GROUP BY 1"""))
    hl = cfg.items_model.half_life_days
    span = [a for a in range(int(max(1, min(10, 3 * hl)))) if ages.get(a, 0) > 0]
    if len(span) >= 2:
        slope = np.polyfit(span, np.log2([ages[a] for a in span]), 1)[0]
        measured_hl = -1 / slope if slope < 0 else float("inf")
        checks.append(_band("lifecycle: viral phase then decay", "measured exposure half-life (days)",
                            measured_hl, (hl / 2, hl * 2)))
    created_7d_share = 7 / max(cfg.n_days, 7)
    checks.append(_cmp("recency bias", "share of impressions on items < 7 days old", young, ">", created_7d_share))

    # --- popularity, quality, categories
    exposures = by_item["n"].astype(np.float64)
    exposures = np.concatenate([np.zeros(max(n_items - len(exposures), 0)), exposures])
    gini = 1 - 2 * np.sum(np.cumsum(exposures) / exposures.sum()) / n_items + 1 / n_items
    checks.append(_cmp("popularity bias", "Gini of item exposure", gini, ">", 0.5))
    # CTR of the bottom and top quartiles of events ordered by (base_quality, item_id, click) -- what
    # `ntile(4) OVER (ORDER BY ...)` gives, with ties broken so the answer is deterministic -- from ~1 row per
    # (item, click value) instead of sorting every event
    groups = con.execute("SELECT count(*) AS n, click FROM ei GROUP BY base_quality, item_id, click "
                         "ORDER BY base_quality, item_id, click").fetchnumpy()
    bottom_q, top_q = _ntile_ends(groups["n"], groups["click"], 4)
    checks.append(_cmp("quality drives engagement", "CTR top / bottom quality quartile", top_q / max(bottom_q, 1e-9),
                       ">", 1.2))
    cat_ctr = [r[0] for r in q("SELECT avg(click) FROM ei GROUP BY category")]
    if len(cat_ctr) > 1 and cfg.items_model.category_ctr_spread > 0:
        checks.append(_cmp("content variety", "CTR of best / worst category", max(cat_ctr) / max(min(cat_ctr), 1e-9),
                           ">", 1.1))

    # --- signals and rates
    ctr, like_rate, share_like, share_nolike = s["ctr"], s["like_rate"], s["share_like"], s["share_nolike"]
    checks.append(_band("rates", "CTR (clicks / impressions)", ctr, t.ctr))
    checks.append(_band("rates", "like rate (likes / impressions)", like_rate, t.like_rate))
    checks.append(_cmp("signals", "likes or shares without a click",
                       s["unclicked_signals"], "==", 0))
    if share_like is not None and share_nolike:
        checks.append(_cmp("signals", "P(share | like) / P(share | click, no like)", share_like / share_nolike, ">", 1))
    checks.append(_cmp("signals", "skip rate (impressions without click)", 1 - ctr, ">", 0.5))
    d_med, d_mean, d_max, d_hi, d_lo = q("""
        WITH c AS (SELECT dwell_time, ntile(3) OVER (ORDER BY base_quality, item_id, dwell_time) AS qt
                   FROM ei WHERE click = 1)
        SELECT median(dwell_time), avg(dwell_time), max(dwell_time),
               avg(dwell_time) FILTER (WHERE qt = 3), avg(dwell_time) FILTER (WHERE qt = 1) FROM c""")[0]
    if d_med is not None:
        checks.append(_cmp("dwell time: heavy tail", "mean / median dwell of clicks", d_mean / d_med, ">", 1.2))
        checks.append(_cmp("dwell time: capped", "max dwell (s)", d_max, "<=", cfg.engagement.dwell_cap_seconds))
        checks.append(_cmp("dwell time: longer for better content", "mean dwell top / bottom quality tertile",
                           d_hi / d_lo, ">", 1.1))
    checks.append(_cmp("signals", "dwell > 0 exactly when clicked (violations)",
                       s["dwell_mismatch"], "==", 0))
    return checks


def write_report(data_dir: Path, cfg: GenerationConfig) -> dict:
    """Measure, write `<data_dir>/reports/realism.json`, log a readable table; return the report."""
    checks = measure(data_dir, cfg)
    report = {
        "data_dir": str(data_dir),
        "seed": cfg.seed,
        "passed": sum(c.ok for c in checks),
        "failed": sum(not c.ok for c in checks),
        "checks": [asdict(c) for c in checks],
    }
    path = Catalog(data_dir).realism_report
    write_json(report, path)
    missed = [c for c in checks if not c.ok]  # the log shows what needs a look; the file (and DEBUG) has every check
    log.info("realism report (%d/%d within target) -> %s%s", report["passed"], len(checks), path,
             "\n" + format_table(missed) if missed else "")
    log.debug("realism report, every check:\n%s", format_table(checks))
    return report


def format_table(checks: list[Check]) -> str:
    rows = [("pattern", "metric", "target", "measured", "")] + [
        (c.pattern, c.metric, c.target, f"{c.measured:g}", "ok" if c.ok else "MISS") for c in checks
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
