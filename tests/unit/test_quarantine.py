"""Pure pieces of the gate: reasons from rule outcomes, schema checks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from feedstore.core.errors import InputDataError
from feedstore.core.gx import ROW, TABLE, RuleOutcome
from feedstore.ingestion.validate.quarantine import quarantine_mask
from feedstore.ingestion.validate.reading import check_schema


def outcome(rule, rows, level=ROW):
    return RuleOutcome(rule=rule, level=level, severity="warning", expectation_type="x", kwargs={}, success=True,
                       unexpected_count=len(rows), unexpected_rows=np.asarray(rows, dtype=np.int64))


def test_reasons_join_every_failed_rule_per_row():
    bad, reasons, counts = quarantine_mask(6, [outcome("b_rule", [1, 4]), outcome("a_rule", [4, 5]),
                                               outcome("table_rule", [0, 1, 2], level=TABLE)])
    assert bad.tolist() == [False, True, False, False, True, True]
    assert reasons.tolist() == ["b_rule", "a_rule;b_rule", "a_rule"]
    assert counts == {"a_rule": 2, "b_rule": 2}


def test_no_bad_rows():
    bad, reasons, counts = quarantine_mask(3, [outcome("r", [])])
    assert not bad.any() and len(reasons) == 0 and counts == {}


SCHEMA = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC"))])


@pytest.mark.parametrize(
    ("actual", "fragment"),
    [
        (pa.schema([("ts", pa.timestamp("us", tz="UTC"))]), "missing column 'user_id'"),
        (pa.schema([("user_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC"))]),
         "column 'user_id' has type string, expected int64"),
        (pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us"))]), "expected a UTC timestamp"),
        (pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("x", pa.int8())]),
         "unexpected column 'x'"),
    ],
)
def test_schema_errors_name_file_column_and_problem(actual, fragment):
    with pytest.raises(InputDataError) as e:
        check_schema("f.parquet", actual, SCHEMA)
    assert str(e.value).startswith("f.parquet: ") and fragment in str(e.value)


def test_schema_accepts_other_timestamp_units_in_utc():
    check_schema("f", pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("ms", tz="UTC"))]), SCHEMA)
