"""Benchmark the commands users run, next to their floors, in one run: each command through the CLI in a fresh
process on the default config, and beside it the cheapest plain-DuckDB program doing the same I/O, also in a fresh
process, run right after it on the same files (so a loaded machine slows both alike; the ratio is the number).

Run:  .venv/bin/python bench/commands.py [--events 1000000] [--repeat 3] [--large] [--no-write]

| command | its floor (fresh `python -c` with DuckDB, same inputs) |
|---|---|
| `feedstore generate` (with the realism report) | `feedstore generate --no-report` |
| `feedstore validate` | read the raw tables and write them back, interactions partitioned by date |
| `feedstore stats` | count / sums per (user, day), (item, day), (user, item, day), written partitioned by date |
| `feedstore training-set` | the same entity rows ASOF-joined to the same offline files (3 joins), one Parquet file |
| `feedstore lookup` (one call, after `apply` + `materialize`) | `python -c "import feedstore"` (start-up only) |

Each pair runs `--repeat` times, command then floor; the table shows the median wall of each, the median of the
per-pair ratios and their range, the CPU seconds of each (user + system, the process and the children it waited
for: steadier than wall time on a loaded machine, but blind to parallelism) and the peak RSS (process tree) of the
command. `--large` adds a 10M-event
run (one repetition). The table replaces the block between the markers in bench/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from measure import run_tree  # bench/measure.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench/commands.py: begin -->", "<!-- bench/commands.py: end -->"

_PRELUDE = """
import sys, duckdb
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")
data, out = sys.argv[1], sys.argv[2]
"""

FLOOR_VALIDATE = _PRELUDE + """
con.execute(f\"\"\"COPY (SELECT *, CAST(event_timestamp AS DATE) AS date
                      FROM read_parquet('{data}/raw/interactions/**/*.parquet', hive_partitioning = false))
               TO '{out}/interactions' (FORMAT parquet, PARTITION_BY (date), OVERWRITE)\"\"\")
for t in ("users", "items"):
    con.execute(f"COPY (SELECT * FROM read_parquet('{data}/raw/{t}.parquet')) TO '{out}/{t}.parquet' (FORMAT parquet)")
