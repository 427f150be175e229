"""Benchmark the two engines (`--engine duckdb | spark`): `feedstore validate`, `feedstore stats` and
`feedstore training-set` at 1M events.

Run:  .venv/bin/python bench/engines.py [--events 1000000] [--master local[2]] [--driver-memory 6g]
      [--stages validate,stats,training-set] [--engines duckdb,spark] [--out bench/out]
The events are generated once (not timed). Each stage then runs in a fresh `feedstore` process per engine, so
the numbers include process start-up, imports and, for Spark, starting the JVM and the session (what a user
sees on one machine). Reported per run: wall time, CPU time (user + system, summed over the process tree: the
Python driver, the JVM, the Python workers) and the peak summed RSS of the tree. The two engines' outputs are
then compared content for content (bench/compare_outputs.py) and the result printed.

The training set runs through each engine's Feast offline store, as a user would pick it: DuckDB through the
default store (`sqlite`: the ASOF DuckDB offline store), Spark through `--online-store redis-spark` (the Spark
point-in-time store; a throwaway redis-server serves as its online store, untouched by the training set). Each
is applied first (untimed); both build the same named version, so the splits are compared too.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from measure import start_redis, watch_tree  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--master", default="local[2]", help="Spark master of the spark runs")
    parser.add_argument("--driver-memory", help="spark.driver_memory of the spark runs (default: the config's)")
    parser.add_argument("--stages", default="validate,stats",
                        help="comma-separated, in pipeline order: validate, stats, training-set")
    parser.add_argument("--engines", default="duckdb,spark",
                        help="comma-separated: duckdb, spark (one engine: nothing is compared; e.g. a size "
                             "Spark local[2] cannot finish in the time at hand)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "engines")
    args = parser.parse_args()
    engines = args.engines.split(",")
    if not engines or set(engines) - {"duckdb", "spark"}:
        parser.error("--engines: duckdb, spark or both")
    order = ["validate", "stats", "training-set"]
    wanted = args.stages.split(",")
    if set(wanted) - set(order) or wanted != sorted(wanted, key=order.index):
        parser.error(f"--stages: a comma-separated subset of {','.join(order)}, in that order")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average at start {os.getloadavg()[0]:.1f}")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    config = args.out / "spark.yaml"
    config.write_text(f"spark:\n  master: '{args.master}'\n"
                      + (f"  driver_memory: '{args.driver_memory}'\n" if args.driver_memory else ""))
    src = args.out / "raw-src"
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(src)}
    env.pop("FEEDSTORE_CONFIG", None)
    env.pop("FEEDSTORE_ENGINE", None)
    feedstore = [sys.executable, "-m", "feedstore", "--config", str(config), "--log-level", "WARNING"]
    _, _, _, rc, err = watch_tree([*feedstore, "generate", "--interactions", str(args.events), "--no-report"], env)
    assert rc == 0, f"generation failed: {err[-3000:]}"
    copied = ["raw"]
    # inputs the measured stages need and nobody measures: computed once, untimed, on DuckDB, before the copies
    # (stats after a measured validate is computed per engine below, from that engine's validated data)
    prepared = ["validate"] if "validate" not in wanted else []
    prepared += ["stats"] if "training-set" in wanted and not {"validate", "stats"} & set(wanted) else []
    for stage in prepared:  # inputs of the measured stages, computed once, untimed, on DuckDB
        cmd = ["validate", "--as-of", "2026-01-01"] if stage == "validate" else ["stats"]
        _, _, _, rc, err = watch_tree([*feedstore, *cmd], env)
        assert rc == 0, f"{stage} failed: {err[-3000:]}"
        copied.append("validated" if stage == "validate" else "offline")
    redis = None
    if "training-set" in wanted:
        redis, where = start_redis(args.out)
        env["REDIS_CONNECTION_STRING"] = where
    dirs = {}
    try:
        for engine in engines:
            d = args.out / engine
            for part in copied:
                shutil.copytree(src / part, d / part, symlinks=False)
            dirs[engine] = d
            run_env = {**env, "FEEDSTORE_DATA_DIR": str(d)}
            store = ["--online-store", "redis-spark" if engine == "spark" else "sqlite"]
            stages = {"validate": ["validate", "--as-of", "2026-01-01"], "stats": ["stats"],
                      "training-set": ["training-set", "--version", "bench", *store]}
            for name in wanted:
                if name == "training-set" and "validate" in wanted and "stats" not in wanted:
                    _, _, _, rc, err = watch_tree([*feedstore, "--engine", engine, "stats"], run_env)  # untimed
                    assert rc == 0, f"{engine} stats failed: {err[-3000:]}"
                if name == "training-set":  # the registry first (untimed)
                    _, _, _, rc, err = watch_tree([*feedstore, "--engine", engine, "apply", *store], run_env)
                    assert rc == 0, f"{engine} apply failed: {err[-3000:]}"
                wall, cpu, peak, rc, err = watch_tree([*feedstore, "--engine", engine, *stages[name]], run_env)
                assert rc == 0, f"{engine} {name} failed: {err[-3000:]}"
                where = f"Spark {args.master}" if engine == "spark" else "DuckDB"
                print(f"{args.events:,} events  {name:12s} {where:16s} wall {wall:7.1f} s  CPU {cpu:7.1f} s  "
                      f"peak RSS {peak:6.0f} MiB", flush=True)
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()
    if len(dirs) < 2:
        print(f"load average at end {os.getloadavg()[0]:.1f}")
        return
    training = ["--training", "bench", "bench"] if "training-set" in wanted else []
    compare = subprocess.run([sys.executable, str(ROOT / "bench" / "compare_outputs.py"), str(dirs["duckdb"]),
                              str(dirs["spark"]), *training], capture_output=True, text=True)
    print(compare.stdout.strip())
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
