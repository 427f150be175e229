"""The Airflow DAG for real: integrity, `airflow dags test` end to end into a throwaway Redis from an empty data dir
(the cold start), a backfill of the following days equal to one full run, and a run with injected faults that stops
at validation with nothing downstream run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
DAG_ID = "etl_and_feature_engineering"
CONFIG = """
generation: {users: 400, items: 1500, interactions: 20000, start: 2024-11-01, end: 2024-11-30, seed: 5}
serving: {online_store: redis}
"""


def airflow_env(tmp: Path, redis_url: str) -> dict:
    (tmp / "pipeline.yaml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(tmp / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "FEEDSTORE_CONFIG": str(tmp / "pipeline.yaml"),
        "FEEDSTORE_DATA_DIR": str(tmp / "data"), "REDIS_CONNECTION_STRING": redis_url,
    })
    return env


def run(env, *args, timeout=2400) -> subprocess.CompletedProcess:
    """A command in `env`; the timeout is a safeguard against a hang (a shared, loaded machine is slow), not a
    performance assertion."""
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout)


def seed_history(env) -> None:
    """Days before the processed one, as earlier DAG runs would have left them."""
    feedstore = [sys.executable, "-m", "feedstore", "--log-level", "WARNING"]
    for args in (["generate", "--no-report"], ["validate", "--end", "2024-11-13", "--as-of", "2024-11-14"],
                 ["stats", "--end", "2024-11-13"]):
        res = run(env, *feedstore, *args)
        assert res.returncode == 0, res.stderr[-3000:]


#: Libraries a DAG file must not import at parse time (Airflow parses it every few seconds).
HEAVY_AT_PARSE = ("feast", "great_expectations", "duckdb", "sklearn", "matplotlib", "redis")


def test_dag_integrity():
    """Imports without errors, does no work at import (no heavy library or stage loaded; the parse time is measured
    by bench/dag_parse.py, never asserted here), has tags, retries, docs and the expected tasks."""
    code = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("etl_dag", {str(ROOT / 'dags' / 'etl_dag.py')!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY or m.startswith(STAGES))
d = module.etl_dag
print(json.dumps({{"errors": {{}}, "heavy": heavy, "tags": sorted(d.tags), "id": d.dag_id,
                   "retries": d.default_args.get("retries"), "doc": bool(d.doc_md), "tasks": sorted(d.task_ids),
                   "catchup": d.catchup, "schedule": str(d.schedule)}}))
"""
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    code = (f"HEAVY = {HEAVY_AT_PARSE!r}\nSTAGES = ('feedstore.ingestion', 'feedstore.training_data', "
            f"'feedstore.serving')\n" + code)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert info["heavy"] == [], "imported while parsing the DAG (move it into a task body)"
    assert info["id"] == DAG_ID and info["schedule"] == "0 2 * * *"
    assert "feedstore" in info["tags"] and info["retries"] >= 2 and info["doc"] and info["catchup"] is False
    assert set(info["tasks"]) == {"build_history", "generate_events", "validate_events", "compute_stats",
                                  "validate_stats", "apply_definitions", "materialize_online",
                                  "build_training_set", "validate_training_set", "check_skew"}
    source = (ROOT / "dags" / "etl_dag.py").read_text()
    assert "sys.path" not in source and "datetime.now" not in source


def test_ruff_air_rules_clean():
    res = subprocess.run([str(BIN / "ruff"), "check", "--select", "AIR", str(ROOT / "dags")], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory, redis_db):
    tmp = tmp_path_factory.mktemp("airflow")
    env = airflow_env(tmp, redis_db)
    assert run(env, str(BIN / "airflow"), "db", "migrate").returncode == 0
    assert not (tmp / "data").exists()  # a cold start: nothing under the data dir
    t0 = time.time()
    res = run(env, str(BIN / "airflow"), "dags", "test", DAG_ID, "2024-11-15")
    return tmp, env, res, time.time() - t0


def test_dags_test_runs_every_task_and_serves_from_redis(dag_run, redis_db):
    tmp, env, res, seconds = dag_run
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "cold start: nothing validated before 2024-11-14" in res.stdout + res.stderr
    data = tmp / "data"
    day = "2024-11-14"  # the run at 2024-11-15 processes the day before
    # the history its features need: every day from the source's first day
    assert sorted(p.name for p in (data / "offline" / "user_daily_stats").glob("date=*"))[0] == "date=2024-11-01"
    assert (data / "raw" / "interactions" / f"date={day}").is_dir()
    assert any((data / "validated" / "interactions" / f"date={day}").glob("*.parquet"))
    for view in ("user_daily_stats", "item_daily_stats", "user_item_daily_stats"):
        assert any((data / "offline" / view / f"date={day}").glob("*.parquet")), view
    report = json.loads((data / "reports" / "validation" / "interactions.json").read_text())
    assert report["gate"] == "pass" and report["days"] == [day]
    manifest = json.loads((data / "training" / f"daily-{day}" / "manifest.json").read_text())
    assert manifest["evaluation"]["val"]["auc"] > 0.5 and sum(manifest["rows"].values()) > 5_000
    import redis

    address, db = redis_db.split(",db=")
    host, port = address.rsplit(":", 1)
    assert redis.Redis(host=host, port=int(port), db=int(db)).dbsize() > 1_000  # materialized entities
    from feedstore.core.config import load_config
    from feedstore.core.feast_repo import feature_store
    from feedstore.serving.ranking import get_ranking_features
    from feedstore.serving.request import RankingContext

    os.environ.update({k: env[k] for k in ("FEEDSTORE_DATA_DIR", "REDIS_CONNECTION_STRING")})
    cfg = load_config(tmp / "pipeline.yaml", env={})
    cfg = cfg.model_copy(update={"data_dir": data})
    from datetime import datetime, timezone

    got = get_ranking_features(feature_store(cfg, "redis"), 1, [1, 2, 3],
                               RankingContext(datetime(2024, 11, 15, 1, tzinfo=timezone.utc)))
    assert not got.item_missing.all()