"""

FLOOR_STATS = _PRELUDE + """
con.execute(f\"\"\"CREATE TEMP TABLE ev AS SELECT user_id, item_id, CAST(event_timestamp AS DATE) AS date, click,
                  "like", share, dwell_time
                  FROM read_parquet('{data}/validated/interactions/**/*.parquet', hive_partitioning = false)\"\"\")
for name, keys in (("user", "user_id"), ("item", "item_id"), ("user_item", "user_id, item_id")):
    con.execute(f\"\"\"COPY (SELECT {keys}, date, count(*) AS impressions, sum(click) AS clicks, sum("like") AS likes,
                              sum(share) AS shares, sum(dwell_time) AS dwell FROM ev GROUP BY ALL)
                   TO '{out}/{name}' (FORMAT parquet, PARTITION_BY (date), OVERWRITE)\"\"\")
"""

# The first floor above writes ~1/5 of the cells `feedstore stats` publishes (it has no windows and one row per
# active day): this one reads every offline table and tile `feedstore stats` just wrote and writes them back with
# DuckDB, partitioned by date: the I/O of the same output, without computing anything.
FLOOR_STATS_OUTPUT = _PRELUDE + """
import os
for kind in ("offline", "intermediate/tiles"):
    for view in sorted(os.listdir(f"{data}/{kind}")):
        src = f"read_parquet('{data}/{kind}/{view}/*/*.parquet', filename = true, hive_partitioning = false)"
        dst = f"{out}/{kind.replace('/', '_')}_{view}"
        con.execute(f\"\"\"COPY (SELECT * EXCLUDE (filename), regexp_extract(filename, 'date=([0-9-]+)', 1) AS date
                              FROM {src}) TO '{dst}' (FORMAT parquet, PARTITION_BY (date), OVERWRITE)\"\"\")
"""

FLOOR_TRAINING = _PRELUDE + """
views = {"user_daily_stats": ["user_id"], "item_daily_stats": ["item_id"],
         "user_item_daily_stats": ["user_id", "item_id"]}
con.execute(f\"\"\"CREATE TEMP TABLE e AS
    SELECT interaction_id, user_id, item_id, event_timestamp, event_timestamp AS request_ts, device,
           click, "like", share, dwell_time
    FROM read_parquet('{data}/validated/interactions/**/*.parquet', hive_partitioning = false)\"\"\")
joins, cols = [], []
for k, (view, keys) in enumerate(views.items()):
    src = f"read_parquet('{data}/offline/{view}/*/*.parquet', hive_partitioning = false)"
    names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
    feats = [c for c in names if c not in keys and c not in ("event_timestamp", "created_timestamp", "date")]
    on = " AND ".join(f"e.{c} = v{k}.{c}" for c in keys) + f" AND e.event_timestamp >= v{k}.event_timestamp"
    joins.append(f"ASOF LEFT JOIN (SELECT * FROM {src}) v{k} ON {on}")
    cols += [f'v{k}."{f}" AS "{view}__{f}"' for f in feats]
con.execute(f\"\"\"COPY (SELECT e.*, {', '.join(cols)} FROM e {' '.join(joins)}
                      ORDER BY e.event_timestamp, e.interaction_id) TO '{out}/joined.parquet' (FORMAT parquet)\"\"\")
"""


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


class Bench:
    def __init__(self, data: Path, scratch: Path, repeat: int):
        self.data, self.scratch, self.repeat = data, scratch, repeat
        self.env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
        for k in ("FEEDSTORE_CONFIG", "FEEDSTORE_PRESET"):
            self.env.pop(k, None)
        self.feedstore = [sys.executable, "-m", "feedstore", "--log-level", "WARNING"]
        self.rows: list[dict] = []

    def run(self, args: list[str], what: str) -> tuple[float, float, float]:
        """(wall s, CPU s of the process and every child it waited for, peak RSS MiB)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, peak, rc, err = run_tree(args, self.env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if rc:
            raise SystemExit(f"{what} failed (exit {rc}):\n{err[-3000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu, peak

    def cli(self, *args: str) -> tuple[float, float, float]:
        return self.run([*self.feedstore, *args], f"feedstore {' '.join(args)}")

    def floor(self, script: str) -> tuple[float, float, float]:
        out = self.scratch / "floor"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        return self.run([sys.executable, "-c", script, str(self.data), str(out)], "floor")

    def pair(self, name: str, command, floor, floor_name: str, target: float | None, setup=None,
             also: tuple | None = None) -> None:
        """`also` = (floor, floor name): a second floor, measured right after the first in every repetition and
        reported as its own row (no target)."""
        walls, floors, ratios, cpus, f_cpus, peaks = [], [], [], [], [], []
        second: list[tuple[float, float]] = []
        for _ in range(self.repeat):
            if setup:
                setup()
            wall, cpu, peak = command()
            if also:
                second.append(also[0]()[:2])
            f_wall, f_cpu, _ = floor()
            walls.append(wall)
            floors.append(f_wall)
            cpus.append(cpu)
            f_cpus.append(f_cpu)
            peaks.append(peak)
            ratios.append(wall / f_wall)
            print(f"  {name}: {wall:.2f} s (CPU {cpu:.2f} s); floor ({floor_name}) {f_wall:.2f} s (CPU {f_cpu:.2f} s);"
                  f" {wall / f_wall:.2f}x [load {os.getloadavg()[0]:.1f}]", flush=True)
        self.rows.append({"command": name, "wall": _median(walls), "floor_name": floor_name,
                          "floor": _median(floors), "ratio": _median(ratios), "lo": min(ratios), "hi": max(ratios),
                          "cpu": _median(cpus), "f_cpu": _median(f_cpus), "target": target, "peak": max(peaks)})
        if also:
            ratios2 = [w / f for w, (f, _) in zip(walls, second, strict=True)]
            print(f"  {name}: second floor ({also[1]}) {_median([f for f, _ in second]):.2f} s", flush=True)
            self.rows.append({**self.rows[-1], "floor_name": also[1], "floor": _median([f for f, _ in second]),
                              "ratio": _median(ratios2), "lo": min(ratios2), "hi": max(ratios2),
                              "f_cpu": _median([c for _, c in second]), "target": None})


def run_all(data: Path, events: int, repeat: int) -> list[dict]:
    scratch = data.parent / f"{data.name}-scratch"
    if data.exists():
        shutil.rmtree(data)
    b = Bench(data, scratch, repeat)
    n = ["--interactions", str(events)]
    b.pair("generate", lambda: b.cli("generate", *n), lambda: b.cli("generate", *n, "--no-report"),
           "generate --no-report", 1.25)
    b.pair("validate", lambda: b.cli("validate", "--as-of", "2026-01-01"), lambda: b.floor(FLOOR_VALIDATE),
           "DuckDB: raw tables read and written back, partitioned by date", 4.0)
    b.pair("stats", lambda: b.cli("stats"), lambda: b.floor(FLOOR_STATS),
           "DuckDB: sums per (user, day), (item, day), (user, item, day), partitioned", 2.5,
           also=(lambda: b.floor(FLOOR_STATS_OUTPUT),
                 "DuckDB: the same offline tables and tiles read and written back, partitioned (same output)"))
    b.cli("apply")
    version = "bench-commands"
    b.pair("training-set", lambda: b.cli("training-set", "--version", version), lambda: b.floor(FLOOR_TRAINING),
           "DuckDB: ASOF join of the same entity rows on the same offline files, one Parquet file", 2.5,
           setup=lambda: shutil.rmtree(data / "training" / version, ignore_errors=True))
    b.cli("materialize")
    b.pair("lookup (one call)", lambda: b.cli("lookup", "--user", "1", "--items", "1,2,3,4,5"),
           lambda: b.run([sys.executable, "-c", "import feedstore"], "import"), "python -c 'import feedstore'", None)
    shutil.rmtree(scratch, ignore_errors=True)
    return b.rows


def table(rows: list[dict]) -> str:
    lines = ["| command (fresh process, CLI) | wall (median) | floor | floor wall (median) "
             "| wall ratio (median; range) | target | CPU s: command / floor (ratio) | peak RSS |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = f"<= {r['target']:g}x" if r["target"] else ""
        lines.append(f"| `feedstore {r['command']}` | {r['wall']:.2f} s | {r['floor_name']} | {r['floor']:.2f} s | "
                     f"**{r['ratio']:.2f}x** ({r['lo']:.2f}-{r['hi']:.2f}) | {target} | "
                     f"{r['cpu']:.1f} / {r['f_cpu']:.1f} ({r['cpu'] / max(r['f_cpu'], 1e-9):.2f}x) | "
                     f"{r['peak']:,.0f} MiB |")
    return "\n".join(lines)


def write_results(text: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    doc = path.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + block + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n## The commands users run (`bench/commands.py`)\n\n" + block + "\n"
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="also run 10M events (one repetition)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "commands")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    started = datetime.now(UTC)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
               f"load average at start {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} (1 / 5 / 15 min)")
    print(f"machine: {machine}", flush=True)
    sections = []
    sizes = [(args.events, args.repeat)] + ([(10_000_000, 1)] if args.large else [])
    for events, repeat in sizes:
        print(f"{events:,} events, {repeat} repetition(s):", flush=True)
        rows = run_all(args.out.resolve() / f"data-{events}", events, repeat)
        sections.append(f"{events:,} events, default config, {repeat} repetition(s) of command then floor:\n\n"
                        + table(rows))
    load1 = os.getloadavg()
    text = (f"Measured {started:%Y-%m-%d %H:%M} UTC ({time.perf_counter() - t0:.0f} s in all); {machine}, at the end "
            f"{load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f}. Command: `.venv/bin/python bench/commands.py"
            f"{'' if args.events == 1_000_000 else f' --events {args.events}'}"
            f"{'' if args.repeat == 3 else f' --repeat {args.repeat}'}{' --large' if args.large else ''}`.\n\n"
            + "\n\n".join(sections))
    print(text)
    if not args.no_write:
        write_results(text)


if __name__ == "__main__":
    main()
