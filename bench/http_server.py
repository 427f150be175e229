"""Load test of the HTTP feature servers with wrk: `feedstore serve` next to `feast serve`, same data, same run.

Run:  .venv/bin/python bench/http_server.py [--duration 10] [--data DIR] [--out bench/out]
Needs `wrk` (Debian: `apt-get install -y wrk`). Everything listens on 127.0.0.1 only.

Without --data it generates and validates 1M interactions (default config: 10K users, 50K items, one year),
computes the statistics, applies and materializes them into a throwaway redis-server (not timed). Then, for each
server and worker count (1, 2): 1 user + 100 random candidates per request (1,000 distinct bodies, cycled),
  * latency at 1 client (one wrk connection): p50 / p99 / max,
  * throughput (req/s) at 8 and 32 concurrent clients (connections),
each run bounded by --duration seconds. `feedstore serve` is measured on Feast's /get-online-features contract
(the same body Feast gets) and on /rank. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from measure import free_port, start_redis  # noqa: E402

FEAST = str(Path(sys.executable).with_name("feast"))


LUA = r"""
local bodies = {}
local n = 0
local path = os.getenv("WRK_PATH")
init = function(args)
  for line in io.lines(os.getenv("WRK_BODIES")) do n = n + 1; bodies[n] = line end
end
local k = 0
request = function()
  k = k % n + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, bodies[k])
end
local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"errors": %d, "non2xx": %d}\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), latency.max, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.errors.status))
end
"""


def feedstore(env: dict, *args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "feedstore", "--log-level", "WARNING", *args], env=env,
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"feedstore {' '.join(args)} failed:\n{res.stderr[-3000:]}")


def wait_ready(url: str, proc: subprocess.Popen, path: str) -> None:
    import requests

    for _ in range(3000):  # workers start slowly on a busy machine
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        try:
            if requests.get(url + path, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready")


def wrk(url: str, path: str, bodies: Path, connections: int, duration: int, script: Path) -> dict:
    threads = min(connections, 2)
    res = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s",
                          "-s", str(script), url], env={**os.environ, "WRK_PATH": path, "WRK_BODIES": str(bodies)},
                         capture_output=True, text=True, timeout=duration + 120)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {res.stdout[-1000:]} {res.stderr[-1000:]}")
    out = json.loads(line[len("RESULT "):])
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--data", type=Path, default=None, help="an existing data dir with offline statistics")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--servers", default="feedstore,feast")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    out = args.out / "http"
    out.mkdir(parents=True, exist_ok=True)
    data = (args.data or out / "data").resolve()  # absolute: feast serve runs in the repo folder
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
    env.pop("FEEDSTORE_CONFIG", None)
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    if args.data is None and not (data / "offline").exists():
        feedstore(env, "generate", "--no-report")
        feedstore(env, "validate", "--as-of", "2026-01-01")
        feedstore(env, "stats")
    redis_proc, redis_url = start_redis(out)
    env["REDIS_CONNECTION_STRING"] = redis_url
    servers: list[subprocess.Popen] = []
    try:
        feedstore(env, "apply", "--online-store", "redis")
        feedstore(env, "materialize", "--online-store", "redis")
        import pandas as pd
        import pyarrow.dataset as ds

        users = ds.dataset(data / "offline" / "user_daily_stats", format="parquet", partitioning="hive")
        items = ds.dataset(data / "offline" / "item_daily_stats", format="parquet", partitioning="hive")
        user_ids = np.unique(users.to_table(columns=["user_id"]).column(0).to_numpy())
        item_ids = np.unique(items.to_table(columns=["item_id"]).column(0).to_numpy())
        end = pd.Timestamp(users.to_table(columns=["event_timestamp"]).column(0).to_numpy().max(), tz="UTC")
        at = int((end + pd.Timedelta(hours=1)).timestamp())
        rng = np.random.default_rng(0)
        tmp = Path(tempfile.mkdtemp(dir=out))
        feast_bodies, rank_bodies = tmp / "feast.jsonl", tmp / "rank.jsonl"
        with feast_bodies.open("w") as f, rank_bodies.open("w") as g:
            for _ in range(1000):
                u = int(rng.choice(user_ids))
                its = [int(i) for i in rng.choice(item_ids, 100, replace=False)]
                entities = {"user_id": [u] * 100, "item_id": its, "request_ts": [at] * 100, "device": ["mobile"] * 100}
                f.write(json.dumps({"feature_service": "feed_ranking_v1", "entities": entities}) + "\n")
                g.write(json.dumps({"user_id": u, "item_ids": its, "request_ts": at, "device": "mobile"}) + "\n")
        script = tmp / "bench.lua"
        script.write_text(LUA)
        rows = []
        for workers in [int(w) for w in args.workers.split(",")]:
            for name in args.servers.split(","):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                if name == "feedstore":
                    cmd = [sys.executable, "-m", "feedstore", "--log-level", "WARNING", "serve", "--online-store",
                           "redis", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
                    targets = [("/get-online-features", feast_bodies), ("/rank", rank_bodies)]
                    ready = "/ready"
                else:
                    cmd = [FEAST, "-c", str(ROOT / "feature_repo"), "serve", "--host", "127.0.0.1", "--port",
                           str(port), "--workers", str(workers)]
                    targets = [("/get-online-features", feast_bodies)]
                    ready = "/health"
                proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                servers.append(proc)
                wait_ready(url, proc, ready)
                for path, bodies in targets:
                    wrk(url, path, bodies, 2, 3, script)  # warm-up (every worker)
                    one = wrk(url, path, bodies, 1, args.duration, script)
                    eight = wrk(url, path, bodies, 8, args.duration, script)
                    many = wrk(url, path, bodies, 32, args.duration, script)
                    errors = sum(r["errors"] + r["non2xx"] for r in (one, eight, many))
                    row = (f"| `{'feedstore serve' if name == 'feedstore' else 'feast serve'}` {path} | {workers} | "
                           f"{one['p50_us'] / 1e3:.1f} / {one['p99_us'] / 1e3:.1f} / {one['max_us'] / 1e3:.1f} ms | "
                           f"{one['rps']:.0f} | {eight['rps']:.0f} | {many['rps']:.0f} | {errors} |")
                    print(row, flush=True)
                    rows.append(row)
                proc.terminate()
                proc.wait(timeout=60)
        print()
        print("| server, endpoint | workers | 1 client: p50 / p99 / max | req/s at 1 | at 8 clients | at 32 clients "
              "| errors |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        load = os.getloadavg()
        print(f"load average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    finally:
        for proc in servers:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


if __name__ == "__main__":
    main()
