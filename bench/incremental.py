"""Benchmark incremental statistics: a one-day update at day 30 and day 360 of a one-year history, next to the
full re-aggregation, and the previous code's one-day update for reference.

Run:  .venv/bin/python bench/incremental.py [--interactions 1000000] [--days 30 360] [--repeat 3]
      [--baseline-src DIR]   # a checkout of the previous code (e.g. `git archive main`), run with this venv
      [--delta N]            # the state's base snapshot N days old (see below); [--no-full]

For each day K: the history's statistics, tiles and state are built (not timed) by `feedstore stats --end K-1`,
or with `--delta N` by `stats --end K-1-N` then the range update `stats --start K-N --end K-1` (the user x item
view's base snapshot is then as of K-1-N, with N days of tiles after it: `--delta 28` is the largest a daily run
reads without compacting, `--delta 29` makes day K's run compact). Then `feedstore stats --start K --end K` (the
daily update) runs `--repeat` times in fresh processes; each repeat restores the intermediates first, so every run
is the same in-order daily update. With `--baseline-src`, the previous code then builds its own history the same
way and its daily update is timed the same way. Reported: CLI wall (process start and the GX gate included) and
the compute time the stage logs, peak RSS of the process tree, whether the run compacted; the ratio day 360 /
day 30 comes from the same run. Timings on a shared machine are noisy: compare ratios, not absolute times across
runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
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


def _launcher() -> Path:
    """The previous code's entry point as a script file: run with `python -c`, the process ended silently with exit
    code 0 while the gate imported Great Expectations (after the compute, before the gate and the publish), so its
    wall time measured nothing of those."""
    path = Path(tempfile.gettempdir()) / f"feedstore-bench-baseline-{os.getpid()}.py"
    if not path.exists():
        path.write_text(_BASELINE)
    return path


def _stats(env: dict, *args: str, src: Path | None = None) -> tuple[float, float, float, bool]:
    """(wall s, compute s from the log, peak RSS MiB, compacted) of one `feedstore stats` process (of the code under
    `src`)."""
    head = [sys.executable, str(_launcher()), str(src)] if src else [sys.executable, "-m", "feedstore"]
    cmd = [*head, "--log-level", "INFO", "stats", *args]
    wall, peak, rc, err = run_tree(cmd, env)
    assert rc == 0, f"{' '.join(args)} failed: {err[-3000:]}"
    found = COMPUTED.findall(err)
    return wall, float(found[-1]) if found else float("nan"), peak, "base snapshot compacted" in err


def _daily(env: dict, data: Path, saved: Path, k: int, delta: int, repeat: int,
           src: Path | None = None) -> list[tuple[float, float, float, bool]]:
    """Build the history before day k (not timed; see the module doc), then time `repeat` daily updates of day k."""
    day = START + timedelta(days=k - 1)
    iso = (day - timedelta(days=delta + 1)).isoformat()
    _stats(env, "--end", iso, src=src)
    if delta:
        _stats(env, "--start", (day - timedelta(days=delta)).isoformat(), "--end",
               (day - timedelta(days=1)).isoformat(), src=src)
    shutil.rmtree(saved, ignore_errors=True)
    shutil.copytree(data / "intermediate", saved)
    runs = []
    for _ in range(repeat):
        shutil.rmtree(data / "intermediate")
        shutil.copytree(saved, data / "intermediate")
        runs.append(_stats(env, "--start", day.isoformat(), "--end", day.isoformat(), src=src))
    return runs


def _line(what: str, runs: list) -> str:
    med = [statistics.median(r[i] for r in runs) for i in range(3)]
    return (f"{what}, median of {len(runs)}: wall {med[0]:.2f} s, compute {med[1]:.2f} s, peak RSS "
            f"{max(r[2] for r in runs):.0f} MiB, compacted {sum(r[3] for r in runs)}/{len(runs)} "
            f"(each: {', '.join(f'{r[1]:.2f}' for r in runs)} s compute)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, nargs="+", default=[30, 360])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--delta", type=int, default=0, help="days of tiles after the pair view's base snapshot")
    parser.add_argument("--no-full", action="store_true", help="skip the timed full re-aggregation")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "incremental")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="source tree of the previous code: also time its one-day update")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    data = args.out / "data"
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data)}
    env.pop("FEEDSTORE_CONFIG", None)
    if not (data / "validated" / "interactions").exists():
        shutil.rmtree(data, ignore_errors=True)
        for cmd in (["generate", "--interactions", str(args.interactions), "--no-report"],
                    ["validate", "--as-of", "2026-01-01"]):
            _, _, rc, err = run_tree([sys.executable, "-m", "feedstore", "--log-level", "WARNING", *cmd], env)
            assert rc == 0, err[-3000:]
    if not args.no_full:
        wall, comp, peak, _ = _stats(env)
        print(f"full re-aggregation (`feedstore stats`, 366 days, {args.interactions:,} events, tiles and state "
              f"included): wall {wall:.2f} s, compute {comp:.2f} s, peak RSS {peak:.0f} MiB", flush=True)
    results: dict[str, dict[int, list]] = {"this code": {}, "previous code": {}}
    saved = args.out / "saved-intermediate"
    for k in args.days:
        day = START + timedelta(days=k - 1)
        codes = [("this code", None)] + ([("previous code", args.baseline_src)] if args.baseline_src else [])
        for name, src in codes:
            runs = results[name][k] = _daily(env, data, saved, k, args.delta, args.repeat, src)
            print(_line(f"day {k} ({day}), {name}, base snapshot {args.delta} days old: one-day update", runs),
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    if len(args.days) >= 2:
        lo, hi = args.days[0], args.days[-1]
        for name, res in results.items():
            if res:
                for i, what in ((0, "wall"), (1, "compute")):
                    print(f"{name}: ratio day {hi} / day {lo} ({what}, medians): "
                          f"{statistics.median(r[i] for r in res[hi]) / statistics.median(r[i] for r in res[lo]):.2f}")


if __name__ == "__main__":
    main()
