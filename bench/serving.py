"""Benchmark statistics, materialization to Redis and online lookups (in-process, HTTP, raw redis-py).

Run:  .venv/bin/python bench/serving.py [--requests 1000] [--out bench/out]
Generates and validates 1M interactions (default config: 10K users, 50K items, one year; not timed), then:
  1. `feedstore stats` in a fresh process (wall time; compute-only time from the log);
  2. materialization of every view into a throwaway redis-server: Feast defaults vs this repo's settings
     (`materialization: pull_latest_features, online_write_batch_size` in feature_store.yaml);
  3. 1 user + 100 candidate items through feed_ranking_v1: in-process `get_ranking_features`, HTTP
     `feast serve` /get-online-features, and a raw redis-py pipeline HMGET of the same keys; p50 / p99.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from measure import free_port, start_redis  # noqa: E402

FEAST = str(Path(sys.executable).with_name("feast"))


def feedstore(env: dict, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "feedstore", *args], env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"feedstore {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0, res.stderr


def pct(xs: list[float]) -> str:
    a = np.asarray(xs) * 1e3
    return f"p50 {np.percentile(a, 50):.2f} ms, p99 {np.percentile(a, 99):.2f} ms (n={len(a)})"


def repo_variant(dst: Path, keep_materialization: bool) -> Path:
    """A copy of feature_repo/ whose feature_store.yaml keeps or drops the `materialization:` block."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ROOT / "feature_repo", dst, ignore=shutil.ignore_patterns("__pycache__"))
    yaml = dst / "feature_store.yaml"
    if not keep_materialization:
        yaml.write_text(re.sub(r"\nmaterialization:\n(  .*\n)+", "\n", yaml.read_text()))
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--reuse", action="store_true", help="keep an existing data dir: skip to materialization")
    args = parser.parse_args()
    out = args.out / "serving"
    data = out / "data"
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
    env.pop("FEEDSTORE_CONFIG", None)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if not (args.reuse and (data / "offline").exists()):
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        feedstore(env, "--log-level", "WARNING", "generate", "--no-report")
        feedstore(env, "--log-level", "WARNING", "validate", "--as-of", "2026-01-01")

        # 1. statistics
        wall, log = feedstore(env, "stats")
        rows = re.search(r"stats for .* in ([\d.]+) s: (.*) ->", log)
        print(f"stats, 1M interactions (fresh process, incl. GX output gate): {wall:.2f} s wall; {rows.group(2)}")
        wall2, _ = feedstore(env, "stats", "--start", "2024-12-31", "--end", "2024-12-31")
        print(f"stats, recompute one day (2024-12-31): {wall2:.2f} s wall")

    proc, url = start_redis(out)
    env["REDIS_CONNECTION_STRING"] = os.environ["REDIS_CONNECTION_STRING"] = url
    os.environ["FEEDSTORE_DATA_DIR"] = str(data)
    try:
        feedstore(env, "--log-level", "WARNING", "apply", "--online-store", "redis")
        # 2. materialization: Feast defaults vs this repo's settings, same data, fresh Redis each time
        import redis as redis_py
        from feast import FeatureStore

        from feedstore.core.config import load_config
        from feedstore.serving.store import latest_snapshot

        cfg = load_config(overrides={"data_dir": str(data)})
        end = latest_snapshot(cfg)
        for label, keep in (("Feast defaults", False), ("repo settings", True)):
            redis_py.Redis.from_url(f"redis://{url}").flushall()  # our own throwaway server
            repo = repo_variant(out / f"repo-{'tuned' if keep else 'default'}", keep)
            store = FeatureStore(repo_path=str(repo), fs_yaml_file=repo / "feature_store.yaml")
            parts = []
            for fv in sorted(store.list_feature_views(), key=lambda v: v.name):
                t0 = time.perf_counter()
                store.materialize(start_date=end - fv.ttl, end_date=end, feature_views=[fv.name])
                dt = time.perf_counter() - t0
                from feedstore.serving.materialize import _count_latest

                n = _count_latest(cfg, fv.name, end - fv.ttl, end)
                parts.append(f"{fv.name} {n:,} in {dt:.1f} s = {n / dt:,.0f}/s")
            print(f"materialize to Redis, {label}: " + "; ".join(parts))

        # 3. online lookups, 1 user + 100 candidates
        from feedstore.core.feast_repo import feature_store
        from feedstore.serving.ranking import get_ranking_features
        from feedstore.serving.request import RankingContext

        store = feature_store(cfg, "redis")
        rng = np.random.default_rng(0)
        users = rng.integers(0, 10_000, args.requests)
        items = [rng.choice(50_000, 100, replace=False).tolist() for _ in range(args.requests)]
        ctx = RankingContext(request_ts=end + timedelta(hours=1))
        for k in range(20):  # warm-up
            get_ranking_features(store, int(users[k]), items[k], ctx)
        import gc

        for frozen in (False, True):
            if frozen:  # what a serving process does after warm-up: long-lived objects leave the GC's scans
                gc.collect()
                gc.freeze()
            lat = []
            for u, its in zip(users, items, strict=True):
                t0 = time.perf_counter()
                get_ranking_features(store, int(u), its, ctx)
                lat.append(time.perf_counter() - t0)
            print(f"lookup in-process (get_ranking_features -> OnlineRanker, feed_ranking_v1, 1 user + 100 items, "
                  f"returns a DataFrame{', after gc.freeze()' if frozen else ''}): {pct(lat)}")
        gc.unfreeze()
        service = store.get_feature_service("feed_ranking_v1")
        for k in range(20):  # warm-up
            store.get_online_features(features=service, entity_rows=[{"user_id": 1, "item_id": i, "request_ts":
                                      ctx.request_ts, "device": "mobile"} for i in items[k]]).to_dict()
        lat = []
        for u, its in zip(users, items, strict=True):
            rows = [{"user_id": int(u), "item_id": i, "request_ts": ctx.request_ts, "device": "mobile"} for i in its]
            t0 = time.perf_counter()
            store.get_online_features(features=service, entity_rows=rows).to_dict()
            lat.append(time.perf_counter() - t0)
        print(f"lookup in-process (bare store.get_online_features(...).to_dict()): {pct(lat)}")

        # raw redis-py pipeline over the same keys and fields Feast reads
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        online = store._get_provider().online_store
        rc = store.config
        views = {v.name: v for v in store.list_feature_views()}

        def keys_for(names, values):
            ek = [EntityKey(join_keys=names, entity_values=[Value(int64_val=int(x)) for x in vals]) for vals in values]
            return online._generate_redis_keys_for_entities(rc, ek)

        fields = {n: online._generate_hset_keys_for_features(v)[1] for n, v in views.items()}
        client = redis_py.Redis.from_url(f"redis://{url}")
        lat = []
        for u, its in zip(users, items, strict=True):
            t0 = time.perf_counter()
            commands = [(k, fields["user_daily_stats"]) for k in keys_for(["user_id"], [[u]])]
            commands += [(k, fields["item_daily_stats"]) for k in keys_for(["item_id"], [[i] for i in its])]
            commands += [(k, fields["user_item_daily_stats"])
                         for k in keys_for(["user_id", "item_id"], [[u, i] for i in its])]
            with client.pipeline(transaction=False) as pipe:
                for key, f in commands:
                    pipe.hmget(key, f)
                pipe.execute()
            lat.append(time.perf_counter() - t0)
        print(f"raw redis-py pipeline, same 201 HMGETs (keys built per request, no decoding): {pct(lat)}")

        # HTTP: feast serve
        port = free_port()
        server = subprocess.Popen([FEAST, "-c", str(ROOT / "feature_repo"), "serve", "--host", "127.0.0.1", "--port",
                                   str(port), "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            import requests

            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            session = requests.Session()
            lat = []
            requests_ = list(zip(users, items, strict=True))
            for k, (u, its) in enumerate(requests_[:20] + requests_):  # 20 warm-up requests, then all of them
                body = {"feature_service": "feed_ranking_v1",
                        "entities": {"user_id": [int(u)] * 100, "item_id": its,
                                     "request_ts": [int(ctx.request_ts.timestamp())] * 100, "device": ["mobile"] * 100}}
                t0 = time.perf_counter()
                r = session.post(f"http://127.0.0.1:{port}/get-online-features", json=body, timeout=30)
                dt = time.perf_counter() - t0
                r.raise_for_status()
                if k >= 20:
                    lat.append(dt)
            print(f"lookup over HTTP (feast serve, 1 worker, /get-online-features): {pct(lat)}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
