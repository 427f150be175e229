"""Materialization inside Spark (FastMaterializationEngine with the Spark offline store: feature_store.spark.yaml,
`--online-store redis-spark`) against Feast's stock engine: the same bytes in Redis for every key and field
(HGETALL), on the pipeline's statistics plus the edge-value rows of test_fast_materialize (nulls, NaN, infinities,
pre-1970 and sub-second stamps, several rows per entity, rows after the window); Feast's CLI and registry
bookkeeping; then the pipeline's own `materialize` on Spark and the skew check with nothing found.

The in-process runs use the one local[2] Spark session of the test run (tests/conftest.py); the Redis is this
module's own throwaway redis-server (never a Redis the tests did not start)."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import ROOT, pipeline_config, start_redis_server
from tests.integration.test_fast_materialize import FMT, VIEWS, _dump, _feast, _latest_counts, _per_view, _repo
from tests.integration.test_fast_materialize import edge_data as edge_data  # a fixture: shared, not redefined


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """host:port of a redis-server started for this module (its databases start empty)."""
    proc, url = start_redis_server(tmp_path_factory.mktemp("redis-spark"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _spark_repo(tmp: Path, name: str, connection: str) -> tuple[Path, Path]:
    """A copy of feature_repo/ with feature_store.spark.yaml as its yaml: its own registry and Redis database,
    several write batches per partition."""
    repo = tmp / f"repo-{name}"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    text = (ROOT / "feature_repo" / "feature_store.spark.yaml").read_text()
    assert "type: feedstore.plugins.fast_materialize.FastMaterializationEngine" in text
    assert "type: feedstore.plugins.spark_offline_store.SparkPitOfflineStore" in text
    text = text.replace("registry.redis-spark.db", f"registry.{name}.db")
    text = text.replace("${REDIS_CONNECTION_STRING}", connection).replace("${FEEDSTORE_SPARK_MASTER}", "local[2]")
    text, n = re.subn(r"(?m)^  batch_rows: \d+$", "  batch_rows: 997", text)  # several batches per partition
    assert n == 1, "the Spark yaml sets batch_rows"
    (repo / "feature_store.yaml").write_text(text)
    return repo, repo / "feature_store.yaml"


def _diff(a: dict, b: dict) -> str:
    diff = [key for key in a if a[key] != b.get(key)]
    return f"{len(diff)} keys differ, e.g. {diff[0]!r}: {a[diff[0]]} vs {b.get(diff[0])}" if diff else ""


def test_spark_engine_writes_exactly_what_feasts_engine_writes(spark, edge_data, own_redis, tmp_path, monkeypatch,
                                                               caplog):
    from feast import FeatureStore

    data_dir, end = edge_data
    monkeypatch.setenv("FEEDSTORE_DATA_DIR", str(data_dir))
    stock = _repo(tmp_path, "stock", data_dir, f"redis:{own_redis},db=0", fast=False)
    on_spark = _spark_repo(tmp_path, "spark", f"{own_redis},db=1")
    for repo, yaml in (stock, on_spark):
        _feast(repo, yaml, data_dir, "apply")
    stores = [FeatureStore(repo_path=str(repo), fs_yaml_file=yaml) for repo, yaml in (stock, on_spark)]
    urls = [f"{own_redis},db=0", f"{own_redis},db=1"]
    windows = [(end - timedelta(days=30), end - timedelta(days=10)),  # a first load
               (end - timedelta(days=30), end),  # newer rows overwrite
               (end - timedelta(days=40), end - timedelta(days=5))]  # older rows must not overwrite newer ones
    for start, stop in windows:
        caplog.clear()
        with caplog.at_level("INFO", logger="feedstore.plugins.fast_materialize"):
            for store in stores:
                store.materialize(start_date=start, end_date=stop)
        # every view of the Spark yaml went through Spark, and the log line says what was read and written
        assert len(re.findall(r"with the fast engine on Spark \(\d+ partitions\): \d[\d,]* entities read, "
                              r"\d[\d,]* written", caplog.text)) == 3, caplog.text
        assert "stock engine" not in caplog.text
        if start == windows[0][0] and stop == windows[0][1]:  # the executors RESTOREd the new keys
            for view in VIEWS:
                assert re.search(rf"materialize {view} on Spark: [1-9][\d,]* new keys with RESTORE", caplog.text)
        a, b = _dump(urls[0]), _dump(urls[1])
        assert a.keys() == b.keys()
        assert not _diff(a, b), _diff(a, b)
    # every entity of every view, edge entities included
    assert _per_view(b) == _latest_counts(data_dir, end - timedelta(days=40), end)
    assert all(n > 100 for n in _per_view(b).values())
    # Feast's CLI with the Spark yaml (its own Spark session in a fresh process) picks up the rows after the last
    # end; bytes stay identical
    _feast(*stock, data_dir, "materialize-incremental", (end + timedelta(days=3)).strftime(FMT))
    log = _feast(*on_spark, data_dir, "materialize-incremental", (end + timedelta(days=3)).strftime(FMT))
    assert "with the fast engine on Spark" in log
    assert not _diff(_dump(urls[0]), _dump(urls[1]))
    assert _dump(urls[0]) == _dump(urls[1])
    stores = [FeatureStore(repo_path=str(repo), fs_yaml_file=yaml) for repo, yaml in (stock, on_spark)]
    for view in ("user_daily_stats", "item_daily_stats", "user_item_daily_stats"):  # same registry bookkeeping
        intervals = [s.get_feature_view(view).materialization_intervals for s in stores]
        assert len(intervals[1]) == len(intervals[0]) > 0
        assert intervals[1][-1][1].timestamp() == (end + timedelta(days=3)).timestamp()


def test_pipeline_materializes_on_spark_and_the_skew_check_finds_nothing(spark, stats_data, own_redis, tmp_path,
                                                                         monkeypatch, caplog):
    """`feedstore apply / materialize / check-skew --online-store redis-spark` (the runner functions the CLI and
    the DAG call): Spark writes every view, and the online values equal get_historical_features on Spark."""
    from feedstore.core.config import ServingConfig, SparkConfig
    from feedstore.shell import runner

    d = tmp_path / "data"
    shutil.copytree(stats_data, d)
    cfg = pipeline_config(d, engine="spark", spark=SparkConfig(master="local[2]"),
                          serving=ServingConfig(online_store="redis-spark"))
    for var in ("FEEDSTORE_DATA_DIR", "FEEDSTORE_SPARK_MASTER"):  # feast_environment sets them: restored after
        monkeypatch.setenv(var, "unset")
    monkeypatch.setenv("REDIS_CONNECTION_STRING", f"{own_redis},db=2")
    runner.apply_definitions(cfg)
    with caplog.at_level("INFO", logger="feedstore.plugins.fast_materialize"):
        result = runner.materialize_online(cfg)
    assert len(re.findall("with the fast engine on Spark", caplog.text)) == 3, caplog.text
    assert sum(result.entities.values()) > 1_000
    report = runner.check_skew(cfg)  # raises SkewFound on any mismatch
    assert report.mismatches == [] and report.rows >= cfg.serving.skew_sample and report.features > 0


def test_an_executor_that_cannot_reach_redis_fails_with_one_line(spark, edge_data, tmp_path, monkeypatch):
    """Only the executors connect to Redis on Spark: one that cannot is a one-line ServingError (exit 5), as on the
    DuckDB path, not pages of JVM text; nothing is recorded as materialized."""
    from feast import FeatureStore

    from feedstore.core.errors import ServingError
    from tests.conftest import _free_port

    data_dir, end = edge_data
    monkeypatch.setenv("FEEDSTORE_DATA_DIR", str(data_dir))
    repo, yaml = _spark_repo(tmp_path, "dead", f"127.0.0.1:{_free_port()},socket_connect_timeout=1,password=s3cret")
    _feast(repo, yaml, data_dir, "apply")
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml)
    with pytest.raises(ServingError) as e:
        store.materialize(start_date=end - timedelta(days=30), end_date=end, feature_views=["item_daily_stats"])
    message = str(e.value)
    assert "\n" not in message and "could not write to Redis" in message and "item_daily_stats" in message
    assert "s3cret" not in message and e.value.exit_code == 5
    assert not store.get_feature_view("item_daily_stats").materialization_intervals
