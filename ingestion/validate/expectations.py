"""Expectation suites (GX 1.x, as code) guarding the raw-data contract in `feedstore/core/contracts.py`.

Row rules quarantine the rows they flag, each with its rule name as the reason; table rules stop the run.
Rule names for injected defects equal the fault kinds in `ingestion/generate/faults.py`, so counts reconcile 1:1.
Exact Arrow types are checked when files are read (a wrong type is an input error, before GX runs).

Duplicates policy: `interaction_id` is unique; a repeated id keeps its first occurrence (earliest
`event_timestamp`, then file order) and quarantines the rest. A feed request never shows an item twice, so a
repeated `(user_id, item_id, event_timestamp)` is a double-logged impression: the later copy is quarantined.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from feedstore.core.config import DEVICES, PipelineConfig
from feedstore.core.contracts import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, TIME_OF_DAY, USERS_SCHEMA
from feedstore.core.gx import TABLE, expectation, suite

USERS_SUITE = "raw_users.v1"
ITEMS_SUITE = "raw_items.v1"
INTERACTIONS_SUITE = "raw_interactions.v1"
INTERACTIONS_TOTALS_SUITE = "raw_interactions_totals.v1"
INTERACTIONS_DAILY_SUITE = "raw_interactions_daily.v1"

#: Columns the validation view adds to raw interactions (lookups and recomputations, never stored).
#: Conditional rules use masked columns (`_like_if_no_click` is `like` where click == 0, else null) instead of GX
#: row_conditions: GX copies the whole frame for every row_condition (several times slower; bench/RESULTS.md).
DERIVED = ["_signup_date", "_creation_date", "_expected_time_of_day", "_expected_day_of_week",
           "_id_occurrence", "_impression_occurrence", "_user_known", "_item_known", "_like_if_no_click",
           "_share_if_no_click", "_dwell_if_no_click", "_dwell_if_click"]

SEGMENTS = ["power", "regular", "casual", "inactive"]


def _not_null(columns: list[str], mostly: float) -> list:
    return [expectation("ExpectColumnValuesToNotBeNull", f"null_{c}", column=c, mostly=mostly) for c in columns]


def users_suite(cfg: PipelineConfig):
    v, n_cat = cfg.validation, cfg.generation.preferences.categories
    return suite(USERS_SUITE, [
        expectation("ExpectTableColumnsToMatchSet", "schema_columns", TABLE,
                    column_set=[*USERS_SCHEMA.names, "_occurrence"], exact_match=True),
        expectation("ExpectTableRowCountToBeBetween", "not_empty", TABLE, min_value=1),
        *_not_null(USERS_SCHEMA.names, v.mostly),
        expectation("ExpectColumnValuesToBeBetween", "duplicate_user_id", column="_occurrence", max_value=1,
                    mostly=v.mostly, notes="user_id not seen before in the file (a repeat is quarantined, the first "
                    "occurrence kept)"),
        expectation("ExpectColumnValuesToBeInSet", "unknown_segment", column="segment", value_set=SEGMENTS,
                    mostly=v.mostly),
        expectation("ExpectColumnValuesToBeInSet", "unknown_device_preference", column="device_preference",
                    value_set=list(DEVICES), mostly=v.mostly),
        expectation("ExpectColumnValuesToBeBetween", "preferred_category_out_of_range", column="preferred_category",
                    min_value=0, max_value=n_cat - 1, mostly=v.mostly),
        expectation("ExpectColumnValuesToBeBetween", "activity_weight_negative", column="activity_weight",
                    min_value=0, mostly=v.mostly),
    ])


def items_suite(cfg: PipelineConfig):
    v, n_cat = cfg.validation, cfg.generation.preferences.categories
    return suite(ITEMS_SUITE, [
        expectation("ExpectTableColumnsToMatchSet", "schema_columns", TABLE,
                    column_set=[*ITEMS_SCHEMA.names, "_occurrence"], exact_match=True),
        expectation("ExpectTableRowCountToBeBetween", "not_empty", TABLE, min_value=1),
        *_not_null(ITEMS_SCHEMA.names, v.mostly),
        expectation("ExpectColumnValuesToBeBetween", "duplicate_item_id", column="_occurrence", max_value=1,
                    mostly=v.mostly, notes="item_id not seen before in the file (a repeat is quarantined, the first "
                    "occurrence kept)"),
        expectation("ExpectColumnValuesToBeBetween", "category_out_of_range", column="category", min_value=0,
                    max_value=n_cat - 1, mostly=v.mostly),
        expectation("ExpectColumnValuesToBeBetween", "base_quality_out_of_range", column="base_quality",
                    min_value=0, max_value=1, mostly=v.mostly),
        expectation("ExpectColumnValuesToBeBetween", "popularity_prior_negative", column="popularity_prior",
                    min_value=0, mostly=v.mostly),
    ])


def interactions_suite(cfg: PipelineConfig, as_of: datetime):
    """Row rules over the validation view of raw interactions (raw columns + `DERIVED`)."""
    v, g = cfg.validation, cfg.generation
    m = v.mostly
    ts = "event_timestamp"
    cap = g.engagement.dwell_cap_seconds
    return suite(INTERACTIONS_SUITE, [
        expectation("ExpectTableColumnsToMatchSet", "schema_columns", TABLE,
                    column_set=INTERACTIONS_SCHEMA.names + DERIVED, exact_match=True),
        # keys
        *_not_null(INTERACTIONS_SCHEMA.names, m),
        expectation("ExpectColumnValuesToBeBetween", "duplicate_interaction_id", column="_id_occurrence",
                    max_value=1, mostly=m, notes="interaction_id not seen before (earliest occurrence kept)"),
        expectation("ExpectColumnValuesToBeBetween", "duplicate_impression", column="_impression_occurrence",
                    max_value=1, mostly=m, notes="(user_id, item_id, event_timestamp) not seen before: a feed "
                    "request never shows an item twice"),
        # referential integrity (lookups into validated users and items)
        expectation("ExpectColumnValuesToBeInSet", "unknown_user_id", column="_user_known", value_set=[True],
                    mostly=m, notes="user_id is a validated user"),
        expectation("ExpectColumnValuesToBeInSet", "unknown_item_id", column="_item_known", value_set=[True],
                    mostly=m, notes="item_id is a validated item"),
        # value sets and ranges
        *[expectation("ExpectColumnValuesToBeInSet", f"{c}_out_of_set", column=c, value_set=[0, 1], mostly=m)
          for c in ("click", "like", "share")],
        expectation("ExpectColumnValuesToBeInSet", "unknown_device", column="device", value_set=list(DEVICES),
                    mostly=m),
        expectation("ExpectColumnValuesToBeInSet", "unknown_time_of_day", column="time_of_day",
                    value_set=list(TIME_OF_DAY), mostly=m),
        expectation("ExpectColumnValuesToBeBetween", "day_of_week_out_of_range", column="day_of_week",
                    min_value=0, max_value=6, mostly=m),
        expectation("ExpectColumnValuesToBeBetween", "dwell_negative", column="dwell_time", min_value=0, mostly=m),
        expectation("ExpectColumnValuesToBeBetween", "dwell_too_long", column="dwell_time", max_value=cap,
                    mostly=m),
        # consistency between columns
        expectation("ExpectColumnValuesToBeInSet", "like_without_click", column="_like_if_no_click", value_set=[0],
                    mostly=m, notes="no like without a click"),
        expectation("ExpectColumnValuesToBeInSet", "share_without_click", column="_share_if_no_click",
                    value_set=[0], mostly=m, notes="no share without a click"),
        expectation("ExpectColumnValuesToBeBetween", "dwell_without_click", column="_dwell_if_no_click",
                    max_value=0, mostly=m, notes="dwell_time is 0 when there is no click"),
        expectation("ExpectColumnValuesToBeBetween", "click_without_dwell", column="_dwell_if_click", min_value=0,
                    strict_min=True, mostly=m, notes="dwell_time > 0 when there is a click"),
        expectation("ExpectColumnPairValuesToBeEqual", "time_of_day_mismatch", column_A="time_of_day",
                    column_B="_expected_time_of_day", ignore_row_if="either_value_is_missing", mostly=m,
                    notes="time_of_day agrees with the hour of event_timestamp (UTC)"),
        expectation("ExpectColumnPairValuesToBeEqual", "day_of_week_mismatch", column_A="day_of_week",
                    column_B="_expected_day_of_week", ignore_row_if="either_value_is_missing", mostly=m,
                    notes="day_of_week agrees with event_timestamp (0 = Monday)"),
        # time
        expectation("ExpectColumnPairValuesAToBeGreaterThanB", "before_signup", column_A=ts, column_B="_signup_date",
                    or_equal=True, ignore_row_if="either_value_is_missing", mostly=m,
                    notes="event_timestamp is not before the user's signup_date"),
        expectation("ExpectColumnPairValuesAToBeGreaterThanB", "before_creation", column_A=ts,
                    column_B="_creation_date", or_equal=True, ignore_row_if="either_value_is_missing", mostly=m,
                    notes="event_timestamp is not before the item's creation_date"),
        expectation("ExpectColumnValuesToBeBetween", "before_start", column=ts, min_value=pd.Timestamp(g.start_ts),
                    mostly=m),
        expectation("ExpectColumnValuesToBeBetween", "after_end", column=ts, max_value=pd.Timestamp(g.end_ts),
                    strict_max=True, mostly=m),
        expectation("ExpectColumnValuesToBeBetween", "in_future", column=ts, max_value=pd.Timestamp(as_of),
                    mostly=m),
    ])


def interactions_totals_suite(cfg: PipelineConfig):
    """Table rules over a one-row frame of totals of the validated interactions."""
    v = cfg.validation
    return suite(INTERACTIONS_TOTALS_SUITE, [
        expectation("ExpectColumnValuesToBeBetween", "ctr_in_range", TABLE, column="ctr",
                    min_value=v.ctr[0], max_value=v.ctr[1]),
        expectation("ExpectColumnValuesToBeBetween", "like_rate_in_range", TABLE, column="like_rate",
                    min_value=v.like_rate[0], max_value=v.like_rate[1]),
        expectation("ExpectColumnValuesToBeBetween", "validated_rows_present", TABLE, column="validated_rows",
                    min_value=1),
        expectation("ExpectColumnValuesToBeBetween", "interaction_id_uniqueness", TABLE,
                    column="duplicate_id_fraction", max_value=v.max_duplicate_id_fraction),
    ])


def interactions_daily_suite(cfg: PipelineConfig):
    """Table rules over one row per expected day: no gaps, no volume spikes or drops."""
    v = cfg.validation
    lo, hi = v.daily_rows_vs_median
    return suite(INTERACTIONS_DAILY_SUITE, [
        expectation("ExpectColumnValuesToBeBetween", "rows_every_day", TABLE, column="rows",
                    min_value=v.min_rows_per_day),
        expectation("ExpectColumnValuesToBeBetween", "daily_volume_vs_median", TABLE, column="rows_vs_median",
                    min_value=lo, max_value=hi),
    ])
