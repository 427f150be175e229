"""feedstore.core.gx_fast changes how fast GX validates, never what it finds: the same suite on the same frame,
validated by stock GX (a fresh process without the speed-ups) and through `GXRunner`, gives the same result for
every expectation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Runs in a fresh interpreter: builds a frame with nulls, out-of-range values, masked columns (mostly null) and an
# Arrow-backed string column, validates it with `mode` = "stock" (plain GX calls, no feedstore import) or "fast"
# (GXRunner, which applies gx_fast), and prints every expectation's result plus the fingerprint GX computes.
SCRIPT = r"""
import json, sys
import numpy as np, pandas as pd, pyarrow as pa
import great_expectations as gx
import great_expectations.expectations as gxe

mode = sys.argv[1]
rng = np.random.default_rng(7)
n = 20_000
click = rng.integers(0, 2, n).astype(float)
click[rng.random(n) < 0.01] = np.nan
a = rng.integers(-5, 100, n).astype(float)
a[rng.random(n) < 0.05] = np.nan
b = a.copy()
b[rng.random(n) < 0.02] += 1
ids = pa.array([None if i % 997 == 0 else f"id-{i}" for i in range(n)])
df = pd.DataFrame({
    "id": pd.arrays.ArrowExtensionArray(ids),
    "click": click,
    "a": a,
    "b": b,
    "device": pd.Categorical(rng.choice(["mobile", "desktop", "tablet", "toaster"], n, p=[.5, .3, .19, .01])),
    "flag": pd.arrays.BooleanArray(rng.random(n) < 0.99, rng.random(n) < 0.01),
    "like_if_no_click": pd.Series(rng.integers(0, 2, n)).where(click == 0).astype("Int8").array,
    "ts": pd.to_datetime(rng.integers(1.7e9, 1.8e9, n), unit="s", utc=True),
})
exps = [
    gxe.ExpectColumnValuesToNotBeNull(column="id", mostly=0.999),
    gxe.ExpectColumnValuesToBeInSet(column="click", value_set=[0, 1], mostly=0.95),
    gxe.ExpectColumnValuesToBeBetween(column="a", min_value=0, max_value=90, mostly=0.5),
    gxe.ExpectColumnValuesToBeInSet(column="device", value_set=["mobile", "desktop", "tablet"]),
    gxe.ExpectColumnValuesToBeInSet(column="flag", value_set=[True]),
    gxe.ExpectColumnValuesToBeInSet(column="like_if_no_click", value_set=[0]),
    gxe.ExpectColumnPairValuesToBeEqual(column_A="a", column_B="b", ignore_row_if="either_value_is_missing"),
    gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="b", column_B="a", or_equal=True,
                                                ignore_row_if="either_value_is_missing"),
    gxe.ExpectColumnValuesToBeBetween(column="ts", max_value=pd.Timestamp("2026-01-01", tz="UTC")),
    gxe.ExpectTableRowCountToBeBetween(min_value=1),
]
if mode == "stock":
    ctx = gx.get_context(mode="ephemeral")
else:
    from feedstore.core.gx import GXRunner
    runner = GXRunner(None)
for k, e in enumerate(exps):
    e.meta = {"rule": f"r{k}", "level": "row"}
suite = gx.ExpectationSuite(name="s")
for e in exps:
    suite.add_expectation(e)
fmt = {"result_format": "COMPLETE", "partial_unexpected_count": 5, "return_unexpected_index_query": False}
from great_expectations.execution_engine import pandas_execution_engine as pee
fingerprints = []
hash_frame = pee.hash_pandas_dataframe
if mode == "stock":
    def spy(frame):
        fingerprints.append(hash_frame(frame))
        return fingerprints[-1]
    pee.hash_pandas_dataframe = spy
    batch = ctx.data_sources.add_pandas("p").add_dataframe_asset("x").add_batch_definition_whole_dataframe(
        "w").get_batch(batch_parameters={"dataframe": df})
    results = batch.validate(ctx.suites.add(suite), result_format=fmt).results
    found = [{"success": r.success, "result": r.result} for r in results]
else:
    patched = pee.hash_pandas_dataframe
    def spy(frame):
        fingerprints.append(patched(frame))
        return fingerprints[-1]
    pee.hash_pandas_dataframe = spy
    outcomes = runner.validate(df, suite, "x")
    found = [{"success": o.success, "unexpected_count": o.unexpected_count, "element_count": o.element_count,
              "unexpected_percent": o.unexpected_percent, "observed_value": o.observed_value,
              "rows": o.unexpected_rows.tolist()} for o in outcomes]
print(json.dumps({"found": found, "fingerprints": fingerprints}, default=str))
"""


def _validate(script: Path, mode: str) -> dict:
    # a script file, not `python -c`: pyspark (which GX imports when it is installed) exits a `-c` process early,
    # taking it for a doctest run
    out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gx_fast_finds_what_stock_gx_finds(tmp_path):
    script = tmp_path / "validate.py"
    script.write_text(SCRIPT)
    stock, fast = _validate(script, "stock"), _validate(script, "fast")
    assert len(stock["found"]) == len(fast["found"]) == 10
    for k, (s, f) in enumerate(zip(stock["found"], fast["found"], strict=True)):
        res = s["result"]
        assert f["success"] == s["success"], k
        assert f["unexpected_count"] == res.get("unexpected_count", 0), k
        assert f["element_count"] == res.get("element_count"), k
        assert f["unexpected_percent"] == res.get("unexpected_percent"), k
        assert f["rows"] == res.get("unexpected_index_list", []), k
        if "observed_value" in res:
            assert f["observed_value"] == res["observed_value"], k
    # the frame has failures of most kinds, so the comparison means something
    assert sum(1 for s in stock["found"] if not s["success"]) >= 6
    # stock GX fingerprints the frame twice per validation (a digest nothing of ours reads); the runner never does
    assert len(stock["fingerprints"]) == 2 and fast["fingerprints"] == []


WITHOUT_SPARK = r"""
import sys
from feedstore.core import gx_fast
from feedstore.core.errors import ConfigError
gx_fast.without_spark()
gx_fast.load()
assert "great_expectations.expectations" in sys.modules
assert "pyspark" not in sys.modules, "GX loaded pyspark"
assert not gx_fast.spark_available()
import pyspark.sql  # importable again once GX is in
from feedstore.ingestion.validate.spark_engine import SparkGXRunner
try:
    SparkGXRunner()
except ConfigError as e:
    print("refused:", e)
"""


def test_gx_without_spark_loads_no_pyspark_and_validating_on_spark_then_says_why(tmp_path):
    """gx_fast.without_spark (the CLI on the DuckDB engine): GX imports with pyspark hidden, pyspark stays importable
    after it, and GX's Spark validation in that process fails with one line instead of GX's missing-pyspark
    errors. A script file, not `python -c`: pyspark.sql.connect exits a `python -c` process during GX's import."""
    from tests.conftest import require_spark

    require_spark()
    script = tmp_path / "without_spark.py"
    script.write_text(WITHOUT_SPARK)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "refused: Great Expectations was loaded without Spark support" in res.stdout