def test_a_rerun_of_the_day_is_idempotent(dag_run):
    tmp, env, first, _ = dag_run
    assert first.returncode == 0
    part = tmp / "data" / "validated" / "interactions" / "date=2024-11-14"
    before = {p.name: p.read_bytes() for p in part.glob("*.parquet")}
    older = tmp / "data" / "validated" / "interactions" / "date=2024-11-10"
    older_mtime = {p: p.stat().st_mtime_ns for p in older.glob("*.parquet")}
    res = run(env, str(BIN / "airflow"), "dags", "test", DAG_ID, "2024-11-15")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert {p.name: p.read_bytes() for p in part.glob("*.parquet")} == before
    assert {p: p.stat().st_mtime_ns for p in older.glob("*.parquet")} == older_mtime  # other days untouched


#: The same pipeline on Spark: FEEDSTORE_ENGINE=spark (validate, stats) and the redis-spark store (Feast's offline
#: side on Spark: materialization inside Spark, the training set's point-in-time join, the skew check's retrieval).
SPARK_CONFIG = CONFIG.replace("online_store: redis}", "online_store: redis-spark}") + \
    "spark: {master: 'local[2]', shuffle_partitions: 2, driver_memory: 1g}\n"


def test_dags_test_on_spark_equals_the_duckdb_run(dag_run, redis_db, tmp_path_factory):
    """`airflow dags test` with FEEDSTORE_ENGINE=spark from an empty data dir (the cold start included) runs every
    task on Spark through the same library functions, and leaves what the DuckDB run left: the same offline
    tables, the same training set (every split, cell for cell) and the same bytes in Redis (every key, HGETALL)."""
    import pandas as pd
    import redis

    from tests.conftest import require_spark, start_redis_server
    from tests.helpers import assert_same_offline

    require_spark()
    duck_tmp, _, first, _ = dag_run
    assert first.returncode == 0
    tmp = tmp_path_factory.mktemp("airflow-spark")
    server, url = start_redis_server(tmp)  # its own throwaway Redis
    try:
        env = airflow_env(tmp, url)
        (tmp / "pipeline.yaml").write_text(SPARK_CONFIG)
        env["FEEDSTORE_ENGINE"] = "spark"
        env.pop("FEEDSTORE_SPARK_MASTER", None)
        assert run(env, str(BIN / "airflow"), "db", "migrate").returncode == 0
        res = run(env, str(BIN / "airflow"), "dags", "test", DAG_ID, "2024-11-15")
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-4000:]
        assert "cold start: nothing validated before 2024-11-14" in out
        assert "started: master local[2]" in out  # the one Spark session of the run
        assert "validation passed on Spark" in out
        written = set(re.findall(r"materialized (\w+) \[[^\]]*\] with the fast engine on Spark", out))
        assert written == {"user_daily_stats", "item_daily_stats", "user_item_daily_stats"}  # each from Spark
        assert "skew check at" in out
        assert_same_offline(duck_tmp / "data", tmp / "data")
        for split in ("train", "val", "test"):
            a, b = (pd.read_parquet(d / "data" / "training" / "daily-2024-11-14" / f"{split}.parquet")
                    for d in (duck_tmp, tmp))
            pd.testing.assert_frame_equal(a, b, check_exact=True, obj=split)
        dumps = []
        for where in (redis_db, f"{url},db=0"):
            address, _, db = where.partition(",db=")
            host, port = address.rsplit(":", 1)
            client = redis.Redis(host=host, port=int(port), db=int(db or 0))
            keys = sorted(client.scan_iter(count=5000))
            dumps.append({k: client.hgetall(k) for k in keys})
        assert len(dumps[1]) > 1_000 and dumps[0] == dumps[1]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_backfill_equals_one_full_run(dag_run, tmp_path):
    """Daily runs for the next days, one at a time as `airflow backfill create` runs them (max_active_runs=1), leave
    the same offline tables as one full `feedstore stats` over the same data."""
    import shutil

    from tests.helpers import assert_same_offline

    tmp, env, first, _ = dag_run
    assert first.returncode == 0
    for logical in ("2024-11-16", "2024-11-17"):
        res = run(env, str(BIN / "airflow"), "dags", "test", DAG_ID, logical)
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
        assert "cold start" not in res.stdout + res.stderr
    full = tmp_path / "full"
    shutil.copytree(tmp / "data", full, ignore=shutil.ignore_patterns("offline", "intermediate", "training", "feast"))
    res = run({**env, "FEEDSTORE_DATA_DIR": str(full)}, sys.executable, "-m", "feedstore", "--log-level", "WARNING",
              "stats")
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_offline(tmp / "data", full)


def test_faults_above_threshold_stop_at_validation(tmp_path, redis_db):
    env = airflow_env(tmp_path, redis_db)
    assert run(env, str(BIN / "airflow"), "db", "migrate").returncode == 0
    seed_history(env)
    res = run(env, str(BIN / "airflow"), "dags", "test", DAG_ID, "2024-11-15", "--conf", '{"inject_faults": 0.1}')
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "validation failed" in out and "validate_events" in out
    data = tmp_path / "data"
    assert not (data / "validated" / "interactions" / "date=2024-11-14").exists()  # not published
    assert any((data / "quarantine" / "interactions" / "date=2024-11-14").glob("*.parquet"))  # kept, with reasons
    assert not (data / "offline" / "user_daily_stats" / "date=2024-11-14").exists()  # downstream did not run
    assert not (data / "training").exists()
