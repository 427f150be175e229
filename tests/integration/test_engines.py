"""The two engines (`engine: duckdb | spark`) give the same tables: same schema, rows and values, bit for bit.

The DuckDB engine is proven against brute force (test_stats.py); here every Spark output is compared with the
DuckDB output of the same inputs, content for content. One local[2] Spark session serves the whole run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from feedstore.core.contracts import offline_schema
from feedstore.core.spec import FEATURE_SPEC, LIFETIME, USER_DAILY_STATS, Feature, Tile
from tests.conftest import ROOT, pipeline_config

VIEWS = [v.name for v in FEATURE_SPEC.views]


def _inputs_copy(src: Path, dst: Path) -> Path:
    """A data dir with `src`'s raw and validated data and nothing computed from them."""
    for part in ("raw", "validated"):
        shutil.copytree(src / part, dst / part)
    return dst


def read_table(root: Path) -> pa.Table:
    """A hive-partitioned table (`date=` folders), without the partition column."""
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().drop_columns(["date"])


def _bits(column: pa.ChunkedArray) -> pa.Array:
    """Floats as their bit patterns (equality of bits, not of values: -0.0 != 0.0, one ulp counts)."""
    arr = column.combine_chunks()
    if pa.types.is_list(arr.type):
        return pa.ListArray.from_arrays(arr.offsets, _bits(pa.chunked_array([arr.flatten()])))
    if pa.types.is_floating(arr.type):
        width = {32: np.int32, 64: np.int64}[arr.type.bit_width]
        return pa.array(arr.to_numpy(zero_copy_only=False).view(width))
    return arr


def assert_same_table(a: pa.Table, b: pa.Table, keys: list[str], what: str) -> None:
    """Same columns in the same order with the same types, the same rows (order aside), the same bits."""
    assert [(f.name, str(f.type)) for f in a.schema] == [(f.name, str(f.type)) for f in b.schema] or \
        [(f.name, _type(f.type)) for f in a.schema] == [(f.name, _type(f.type)) for f in b.schema], what
    assert a.num_rows == b.num_rows, f"{what}: {a.num_rows} rows vs {b.num_rows}"
    order = [(k, "ascending") for k in [*keys, "event_timestamp"]]
    a, b = a.sort_by(order), b.sort_by(order)
    for name in a.column_names:
        x, y = _bits(a.column(name)), _bits(b.column(name))
        if not x.equals(y):
            diff = pc.sum(pc.invert(pc.fill_null(pc.equal(x, y), False))).as_py() if not pa.types.is_list(x.type) \
                else "some"
            pytest.fail(f"{what}: column {name} differs in {diff} rows")


def _type(t: pa.DataType) -> str:
    return f"list<{t.value_type}>" if pa.types.is_list(t) else str(t)


def assert_same_offline(dir_a: Path, dir_b: Path, views=FEATURE_SPEC.views) -> None:
    for view in views:
        a, b = read_table(dir_a / view.name), read_table(dir_b / view.name)
        assert [_type(f.type) for f in a.schema] == [_type(f.type) for f in offline_schema(view)]
        assert a.schema.names == offline_schema(view).names
        assert_same_table(a, b, list(view.keys), view.name)
        # the same partitions: one folder per snapshot day that has rows
        assert sorted(p.name for p in dir_a.joinpath(view.name).iterdir()) == \
            sorted(p.name for p in dir_b.joinpath(view.name).iterdir()), view.name


@pytest.fixture(scope="module")
def spark_stats(stats_data, spark, tmp_path_factory) -> Path:
    """`feedstore --engine spark stats` (in-process, the test session) on stats_data's validated data."""
    from feedstore.shell.cli import main

    d = _inputs_copy(stats_data, tmp_path_factory.mktemp("spark_stats"))
    cfg = pipeline_config(d)
    config = d / "pipeline.yaml"
    config.write_text(cfg.model_dump_json())  # JSON is YAML
    with pytest.raises(SystemExit) as done:
        main(["--config", str(config), "--data-dir", str(d), "--engine", "spark", "stats"])  # the flag beats a
        # FEEDSTORE_DATA_DIR an earlier in-process Feast test may have left in the environment
    assert done.value.code == 0
    return d


