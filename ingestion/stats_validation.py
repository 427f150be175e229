"""The gate on `feedstore stats` output: GX suites over a check view of each offline table.

Statistics are computed, not ingested, so every rule is table-level (critical): a violation is a bug and
stops the pipeline before Feast reads the files. DuckDB derives the checked quantities (monotone windows,
clicks <= impressions, ...) in one scan; GX evaluates the suite on that narrow frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

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


def _common_rules(name: str) -> list:
    return [
        expectation("ExpectColumnValuesToBeInSet", "stamped_at_midnight_utc", TABLE, column="_midnight",
                    value_set=[True]),
        expectation("ExpectColumnValuesToBeBetween", "one_row_per_key_and_day", TABLE, column="_rows_per_key",
                    min_value=1, max_value=1),
        expectation("ExpectTableRowCountToBeBetween", f"{name}_not_empty", TABLE, min_value=1),
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
            expectation("ExpectColumnValuesToNotBeNull", f"{key}_not_null", TABLE, column=key),
        ]
        if view == USER_VIEW:
            extra["_affinity_sum"] = "list_sum(user_category_affinity)"
            extra["_affinity_len"] = "len(user_category_affinity)"
            extra["_born_before_snapshot"] = "user_signup_timestamp < event_timestamp"
            rules += [
                expectation("ExpectColumnValuesToBeBetween", "affinity_is_a_distribution", TABLE,
                            column="_affinity_sum", min_value=0.999, max_value=1.001),
                expectation("ExpectColumnValuesToBeBetween", "affinity_has_every_category", TABLE,
                            column="_affinity_len", min_value=n_cat, max_value=n_cat),
            ]
        else:
            extra["_category"] = "item_category"
            extra["_born_before_snapshot"] = "item_creation_timestamp < event_timestamp"
            rules.append(expectation("ExpectColumnValuesToBeBetween", "category_in_range", TABLE,
                                     column="_category", min_value=0, max_value=n_cat - 1))
        rules.append(expectation("ExpectColumnValuesToBeInSet", "entity_exists_before_snapshot", TABLE,
                                 column="_born_before_snapshot", value_set=[True]))
        select = ", ".join(f"{sql} AS {name}" for name, sql in {**checks, **extra}.items())
        out[view] = (f"{key}, {select}, count(*) OVER (PARTITION BY {key}, event_timestamp) AS _rows_per_key",
                     rules + _common_rules(view))
    out[USER_ITEM_VIEW] = (
        "user_id, user_item_clicks <= user_item_impressions AND user_item_clicks >= 0 AS _consistent, "
        "user_item_impressions AS _impressions, "
        "count(*) OVER (PARTITION BY user_id, item_id, event_timestamp) AS _rows_per_key",
        [expectation("ExpectColumnValuesToBeInSet", "clicks_le_impressions", TABLE, column="_consistent",
                     value_set=[True]),
         expectation("ExpectColumnValuesToBeBetween", "pair_seen_at_least_once", TABLE, column="_impressions",
                     min_value=1),
         *_common_rules(USER_ITEM_VIEW)])
    return out


def validate_stats(cfg: PipelineConfig, stage: Path, days: list[str]) -> None:
    """Validate the staged offline tables; raise ValidationFailed (nothing is published) on any failure."""
    runner = GXRunner(docs_dir=Path(cfg.data_dir) / "reports" / "data_docs")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    failures = []
    for view, (select, rules) in check_views(cfg).items():
        files = sorted((stage / view).rglob("*.parquet"))
        if not files:
            failures.append(f"{view}: no rows written for {days[0]}..{days[-1]}")
            continue
        frame = con.execute(
            f"SELECT {select}, event_timestamp = date_trunc('day', event_timestamp) AS _midnight "
            f"FROM read_parquet($files, hive_partitioning = false)", {"files": [str(f) for f in files]}).df()
        outcomes = runner.validate(frame, suite(f"offline_{view}.v1", rules), f"offline_{view}",
                                   run_name=f"offline {view} {days[0]}..{days[-1]}")
        log.info("stats gate for %s (%s rows)\n%s", view, f"{len(frame):,}", summary_table(view, outcomes))
        failures += [f"{view}.{o.rule} failed (observed {o.observed_value})" for o in outcomes
                     if not o.success or o.error]
    runner.build_docs()
    if failures:
        raise ValidationFailed("stats validation failed: " + "; ".join(failures[:3]))
