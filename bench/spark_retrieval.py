"""Benchmark point-in-time retrieval on Spark: our SparkPitOfflineStore vs the ASOF DuckDB store vs Feast's stock
Spark offline store, feed_ranking_v1 (three views + on-demand views) to Arrow.

Run:  .venv/bin/python bench/spark_retrieval.py [--rows 100000 1000000] [--data DIR] [--skip-stock]
Needs the `spark` extra and Java. Data: the default config's 1M validated interactions with offline statistics
(bench/out/training/data, built as bench/training_set.py builds it; not timed). Entity rows: a random sample of
the validated interactions (seed 0), sorted by time, as a pandas DataFrame, the same for every store.

Each (store, rows) runs in a fresh process; printed: wall of the whole process (start-up, Spark session, entity
rows, retrieval), the retrieval alone (get_historical_features(...).to_arrow(), session already up), the Spark
session start, CPU seconds of the process tree (Python + JVM + Python workers) and its peak RSS (bench/measure.py).
Feast's stock Spark store needs SparkSource: its repo copy swaps the three FileSources for SparkSources on the
same directories (Spark's partition discovery adds a `date` column it ignores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from measure import run_tree  # bench/measure.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
MARK = "BENCH-RESULT "
SPARK = {"master": "local[*]", "driver_memory": "6g", "shuffle_partitions": 8}
STORES = {"ours": "feedstore.plugins.spark_offline_store.SparkPitOfflineStore",
          "asof": "feedstore.plugins.asof_duckdb.AsofDuckDBOfflineStore", "stock": "spark"}


def repo_for(kind: str, data: Path, work: Path) -> tuple[Path, Path]:
    """A copy of feature_repo/ with a yaml for `kind` (registry of its own), applied; returns (repo, yaml)."""
    repo = work / f"repo-spark-bench-{kind}"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    yaml = repo / "feature_store.bench.yaml"
    text = (ROOT / "feature_repo" / "feature_store.sqlite.yaml").read_text()
    text = re.sub(r"(?m)^offline_store:\n(  .*\n)+", "", text)
    spark_conf = {"spark.sql.shuffle.partitions": str(SPARK["shuffle_partitions"]),
                  "spark.driver.memory": SPARK["driver_memory"], "spark.sql.session.timeZone": "UTC"}
    offline = {"ours": f"offline_store:\n  type: {STORES['ours']}\n  master: {SPARK['master']}\n"
                       f"  driver_memory: {SPARK['driver_memory']}\n"
                       f"  shuffle_partitions: {SPARK['shuffle_partitions']}\n",
               "asof": f"offline_store:\n  type: {STORES['asof']}\n  memory_limit: 4GB\n",
               "stock": "offline_store:\n  type: spark\n  spark_conf:\n"
                        + "".join(f"    {k}: \"{v}\"\n" for k, v in spark_conf.items())}[kind]
    text = text.replace("registry.sqlite.db", f"registry.spark-bench-{kind}.db").replace(
        "online.sqlite.db", f"online.spark-bench-{kind}.db")
    yaml.write_text(text.replace("materialization:", offline + "materialization:", 1))
    if kind == "stock":  # Feast's Spark store reads SparkSource only
        sources = repo / "data_sources.py"
        src = sources.read_text().replace(
            "from feast import Field, FileSource, RequestSource",
            "from feast import Field, RequestSource\n"
            "from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource")
        src = re.sub(r'str\(Path\(data_dir\)\.resolve\(\) / "offline" / view / "\*\*" / "\*\.parquet"\)',
                     'str(Path(data_dir).resolve() / "offline" / view)', src)
        src = src.replace("FileSource(", "SparkSource(")
        src = src.replace("file_format=ParquetFormat(),", 'file_format="parquet",')
        sources.write_text(src)
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
    res = subprocess.run([str(Path(sys.executable).with_name("feast")), "-c", str(repo), "-f", str(yaml), "apply"],
                         env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"feast apply ({kind}) failed:\n{res.stderr[-3000:]}")
    return repo, yaml


def child(kind: str, rows: int, data: Path, repo: Path, yaml: Path) -> None:
    """One measured run, in this (fresh) process; the result goes to stderr as one JSON line."""
    import duckdb
    import psutil
    from feast import FeatureStore

    os.environ["FEEDSTORE_DATA_DIR"] = str(data)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    ev = con.execute(f"""SELECT user_id, item_id, event_timestamp, event_timestamp AS request_ts, device, click
                         FROM read_parquet('{data}/validated/interactions/**/*.parquet', hive_partitioning = false)
                         ORDER BY event_timestamp, interaction_id""").df()
    entities = (ev.sample(rows, random_state=0) if rows < len(ev) else ev).sort_values("event_timestamp")
    entities = entities.reset_index(drop=True)
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml)
    service = store.get_feature_service("feed_ranking_v1")
    session = 0.0
    if kind != "asof":
        from feedstore.core.spark import SparkConfig, get_spark

        t0 = time.perf_counter()
        get_spark(SparkConfig(**SPARK)).range(1).count()
        session = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = store.get_historical_features(entity_df=entities, features=service).to_arrow()
    retrieval = time.perf_counter() - t0
    me = psutil.Process()
    cpu = sum(sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)])
    print(MARK + json.dumps({"retrieval": retrieval, "session": session, "cpu": cpu, "rows_out": out.num_rows,
                             "columns": out.num_columns}), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "out" / "training" / "data")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "ROWS", "REPO", "YAML"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = args.data.resolve()
    if args.child:
        kind, rows, repo, yaml = args.child
        child(kind, int(rows), data, Path(repo), Path(yaml))
        return
    from training_set import prepare  # bench/training_set.py: generate, validate, stats (not timed)

    prepare(data)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"Spark {SPARK}", flush=True)
    kinds = [k for k in STORES if not (args.skip_stock and k == "stock")]
    repos = {k: repo_for(k, data, data.parent) for k in kinds}
    for rows in args.rows:
        for kind in kinds:
            repo, yaml = repos[kind]
            env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
            wall, peak, rc, err = run_tree([sys.executable, __file__, "--data", str(data), "--child", kind,
                                            str(rows), str(repo), str(yaml)], env)
            found = [line for line in err.splitlines() if line.startswith(MARK)]
            if rc or not found:
                print(f"{rows:,} rows, {kind}: FAILED (exit {rc})\n{err[-2500:]}", flush=True)
                continue
            r = json.loads(found[-1][len(MARK):])
            print(f"{rows:,} entity rows, {kind:5}: retrieval {r['retrieval']:.1f} s (+ session start "
                  f"{r['session']:.1f} s), process wall {wall:.1f} s, CPU {r['cpu']:.1f} s, peak RSS {peak:,.0f} MiB; "
                  f"{r['rows_out']:,} rows x {r['columns']} columns out", flush=True)


if __name__ == "__main__":
    main()
