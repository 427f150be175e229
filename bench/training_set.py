"""Benchmark point-in-time retrieval: our ASOF offline store vs a raw DuckDB ASOF join vs Feast's stock duckdb store.

Run:  .venv/bin/python bench/training_set.py [--rows 1000000] [--stock-rows 100000] [--data DIR]
                                             [--large-data DIR] [--batch-rows 1000000 250000]
Needs a data dir with validated interactions and offline statistics (default: builds the default config into
bench/out/training; not timed). Prints, in one run on the same data and entity rows: seconds, rows in / out,
and the ratios. The raw ASOF join is written by hand here (three `ASOF LEFT JOIN`s on the same Parquet files,
selecting the same feature columns, no ttl, no on-demand views) as the floor to compare against.

With --large-data (a data dir of e.g. 10M validated interactions with statistics and `feedstore apply` done),
it also runs the whole builder, `feedstore training-set`, in a fresh process once per --batch-rows value and
prints wall time and the peak RSS of the process tree: the bounded-memory check (memory should follow the
batch size, not the rows).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from measure import run_tree  # bench/measure.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parent.parent


def prepare(data: Path) -> None:
    if (data / "offline" / "item_daily_stats").exists():
        return
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
    env.pop("FEEDSTORE_CONFIG", None)
    for args in (["generate", "--no-report"], ["validate", "--as-of", "2026-01-01"], ["stats"]):
        subprocess.run([sys.executable, "-m", "feedstore", "--log-level", "WARNING", *args], env=env, check=True)


def store_with(offline_type: str, data: Path, work: Path):
    from feast import FeatureStore

    repo = work / f"repo-{offline_type.rsplit('.', 1)[-1]}"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    yaml = repo / "feature_store.sqlite.yaml"
    ours = "type: feedstore.plugins.asof_duckdb.AsofDuckDBOfflineStore"
    text = yaml.read_text().replace(ours, f"type: {offline_type}")
    if offline_type == "duckdb":  # the stock store does not know this store's extra settings
        text = re.sub(r"(?m)^  (memory_limit|temp_directory): .*\n", "", text)
    yaml.write_text(text.replace("registry.sqlite.db", f"registry.bench-{offline_type.rsplit('.', 1)[-1]}.db"))
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
    subprocess.run([str(Path(sys.executable).with_name("feast")), "-c", str(repo), "-f", str(yaml), "apply"],
                   env=env, check=True, capture_output=True)
    return FeatureStore(repo_path=str(repo), fs_yaml_file=yaml)


def raw_asof(data: Path, entities, store) -> tuple[float, int]:
    """The same joins, by hand: entity rows ASOF-joined to each view's Parquet files on keys and timestamp."""
    views = {v.name: [f.name for f in v.features] for v in store.list_feature_views()}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("e", entities)
    joins, cols = [], []
    for k, (view, feats) in enumerate(sorted(views.items())):
        keys = ["user_id", "item_id"] if view == "user_item_daily_stats" else (
            ["user_id"] if view.startswith("user") else ["item_id"])
        src = f"read_parquet('{data}/offline/{view}/**/*.parquet', hive_partitioning = false)"
        on = " AND ".join(f"e.{c} = v{k}.{c}" for c in keys) + f" AND e.event_timestamp >= v{k}.event_timestamp"
        joins.append(f"ASOF LEFT JOIN (SELECT {', '.join(keys)}, event_timestamp, {', '.join(feats)} FROM {src}) v{k} "
                     f"ON {on}")
        cols += [f"v{k}.{f}" for f in feats]
    t0 = time.perf_counter()
    out = con.sql(f"SELECT e.*, {', '.join(cols)} FROM e {' '.join(joins)}").to_arrow_table()
    return time.perf_counter() - t0, out.num_rows


def timed(store, entities, as_df: bool = False) -> tuple[float, int]:
    """get_historical_features(...).to_arrow() (the same output kind as the raw join), or .to_df()."""
    service = store.get_feature_service("feed_ranking_v1")
    t0 = time.perf_counter()
    job = store.get_historical_features(entity_df=entities, features=service)
    out = job.to_df() if as_df else job.to_arrow()
    return time.perf_counter() - t0, len(out)


def builder_run(data: Path, batch_rows: int, work: Path) -> None:
    """`feedstore training-set` on `data` in a fresh process with `splits.batch_rows`; wall time and peak RSS."""
    import json

    config = work / f"pipeline-batch-{batch_rows}.yaml"
    text = (ROOT / "config" / "pipeline.yaml").read_text()
    config.write_text(re.sub(r"(?m)^  batch_rows: \d+", f"  batch_rows: {batch_rows}", text))
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data), "FEEDSTORE_CONFIG": str(config)}
    version = f"bench-batch-{batch_rows}"
    wall, peak, rc, err = run_tree([sys.executable, "-m", "feedstore", "--log-level", "WARNING",
                                    "training-set", "--version", version], env)
    if rc:
        raise SystemExit(f"feedstore training-set failed:\n{err[-3000:]}")
    manifest = json.loads((data / "training" / version / "manifest.json").read_text())
    print(f"builder, {manifest['entity_rows']:,} entity rows, batch_rows {batch_rows:,}: {wall:.1f} s wall "
          f"(get_historical_features {manifest['timings_seconds']['get_historical_features']:.1f} s), peak RSS "
          f"{peak:,.0f} MiB; rows out {sum(manifest['rows'].values()):,} ({manifest['rows']})", flush=True)
    shutil.rmtree(data / "training" / version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stock-rows", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "out" / "training" / "data")
    parser.add_argument("--large-data", type=Path, help="also run the builder on this data dir (bounded memory)")
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[1_000_000, 250_000])
    parser.add_argument("--skip-retrieval", action="store_true", help="only the --large-data builder runs")
    args = parser.parse_args()
    if args.large_data:
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        for batch_rows in args.batch_rows:
            builder_run(args.large_data.resolve(), batch_rows, args.large_data.resolve().parent)
    if args.skip_retrieval:
        return
    data = args.data.resolve()
    prepare(data)
    os.environ["FEEDSTORE_DATA_DIR"] = str(data)
    work = data.parent
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    ev = con.execute(f"""SELECT user_id, item_id, event_timestamp, event_timestamp AS request_ts, device, click
                         FROM read_parquet('{data}/validated/interactions/**/*.parquet', hive_partitioning = false)
                         ORDER BY event_timestamp, interaction_id""").df()
    ours = store_with("feedstore.plugins.asof_duckdb.AsofDuckDBOfflineStore", data, work)
    stock = store_with("duckdb", data, work)
    for n in sorted({min(args.rows, len(ev)), min(args.stock_rows, len(ev))} - {0}):
        sample = ev.sample(n, random_state=0).sort_values("event_timestamp").reset_index(drop=True) \
            if n < len(ev) else ev
        t_raw, n_raw = raw_asof(data, sample, ours)
        t_ours, n_ours = timed(ours, sample)
        t_df, _ = timed(ours, sample, as_df=True)
        line = (f"{n:,} entity rows: ours {t_ours:.2f} s to Arrow ({n_ours:,} rows out; {t_df:.2f} s to pandas), "
                f"raw ASOF {t_raw:.2f} s ({n_raw:,} out), ours/raw {t_ours / t_raw:.2f}x")
        if n <= args.stock_rows:
            t_stock, n_stock = timed(stock, sample)  # to Arrow too (Feast applies the ODFVs in to_arrow)
            line += f"; Feast stock duckdb {t_stock:.2f} s ({n_stock:,} out), stock/ours {t_stock / t_ours:.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
