"""The gate on `feedstore stats` output: GX suites over a check view of each offline table.

Statistics are computed, not ingested, so every rule is table-level (critical): a violation is a bug and
stops the pipeline before Feast reads the files. DuckDB derives the checked quantities (monotone windows,
clicks <= impressions, ...) in one scan; GX evaluates the suite on that narrow frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

from feedstore import duck
from feedstore.config import PipelineConfig
from feedstore.quality import TABLE, GXRunner, ValidationFailed, expectation, suite, summary_table
from ingestion.stats import COUNTS, ITEM_VIEW, USER_ITEM_VIEW, USER_VIEW, window_names

log = logging.getLogger(__name__)


def _prefix_checks(prefix: str, windows: list[int]) -> dict[str, str]:
    wn = window_names(windows)
    pairs = list(zip(wn, wn[1:], strict=False))
    monotone = " AND ".join(f"{prefix}_{m}_{a} <= {prefix}_{m}_{b}" for m in COUNTS for a, b in pairs)
    clicks = " AND ".join(f"{prefix}_{x}_{w} <= {prefix}_clicks_{w}" for w in wn for x in ("likes", "shares"))
    clicks += " AND " + " AND ".join(f"{prefix}_clicks_{w} <= {prefix}_impressions_{w}" for w in wn)
    return {
        "_min_count": "least(" + ", ".join(f"{prefix}_{m}_{w}" for m in COUNTS for w in wn) + ")",
        "_windows_monotone": monotone,
        "_signals_consistent": clicks,
        "_min_ctr": "least(" + ", ".join(f"{prefix}_ctr_smoothed_{w}" for w in wn) + ")",
        "_max_ctr": "greatest(" + ", ".join(f"{prefix}_ctr_smoothed_{w}" for w in wn) + ")",
        "_min_dwell": "least(" + ", ".join(f"{prefix}_dwell_mean_{w}" for w in wn) + ")",
    }


def _both_ends(rule: str, column: str, lo: float, hi: float) -> list:
    return [expectation("ExpectColumnValuesToBeBetween", f"{rule}{suffix}", TABLE, column=f"{column}{suffix}",
                        min_value=lo, max_value=hi) for suffix in ("", "__max")]


def _common_rules(name: str) -> list:
    return [
        expectation("ExpectColumnValuesToBeInSet", "stamped_at_midnight_utc", TABLE, column="_midnight",
                    value_set=[True]),
        expectation("ExpectColumnValuesToBeBetween", "one_row_per_key_and_day", TABLE, column="_rows_per_key",
                    min_value=1, max_value=1),
        expectation("ExpectColumnValuesToBeBetween", f"{name}_not_empty", TABLE, column="_rows", min_value=1),
    ]


def check_views(cfg: PipelineConfig) -> dict[str, tuple[str, list]]:
    """view -> (SQL select list of checked quantities, GX rules over them)."""
    w = cfg.features.windows_days
    n_cat = cfg.generation.preferences.categories
    out = {}
    for view, prefix, key in ((USER_VIEW, "user", "user_id"), (ITEM_VIEW, "item", "item_id")):
        checks = _prefix_checks(prefix, w)
        extra = {}
        rules = [
            expectation("ExpectColumnValuesToBeBetween", "counts_non_negative", TABLE, column="_min_count",
                        min_value=0),
            expectation("ExpectColumnValuesToBeInSet", "windows_nested", TABLE, column="_windows_monotone",
                        value_set=[True], notes="1d <= 7d <= 30d <= lifetime for every count"),
            expectation("ExpectColumnValuesToBeInSet", "likes_shares_le_clicks_le_impressions", TABLE,
                        column="_signals_consistent", value_set=[True]),
            expectation("ExpectColumnValuesToBeBetween", "smoothed_ctr_in_unit_interval", TABLE, column="_min_ctr",
                        min_value=0, strict_min=True),
            expectation("ExpectColumnValuesToBeBetween", "smoothed_ctr_below_one", TABLE, column="_max_ctr",
                        max_value=1, strict_max=True),
            expectation("ExpectColumnValuesToBeBetween", "dwell_means_in_range", TABLE, column="_min_dwell",
                        min_value=0),
            expectation("ExpectColumnValuesToBeInSet", f"{key}_not_null", TABLE, column="_key_present",
                        value_set=[True]),
        ]
        if view == USER_VIEW:
            extra["_affinity_sum"] = "list_sum(user_category_affinity)"
            extra["_affinity_len"] = "len(user_category_affinity)"
            extra["_born_before_snapshot"] = "user_signup_timestamp < event_timestamp"
            rules += [  # two-sided: the per-day minimum (`_x`) and maximum (`_x__max`) must both be in range
                *_both_ends("affinity_is_a_distribution", "_affinity_sum", 0.999, 1.001),
                *_both_ends("affinity_has_every_category", "_affinity_len", n_cat, n_cat),
            ]
        else:
            extra["_category"] = "item_category"
            extra["_born_before_snapshot"] = "item_creation_timestamp < event_timestamp"
            rules += _both_ends("category_in_range", "_category", 0, n_cat - 1)
        rules.append(expectation("ExpectColumnValuesToBeInSet", "entity_exists_before_snapshot", TABLE,
                                 column="_born_before_snapshot", value_set=[True]))
        select = ", ".join(f"{sql} AS {name}" for name, sql in {**checks, **extra}.items())
        out[view] = (f"{key} IS NOT NULL AS _key_present, {select}, hash({key}, event_timestamp) AS _key_hash",
                     rules + _common_rules(view))
    out[USER_ITEM_VIEW] = (
        "user_id IS NOT NULL AND item_id IS NOT NULL AS _key_present, "
        "user_item_clicks <= user_item_impressions AND user_item_clicks >= 0 AS _consistent, "
        "user_item_impressions AS _impressions, "
        "hash(user_id, item_id, event_timestamp) AS _key_hash",
        [expectation("ExpectColumnValuesToBeInSet", "clicks_le_impressions", TABLE, column="_consistent",
                     value_set=[True]),
         expectation("ExpectColumnValuesToBeBetween", "pair_seen_at_least_once", TABLE, column="_impressions",
                     min_value=1),
         expectation("ExpectColumnValuesToBeInSet", "keys_not_null", TABLE, column="_key_present", value_set=[True]),
         *_common_rules(USER_ITEM_VIEW)])
    return out


_AGGREGATE = {  # how each checked quantity is summarized per day: the day fails if any row fails
    "_min_count": "min", "_windows_monotone": "bool_and", "_signals_consistent": "bool_and", "_min_ctr": "min",
    "_max_ctr": "max", "_min_dwell": "min", "_affinity_sum": None, "_affinity_len": None, "_category": None,
    "_born_before_snapshot": "bool_and", "_midnight": "bool_and", "_consistent": "bool_and",
    "_impressions": "min", "_key_present": "bool_and",
}


def validate_stats(cfg: PipelineConfig, stage: Path, days: list[str], only_days: bool = False) -> None:
    """Validate the staged offline tables; raise ValidationFailed (nothing is published) on any failure.

    DuckDB computes each row's checked quantities and folds them per day (min / max / all), so GX evaluates a
    frame of one row per day per rule input instead of millions of rows; a failure names the offending days.
    Range checks on two-sided quantities (affinity sum and length, category) keep both the min and the max.
    """
    runner = GXRunner(docs_dir=Path(cfg.data_dir) / "reports" / "data_docs")
    con = duck.connect()
    failures = []
    for view, (select, rules) in check_views(cfg).items():
        files = sorted((stage / view).rglob("*.parquet"))
        if only_days:  # a published dataset: just these days' partitions
            files = [f for f in files if f.parent.name.removeprefix("date=") in set(days)]
        if not files:
            failures.append(f"{view}: no rows written for {days[0]}..{days[-1]}")
            continue
        rows = con.execute(f"""
            CREATE OR REPLACE TEMP TABLE checks AS
            SELECT {select}, event_timestamp = date_trunc('day', event_timestamp) AS _midnight,
                   strftime(event_timestamp - INTERVAL 1 DAY, '%Y-%m-%d') AS day
            FROM read_parquet($files, hive_partitioning = false)""", {"files": [str(f) for f in files]}).fetchone()
        columns = [c[0] for c in con.execute("DESCRIBE checks").fetchall()
                   if c[0].startswith("_") and c[0] != "_key_hash"]
        folds = []
        for c in columns:
            how = _AGGREGATE.get(c)
            folds += [f"{how}({c}) AS {c}"] if how else [f"min({c}) AS {c}", f"max({c}) AS {c}__max"]
        # one row per key and stamp: rows per day == distinct keys per day (a GROUP BY, not a window per row);
        # hash collisions could only hide a duplicate, never invent one
        frame = con.execute(f"SELECT day, count(*) AS _rows, count(*) - count(DISTINCT _key_hash) + 1 AS "
                            f"_rows_per_key, {', '.join(folds)} FROM checks GROUP BY day ORDER BY day").df()
        del rows
        outcomes = runner.validate(frame, suite(f"offline_{view}.v1", rules), f"offline_{view}",
                                   example_columns=["day"], run_name=f"offline {view} {days[0]}..{days[-1]}")
        log.info("stats gate for %s (%s rows over %d days)\n%s", view, f"{int(frame._rows.sum()):,}", len(frame),
                 summary_table(view, outcomes))
        failures += [f"{view}.{o.rule} failed on {[e['day'] for e in o.examples] or o.observed_value}"
                     for o in outcomes if not o.success or o.error]
    runner.build_docs()
    if failures:
        raise ValidationFailed("stats validation failed: " + "; ".join(failures[:3]))
