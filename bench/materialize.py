"""Benchmark materialization into Redis: Feast's stock engine vs feedstore's FastMaterializationEngine (on DuckDB,
and inside Spark with the Spark offline store).

Run:  .venv/bin/python bench/materialize.py [--interactions 1000000 10000000] [--out bench/out] [--reuse]
                                            [--engines stock fast spark] [--master local[2]]
For each size: generates, validates and computes statistics with the default config (10K users, 50K items, one
year; not timed), applies the repo to a throwaway redis-server, then materializes every view over
[end - its ttl, end] (end = the newest snapshot), once with Feast's stock engine (the repo's yaml without its
`batch_engine:` block), once with the shipped yaml (FastMaterializationEngine over DuckDB) and, with `spark` in
`--engines`, once with feature_store.spark.yaml (the same engine inside Spark, master `--master`; the session is
started before the clock runs, and its start-up time printed apart), each engine in its own child process and
its own Redis database. Prints entities/s per view (in-process time of `store.materialize` for that view,
Feast's bookkeeping included) with the CPU seconds of the materializing process tree ("ours": for Spark the
driver, the JVM and the Python workers that encode and write; a worker that exits within a view is missed, so a
lower bound) and of redis-server in that time (on a shared, loaded machine wall time says little; CPU time
does), the child's peak RSS (bench/measure.py run_tree), the load average, and a spot check that the databases
hold the same keys and the same bytes for a sample of them.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from measure import run_tree, start_redis  # noqa: E402

VIEWS = ("user_daily_stats", "item_daily_stats", "user_item_daily_stats")
KEYS = {"user_daily_stats": "user_id", "item_daily_stats": "item_id", "user_item_daily_stats": "user_id, item_id"}


def feedstore(env: dict, *args: str) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "feedstore", *args], env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"feedstore {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def repo_variant(dst: Path, engine: str, connection: str, master: str = "local[2]") -> Path:
    """A copy of feature_repo/ with its own registry; `stock` drops the batch_engine block; `spark` is
    feature_store.spark.yaml (the Spark offline store) with the master filled in."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ROOT / "feature_repo", dst, ignore=shutil.ignore_patterns("__pycache__"))
    yaml = dst / "feature_store.yaml"
    if engine == "spark":
        text = (dst / "feature_store.spark.yaml").read_text().replace("registry.redis-spark.db",
                                                                       "registry.bench-spark.db")
        text = text.replace("${FEEDSTORE_SPARK_MASTER}", master)
    else:
        text = yaml.read_text().replace("registry.redis.db", f"registry.bench-{engine}.db")
    text = text.replace("${REDIS_CONNECTION_STRING}", connection)
    if engine == "stock":
        text = re.sub(r"\nbatch_engine:\n(  .*\n)+", "\n", text)
    yaml.write_text(text)
    return dst


