"""The gate on `feedstore stats` output: GX suites over a check view of each offline table.

Statistics are computed, not ingested, so every rule is table-level (critical): a violation is a bug and
stops the pipeline before Feast reads the files. Every rule is derived from the feature spec; DuckDB computes the
checked quantities (nested windows, likes <= clicks <= impressions, ...) in one scan and folds them per day; GX
evaluates the suite on that narrow frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

from feedstore.core import duck
from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import DAY_US
from feedstore.core.errors import ValidationFailed
from feedstore.core.gx import TABLE, GXRunner, expectation, suite, summary_table
from feedstore.core.spec import FEATURE_SPEC, FeatureSpec, ViewSpec

log = logging.getLogger(__name__)


def _q(name: str) -> str:
    return '"' + name + '"'


def _all(conditions: list[str]) -> str:
    return " AND ".join(conditions) if conditions else "TRUE"


def _both_ends(rule: str, column: str, lo: float, hi: float, notes: str) -> list:
    return [expectation("ExpectColumnValuesToBeBetween", f"{rule}{suffix}", TABLE, column=f"{column}{suffix}",
                        min_value=lo, max_value=hi, notes=notes + (" (largest value of a day)" if suffix else
                                                                   " (smallest value of a day)"))
            for suffix in ("", "__max")]


def _common_rules(name: str) -> list:
    return [
        expectation("ExpectColumnValuesToBeInSet", "stamped_at_midnight_utc", TABLE, column="_midnight",
                    value_set=[True], notes="every row is stamped at midnight UTC (the end of the day it covers)"),
        expectation("ExpectColumnValuesToBeBetween", "one_row_per_key_and_day", TABLE, column="_rows_per_key",
                    min_value=1, max_value=1, notes="at most one row per key and snapshot day"),
        expectation("ExpectColumnValuesToBeBetween", f"{name}_not_empty", TABLE, column="_rows", min_value=1,
                    notes="every checked day has rows"),
    ]


def check_view(view: ViewSpec, categories: int) -> tuple[dict[str, tuple[str, str | None]], list]:
    """The checked quantities of one view ({name: (SQL over a row, how a day folds them)}) and its GX rules, all
    derived from the spec: counts non-negative, windows nested, tiles within their bounds (likes <= clicks <=
    impressions), smoothed rates in (0, 1), means non-negative, distributions that sum to 1 over every
    category, attributes in range, no row before the entity exists, one row per key and day at midnight."""
    windows = view.sorted_windows
    counts = [(f, w, c) for f, w, c in view.windowed() if f.kind == "count"]
    by_tile = {(f.of, w): c for f, w, c in counts}
    checks: dict[str, tuple[str, str | None]] = {
        "_key_present": (_all([f"{k} IS NOT NULL" for k in view.keys]), "bool_and"),
        "_min_count": (f"least({', '.join(_q(c) for _, _, c in counts)})", "min"),
        "_windows_nested": (_all([f"{_q(view.column_name(f, a))} <= {_q(view.column_name(f, b))}"
                                  for f in view.features if f.kind == "count"
                                  for a, b in zip(windows, windows[1:], strict=False)]), "bool_and"),
        "_within_bounds": (_all([f"{_q(by_tile[t.name, w])} <= {_q(by_tile[t.bounded_by, w])}"
                                 for t in view.tiles if t.bounded_by for w in windows
                                 if (t.name, w) in by_tile and (t.bounded_by, w) in by_tile]), "bool_and"),
    }
    bounds = "; ".join(f"{t.name} <= {t.bounded_by}" for t in view.tiles if t.bounded_by)
    rules = [
        expectation("ExpectColumnValuesToBeInSet", "keys_not_null", TABLE, column="_key_present", value_set=[True],
                    notes=f"{', '.join(view.keys)} never null"),
        expectation("ExpectColumnValuesToBeBetween", "counts_non_negative", TABLE, column="_min_count", min_value=0,
                    notes="every count column >= 0"),
        expectation("ExpectColumnValuesToBeInSet", "windows_nested", TABLE, column="_windows_nested",
                    value_set=[True], notes=" <= ".join(view.window_label(w) for w in windows) + " for every count"),
        expectation("ExpectColumnValuesToBeInSet", "counts_within_bounds", TABLE, column="_within_bounds",
                    value_set=[True], notes=bounds or "no bounded tiles"),
    ]
    rates = [c for f, _, c in view.windowed() if f.kind == "beta_rate"]
    if rates:
        checks["_min_rate"] = (f"least({', '.join(_q(c) for c in rates)})", "min")
        checks["_max_rate"] = (f"greatest({', '.join(_q(c) for c in rates)})", "max")
        rules += [
            expectation("ExpectColumnValuesToBeBetween", "smoothed_rates_above_zero", TABLE, column="_min_rate",
                        min_value=0, strict_min=True, notes="every smoothed rate > 0"),
            expectation("ExpectColumnValuesToBeBetween", "smoothed_rates_below_one", TABLE, column="_max_rate",
                        max_value=1, strict_max=True, notes="every smoothed rate < 1"),
        ]
    means = [c for f, _, c in view.windowed() if f.kind in ("mean", "log1p")]
    if means:
        checks["_min_mean"] = (f"least({', '.join(_q(c) for c in means)})", "min")
        rules.append(expectation("ExpectColumnValuesToBeBetween", "means_non_negative", TABLE, column="_min_mean",
                                 min_value=0, notes="every mean and log-popularity >= 0"))
    for f in view.distributions():
        checks[f"_{f.name}_sum"] = (f"list_sum({_q(f.name)})", None)
        checks[f"_{f.name}_len"] = (f"len({_q(f.name)})", None)
        rules += [*_both_ends(f"{f.name}_is_a_distribution", f"_{f.name}_sum", 0.999, 1.001,
                              f"{f.name} sums to 1 (within 0.001)"),
                  *_both_ends(f"{f.name}_has_every_category", f"_{f.name}_len", categories, categories,
                              f"{f.name} has one entry per category ({categories})")]
    for a in view.attributes:
        if a.category_range:
            checks[f"_{a.name}"] = (_q(a.name), None)
            rules += _both_ends(f"{a.name}_in_range", f"_{a.name}", 0, categories - 1,
                                f"{a.name} between 0 and {categories - 1}")
        if a.born:
            checks["_born_before_snapshot"] = (f"{_q(a.name)} < event_timestamp", "bool_and")
            rules.append(expectation("ExpectColumnValuesToBeInSet", "entity_exists_before_snapshot", TABLE,
                                     column="_born_before_snapshot", value_set=[True],
                                     notes=f"{a.name} is before the row's snapshot: no row before the entity exists"))
    if view.rows == "active_days":  # a row exists only on a day with activity: at least one event so far
        roots = [c for f, _, c in counts if view.tile(f.of).bounded_by is None]
        checks["_min_active"] = (f"least({', '.join(_q(c) for c in roots)})", "min")
        rules.append(expectation("ExpectColumnValuesToBeBetween", "active_at_least_once", TABLE,
                                 column="_min_active", min_value=1,
                                 notes="at least one event so far (rows exist only on active days)"))
    # on the epoch (exact for UTC stamps): date_trunc on a TIMESTAMPTZ goes through the time-zone calendar, which
    # cost more than reading the rows
    checks["_midnight"] = (f"epoch_us(event_timestamp) % {DAY_US} = 0", "bool_and")
    return checks, rules + _common_rules(view.name)


def validate_stats(cfg: PipelineConfig, days: list[str], root: Path | None = None,
                   spec: FeatureSpec = FEATURE_SPEC) -> None:
    """Stage gate `validate-stats`: the GX gate on the statistics of `days`, staged under `root` (before they are
    published) or, by default, the published offline tables; raise ValidationFailed on any failure.

    DuckDB computes each row's checked quantities and folds them per day (min / max / all), so GX evaluates a
    frame of one row per day per rule input instead of millions of rows; a failure names the offending days.
    Range checks on two-sided quantities (affinity sum and length, category) keep both the min and the max.
    """
    cat = Catalog(cfg.data_dir)
    runner = GXRunner(docs_dir=cat.data_docs, history=cfg.validation.docs_history)
    con = duck.connect()
    failures = []
    wanted = {Catalog.partition(d) for d in days}
    for view in spec.views:
        checks, rules = check_view(view, cfg.generation.preferences.categories)
        base = (root or cat.offline) / view.name
        files = sorted(f for f in base.glob("*/*.parquet") if f.parent.name in wanted)
        if not files:
            failures.append(f"{view.name}: no rows written for {days[0]}..{days[-1]}")
            continue
        folds = []
        for name, (sql, how) in checks.items():  # a day fails if any row fails; two-sided ranges keep min and max
            folds += ([f"{how}({sql}) AS {name}"] if how
                      else [f"min({sql}) AS {name}", f"max({sql}) AS {name}__max"])
        # One aggregate over the files, no per-row table. The day a row covers (the day before its midnight stamp)
        # is taken on the epoch and formatted once per day. One row per key and stamp: rows per day == distinct
        # (keys, stamp) per day (a GROUP BY, not a window per row); hash collisions could only hide a duplicate,
        # never invent one.
        frame = con.execute(f"""
            SELECT strftime(DATE '1970-01-01' + CAST(d AS INTEGER), '%Y-%m-%d') AS day, * EXCLUDE (d) FROM (
                SELECT CAST(floor(epoch_us(event_timestamp) / {DAY_US}) AS BIGINT) - 1 AS d, count(*) AS _rows,
                       count(*) - count(DISTINCT hash({', '.join(view.keys)}, event_timestamp)) + 1 AS _rows_per_key,
                       {', '.join(folds)}
                FROM read_parquet($files, hive_partitioning = false) GROUP BY d)
            ORDER BY day""", {"files": [str(f) for f in files]}).df()
        outcomes = runner.validate(frame, suite(f"offline_{view.name}.v1", rules), f"offline_{view.name}",
                                   example_columns=["day"], run_name=f"offline {view.name} {days[0]}..{days[-1]}")
        log.info("stats gate for %s (%s rows over %d days)\n%s", view.name, f"{int(frame._rows.sum()):,}",
                 len(frame), summary_table(view.name, outcomes))
        failures += [f"{view.name}.{o.rule} failed on {[e['day'] for e in o.examples] or o.observed_value}"
                     for o in outcomes if not o.success or o.error]
    runner.build_docs()
    if failures:
        raise ValidationFailed("stats validation failed: " + "; ".join(failures[:3]))