def test_spark_stats_equal_duckdb_stats_bit_for_bit(stats_data, spark_stats):
    """Full run, gate and publish through the CLI: every offline table equals the DuckDB engine's."""
    assert_same_offline(stats_data / "offline", spark_stats / "offline")
    # and the files carry the contract's types as written (microsecond UTC stamps, int32 category, float32 lists)
    import pyarrow.parquet as pq

    for view in FEATURE_SPEC.views:
        part = sorted((spark_stats / "offline" / view.name).rglob("*.parquet"))[0]
        schema = pq.read_schema(part)
        assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
        assert [_type(f.type) for f in schema] == [_type(f.type) for f in offline_schema(view)]
    assert not list((spark_stats / "offline").rglob("*.crc")) and not list((spark_stats / "offline").rglob("_SUCCESS"))


def _staged(engine: str, data_dir: Path, spec=FEATURE_SPEC, **kw) -> Path:
    """Run one engine's full compute (no gate, no publish) and move its staging out of the way; return it."""
    cfg = pipeline_config(data_dir)
    if engine == "spark":
        from feedstore.ingestion.stats.spark_engine import compute_stats
    else:
        from feedstore.ingestion.stats.compute import compute_stats
    staged = compute_stats(cfg, spec=spec, **kw)
    out = data_dir / f"staged-{engine}"
    shutil.move(staged.root, out)
    staged.discard()  # drops the rest of the version (the DuckDB engine's tiles and state) and the stage's lock
    return out


def test_a_few_days_recomputed_on_spark_equal_those_days_of_the_duckdb_run(stats_data, spark, tmp_path):
    """start/end on Spark: activity before `start` still counts, rows only for the chosen days, equal to those days
    of the DuckDB engine's full run (its own day ranges are the incremental update, tested in test_incremental)."""
    d = _inputs_copy(stats_data, tmp_path / "d")
    spk = _staged("spark", d, start=date(2024, 3, 9), end=date(2024, 3, 11))
    for view in FEATURE_SPEC.views:
        parts = sorted(p.name for p in (spk / view.name).iterdir())
        assert parts == [f"date=2024-03-{n}" for n in ("09", "10", "11")], (view.name, parts)
        full = ds.dataset(stats_data / "offline" / view.name, format="parquet", partitioning="hive").to_table(
            filter=pc.field("date").isin(["2024-03-09", "2024-03-10", "2024-03-11"])).drop_columns(["date"])
        assert_same_table(read_table(spk / view.name), full, list(view.keys), f"{view.name} vs full run")


def test_a_changed_spec_compiles_to_the_same_tables_on_both_engines(stats_data, spark, tmp_path):
    """The Spark engine is compiled from the spec, not written for today's windows and tiles: other windows,
    another heartbeat and one more aggregation (a new tile bounded by clicks) give equal tables on both engines."""
    long_dwells = Tile("long_dwells", "CASE WHEN click = 1 AND dwell_time > 30 THEN 1 ELSE 0 END",
                       "clicks that dwelt over 30 s", bounded_by="clicks")
    view = replace(USER_DAILY_STATS, windows=(3, 14, LIFETIME), heartbeat_days=5,
                   tiles=(*USER_DAILY_STATS.tiles, long_dwells),
                   features=(*USER_DAILY_STATS.features, Feature("long_dwells", "count", "long_dwells", "long dwells")))
    spec = replace(FEATURE_SPEC, views=(view,), on_demand=(), service_order=())
    d = _inputs_copy(stats_data, tmp_path / "d")
    duck, spk = _staged("duckdb", d, spec), _staged("spark", d, spec)
    assert_same_offline(duck, spk, spec.views)
    cols = read_table(spk / view.name).column_names
    assert "user_clicks_14d" in cols and "user_long_dwells_3d" in cols and "user_clicks_7d" not in cols