def child(repo: Path) -> None:
    """In a fresh process: materialize each view over [end - ttl, end]; print timings as JSON on stderr."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from feast import FeatureStore

    from feedstore.core.duck import connect

    data = Path(os.environ["FEEDSTORE_DATA_DIR"])
    con = connect()
    end = con.execute(f"SELECT max(event_timestamp) FROM read_parquet('{data}/offline/user_daily_stats/**/*.parquet',"
                      " hive_partitioning = false)").fetchone()[0]
    import redis

    store = FeatureStore(repo_path=str(repo), fs_yaml_file=repo / "feature_store.yaml")
    server = redis.Redis.from_url("redis://" + store.config.online_store.connection_string.split(",")[0])

    def redis_cpu() -> float:
        info = server.info("cpu")
        return info["used_cpu_user"] + info["used_cpu_sys"]

    import psutil

    def tree_cpu() -> float:
        """CPU seconds of this process and its live descendants (Spark's JVM and Python workers)."""
        total = time.process_time()
        for proc in psutil.Process().children(recursive=True):
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    out = {}
    if "spark" in type(store.config.offline_store).__module__:
        from feedstore.core.spark import get_spark

        t0 = time.perf_counter()
        get_spark(store.config.offline_store.spark_settings())
        out["spark_start_s"] = time.perf_counter() - t0
    for view in VIEWS:
        fv = store.get_feature_view(view)
        t0, c0, r0 = time.perf_counter(), tree_cpu(), redis_cpu()
        store.materialize(start_date=end - fv.ttl, end_date=end, feature_views=[view])
        seconds, cpu, rcpu = time.perf_counter() - t0, tree_cpu() - c0, redis_cpu() - r0
        n = con.execute(f"SELECT count(DISTINCT ({KEYS[view]})) FROM read_parquet('{data}/offline/{view}/**/"
                        "*.parquet', hive_partitioning = false) WHERE event_timestamp BETWEEN $s AND $e",
                        {"s": end - fv.ttl, "e": end}).fetchone()[0]
        out[view] = {"entities": n, "seconds": seconds, "cpu": cpu, "redis_cpu": rcpu, "features": len(fv.features)}
    print("RESULT " + json.dumps(out), file=sys.stderr)


def spot_check(url: str, db: int = 1, sample: int = 2000) -> str:
    import random

    import redis

    host, port = url.split(":")
    a, b = redis.Redis(host=host, port=int(port), db=0), redis.Redis(host=host, port=int(port), db=db)
    sizes = a.dbsize(), b.dbsize()
    keys = [a.randomkey() for _ in range(sample)]
    random.shuffle(keys)
    same = sum(a.hgetall(k) == b.hgetall(k) for k in keys)
    return f"keys stock {sizes[0]:,} / db {db} {sizes[1]:,}; HGETALL equal for {same}/{sample} random keys"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--reuse", action="store_true", help="keep existing data dirs: skip to materialization")
    parser.add_argument("--engines", nargs="+", default=["stock", "fast"], choices=["stock", "fast", "spark"])
    parser.add_argument("--master", default="local[2]", help="Spark master of the spark engine")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average at start {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for n in args.interactions:
        out = args.out / "materialize" / f"{n}"
        data = out / "data"
        env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
        env.pop("FEEDSTORE_CONFIG", None)
        if not (args.reuse and (data / "offline").exists()):
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            t0 = time.perf_counter()
            feedstore(env, "--log-level", "WARNING", "generate", "--interactions", str(n), "--no-report")
            feedstore(env, "--log-level", "WARNING", "validate", "--as-of", "2026-01-01")
            feedstore(env, "--log-level", "WARNING", "stats")
            print(f"{n:,} interactions: data prepared in {time.perf_counter() - t0:.0f} s (not timed below)")
        proc, url = start_redis(out)
        try:
            import redis

            for db, engine in enumerate(("stock", "fast", "spark")):
                if engine not in args.engines:
                    continue
                redis.Redis.from_url(f"redis://{url}/{db}").flushdb()  # our own throwaway server
                (data / "feast").mkdir(exist_ok=True)
                repo = repo_variant(out / f"repo-{engine}", engine, f"{url},db={db}", args.master)
                res = subprocess.run([str(Path(sys.executable).with_name("feast")), "-c", str(repo), "apply"],
                                     env=env, capture_output=True, text=True)
                if res.returncode:
                    raise SystemExit(f"feast apply failed:\n{res.stderr[-3000:]}")
                wall, rss, code, err = run_tree([sys.executable, __file__, "--child", str(repo)], env=env)
                if code:
                    raise SystemExit(f"{engine} materialization failed:\n{err[-3000:]}")
                result = json.loads(err.split("RESULT ", 1)[1].splitlines()[0])
                start = result.pop("spark_start_s", None)
                parts = [f"{v} {r['entities']:,} x {r['features']} features in {r['seconds']:.2f} s wall = "
                         f"{r['entities'] / r['seconds']:,.0f}/s (CPU: ours {r['cpu']:.2f} s, redis-server "
                         f"{r['redis_cpu']:.2f} s)" for v, r in result.items()]
                print(f"{n:,} interactions, {engine:5s}: " + "; ".join(parts) +
                      (f"; Spark session start {start:.1f} s (not in the rates)" if start is not None else "") +
                      f"; child wall {wall:.1f} s, peak RSS {rss:,.0f} MiB; load average now "
                      f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
            for db, engine in ((1, "fast"), (2, "spark")):
                if {"stock", engine} <= set(args.engines):
                    print(f"{n:,} interactions, spot check stock vs {engine}: {spot_check(url, db)}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
