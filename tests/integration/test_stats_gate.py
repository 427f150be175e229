"""The statistics gate catches what a bug in the computation would write: each case corrupts one row of one day of
a correct offline table and the gate must fail on that rule and name that day (and pass on the untouched copy)."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from feedstore.core.errors import ValidationFailed
from feedstore.ingestion.stats.gate import validate_stats
from tests.conftest import pipeline_config

DAY = "2024-03-10"  # the day a row covers; its file is the partition of that date, stamped at the next midnight


def _set(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    i = table.schema.get_field_index(column)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def _bump(column: str, above: str):
    """Set `column` of the first row to `above` + 1 (a count larger than the count bounding it)."""
    return lambda t: _set(t, column, 0, t.column(above)[0].as_py() + 1)


CASES = {
    "duplicate_row": ("user_daily_stats", "one_row_per_key_and_day", lambda t: pa.concat_tables([t, t.slice(0, 1)])),
    "stamp_off_midnight": ("item_daily_stats", "stamped_at_midnight_utc",
                           lambda t: _set(t, "event_timestamp", 0,
                                          t.column("event_timestamp")[0].as_py() + timedelta(hours=1))),
    "likes_above_clicks": ("item_daily_stats", "counts_within_bounds",
                           _bump("item_likes_lifetime", "item_clicks_lifetime")),
    "window_not_nested": ("user_daily_stats", "windows_nested", _bump("user_impressions_1d", "user_impressions_7d")),
    "rate_of_one": ("user_daily_stats", "smoothed_rates_below_one", lambda t: _set(t, "user_ctr_smoothed_7d", 0, 1.0)),
    "negative_count": ("user_item_daily_stats", "counts_non_negative",
                       lambda t: _set(t, "user_item_clicks", 0, -1)),
    "null_key": ("item_daily_stats", "keys_not_null", lambda t: _set(t, "item_id", 0, None)),
}


@pytest.fixture()
def offline_copy(stats_data, tmp_path):
    root = tmp_path / "staged"
    shutil.copytree(stats_data / "offline", root)
    return root


def test_gate_passes_on_the_computed_tables(stats_data, offline_copy):
    validate_stats(pipeline_config(stats_data), [DAY, "2024-03-11"], root=offline_copy)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_gate_fails_on_the_corrupted_rule_and_day(case, stats_data, offline_copy):
    view, rule, corrupt = CASES[case]
    (part,) = (offline_copy / view / f"date={DAY}").glob("*.parquet")
    table = pq.read_table(part)
    assert table.num_rows > 1 and not pc.any(pc.is_null(table.column(0))).as_py()
    pq.write_table(corrupt(table), part)
    with pytest.raises(ValidationFailed) as failed:
        validate_stats(pipeline_config(stats_data), ["2024-03-09", DAY, "2024-03-11"], root=offline_copy)
    message = str(failed.value)
    assert f"{view}.{rule} failed on ['{DAY}']" in message, message
    assert "2024-03-09" not in message and "2024-03-11" not in message