def test_the_duckdb_engine_never_imports_pyspark():
    code = ("import sys; import feedstore.shell.cli, feedstore.shell.runner, feedstore.ingestion.stats.compute, "
            "feedstore.ingestion.stats.gate, feedstore.ingestion.validate.run, feedstore.core.spark; "
            "assert 'pyspark' not in sys.modules, 'pyspark imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ------------------------------------------------------------------------------------------ validation


def _validation_config(data_dir: Path, engine: str):
    from feedstore.core.config import PipelineConfig
    from tests.conftest import small_generation

    gen = small_generation(users=300, items=800, interactions=6_000, start="2024-02-01", end="2024-02-14", seed=5)
    return PipelineConfig(data_dir=data_dir, generation=gen, engine=engine,
                          validation={"max_quarantine_fraction": 0.1})


@pytest.fixture(scope="module")
def validated_both(spark, tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """Faulty raw data (4% of rows corrupted, every defect kind) validated by each engine through the runner."""
    from datetime import datetime, timezone

    from feedstore.ingestion.generate.run import write_raw_events
    from feedstore.shell.runner import validate_events

    src = tmp_path_factory.mktemp("faulty_raw")
    write_raw_events(_validation_config(src, "duckdb").generation, src, fault_rate=0.04, progress=False)
    out = {}
    for engine in ("duckdb", "spark"):
        d = tmp_path_factory.mktemp(f"validated_{engine}")
        shutil.copytree(src / "raw", d / "raw")
        out[engine] = (d, validate_events(_validation_config(d, engine), as_of=datetime(2026, 1, 1,
                                                                                         tzinfo=timezone.utc)))
    return out


def test_validation_counts_reasons_and_rules_equal_on_both_engines(validated_both):
    import json

    from feedstore.ingestion.generate.faults import KINDS

    (_, duck), (d_spark, spk) = validated_both["duckdb"], validated_both["spark"]
    assert duck.passed and spk.passed and duck.days == spk.days
    for name in ("users", "items", "interactions"):
        a, b = duck.tables[name], spk.tables[name]
        assert (a.rows_in, a.validated, a.quarantined, a.by_reason) == (b.rows_in, b.validated, b.quarantined,
                                                                        b.by_reason), name
        assert b.rows_in == b.validated + b.quarantined
        assert sorted(a.outcomes) == sorted(b.outcomes), name
        for rule, o in a.outcomes.items():
            p = b.outcomes[rule]
            assert (o.success, o.unexpected_count, o.level, o.error) == (p.success, p.unexpected_count, p.level,
                                                                         p.error), (name, rule)
            assert o.examples == p.examples, (name, rule)
    faults = json.loads((d_spark / "raw" / "faults.json").read_text())["counts"]
    assert all(spk.tables["interactions"].by_reason.get(k, 0) == faults[k] > 0 for k in KINDS)
    report = json.loads((d_spark / "reports" / "validation" / "interactions.json").read_text())
    assert report["reconciles"] and report["fault_reconciliation"]["all_match"]


@pytest.mark.parametrize("kind", ["validated", "quarantine"])
def test_validated_and_quarantined_outputs_equal_on_both_engines(validated_both, kind):
    (d_duck, _), (d_spark, _) = validated_both["duckdb"], validated_both["spark"]
    for name in ("users", "items"):
        a, b = (d / kind / f"{name}.parquet" for d in (d_duck, d_spark))
        assert a.exists() == b.exists(), (kind, name)
        if a.exists():
            import pyarrow.parquet as pq

            ta, tb = pq.read_table(a), pq.read_table(b)
            ta, tb = (_relative_source(t, d) for t, d in ((ta, d_duck), (tb, d_spark)))
            assert ta.schema.names == tb.schema.names
            assert ta.cast(tb.schema).equals(tb), (kind, name)  # same rows in the same order
    a_dir, b_dir = (d / kind / "interactions" for d in (d_duck, d_spark))
    assert sorted(p.name for p in a_dir.iterdir()) == sorted(p.name for p in b_dir.iterdir())
    for part in sorted(a_dir.iterdir()):
        import pyarrow.parquet as pq

        ta = _relative_source(pq.read_table(part / "part-0.parquet"), d_duck)
        (file_b,) = (b_dir / part.name).glob("*.parquet")  # one file per day, rows in source order
        tb = _relative_source(pq.read_table(file_b), d_spark)
        assert ta.schema.names == tb.schema.names, part.name
        assert [str(t) for t in ta.schema.types] == [str(t) for t in tb.schema.types], part.name
        assert ta.cast(tb.schema).equals(tb), (kind, part.name)


def _relative_source(table: pa.Table, root: Path) -> pa.Table:
    """`_source_file` relative to the data dir (the two runs read copies of the same raw files)."""
    if "_source_file" not in table.column_names:
        return table
    rel = pc.replace_substring(table.column("_source_file"), str(root), "")
    return table.set_column(table.schema.get_field_index("_source_file"), "_source_file", rel)
