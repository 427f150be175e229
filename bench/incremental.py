"""Benchmark incremental statistics: a one-day update at day 30 and day 360 of a one-year history, next to the
full re-aggregation, and the old one-day recompute (which re-aggregated the whole history) for reference.

Run:  .venv/bin/python bench/incremental.py [--interactions 1000000] [--days 30 360] [--repeat 3]
      [--baseline-src DIR]   # a checkout of the previous code (e.g. `git archive main`), run with this venv

For each day K: `feedstore stats --end K-1` builds the history's statistics, tiles and state (not timed), then
`feedstore stats --start K --end K` (the daily update: reads day K's events, the tiles its windows need and the
state) runs `--repeat` times in fresh processes; each repeat restores the intermediates first, so every run is
the same in-order daily update. Reported: CLI wall (process start and the GX gate included) and the compute time
the stage logs, peak RSS of the process tree; the ratio day 360 / day 30 comes from the same run. Timings on a
shared machine are noisy: compare ratios, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
from datetime import date, timedelta
from pathlib import Path

from measure import run_tree  # bench/measure.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
START = date(2024, 1, 1)
COMPUTED = re.compile(r"stats (?:computed|updated incrementally) for .*? in ([0-9.]+) s")


_BASELINE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]  # not this venv's install
sys.path.insert(0, sys.argv.pop(1))
from feedstore.shell.cli import main
main()
"""


def _stats(env: dict, *args: str, src: Path | None = None) -> tuple[float, float, float]:
    """(wall s, compute s from the log, peak RSS MiB) of one `feedstore stats` process (of the code under `src`)."""
    head = [sys.executable, "-c", _BASELINE, str(src)] if src else [sys.executable, "-m", "feedstore"]
    cmd = [*head, "--log-level", "INFO", "stats", *args]
    wall, peak, rc, err = run_tree(cmd, env)
    assert rc == 0, f"{' '.join(args)} failed: {err[-3000:]}"
    found = COMPUTED.findall(err)
    return wall, float(found[-1]) if found else float("nan"), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, nargs="+", default=[30, 360])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "incremental")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="source tree of the previous code: also time its one-day recompute")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    data = args.out / "data"
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
    env.pop("FEEDSTORE_CONFIG", None)
    if not (data / "validated" / "interactions").exists():
        shutil.rmtree(data, ignore_errors=True)
        for cmd in (["generate", "--interactions", str(args.interactions), "--no-report"],
                    ["validate", "--as-of", "2026-01-01"]):
            _, _, rc, err = run_tree([sys.executable, "-m", "feedstore", "--log-level", "WARNING", *cmd], env)
            assert rc == 0, err[-3000:]
    wall, comp, peak = _stats(env)
    print(f"full re-aggregation (`feedstore stats`, 366 days, {args.interactions:,} events, tiles and state "
          f"included): wall {wall:.2f} s, compute {comp:.2f} s, peak RSS {peak:.0f} MiB")
    results = {}
    for k in args.days:
        day = START + timedelta(days=k - 1)
        _stats(env, "--end", (day - timedelta(days=1)).isoformat())  # history through K-1 (not timed)
        saved = args.out / "saved-intermediate"
        shutil.rmtree(saved, ignore_errors=True)
        shutil.copytree(data / "intermediate", saved)
        runs = []
        for _ in range(args.repeat):
            shutil.rmtree(data / "intermediate")
            shutil.copytree(saved, data / "intermediate")
            runs.append(_stats(env, "--start", day.isoformat(), "--end", day.isoformat()))
        results[k] = runs
        med = [statistics.median(r[i] for r in runs) for i in range(3)]
        line = (f"day {k} ({day}): one-day update, median of {args.repeat}: wall {med[0]:.2f} s, compute "
                f"{med[1]:.2f} s, peak RSS {max(r[2] for r in runs):.0f} MiB")
        if args.baseline_src:
            bw, bc, bp = _stats(env, "--start", day.isoformat(), "--end", day.isoformat(), src=args.baseline_src)
            line += f"; previous code's one-day recompute: wall {bw:.2f} s, compute {bc:.2f} s, peak {bp:.0f} MiB"
        print(line)
    if len(args.days) >= 2:
        lo, hi = args.days[0], args.days[-1]
        for i, what in ((0, "wall"), (1, "compute")):
            print(f"ratio day {hi} / day {lo} ({what}, medians): "
                  f"{statistics.median(r[i] for r in results[hi]) / statistics.median(r[i] for r in results[lo]):.2f}")


if __name__ == "__main__":
    main()
