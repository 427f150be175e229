"""Benchmark the event generator: 1M events to Parquet (wall time) and a large streamed run (peak RSS, rate).

Run:  .venv/bin/python bench/generate.py [--large 100000000] [--workers N] [--out bench/out]
Prints one line per measurement; copy them into bench/RESULTS.md with the machine description.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
from pathlib import Path

from measure import run_tree  # bench/measure.py (this script's directory is on sys.path)

from feedstore.core.config import GenerationConfig

ROOT = Path(__file__).resolve().parent.parent


def run_one(out: Path, interactions: int, workers: int) -> tuple[float, float]:
    """Generate in a child process; return (wall seconds, peak summed RSS of its process tree in MiB)."""
    if out.exists():
        shutil.rmtree(out)
    code = (
        "from pathlib import Path; from feedstore.core.config import GenerationConfig;"
        "from feedstore.ingestion.generate.run import write_raw_events;"
        f"write_raw_events(GenerationConfig(interactions={interactions}), Path({str(out)!r}), workers={workers}, "
        "progress=False)"
    )
    wall, peak, rc, err = run_tree([sys.executable, "-c", code], interval=0.1)
    if rc:
        raise SystemExit(f"generation failed with exit code {rc}: {err[-2000:]}")
    return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=100_000_000, help="events for the streaming run (0 = skip)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    d = GenerationConfig()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"config: {d.users:,} users, {d.items:,} items, {d.n_days} days, workers={args.workers}")
    walls = []
    for _ in range(args.repeat):
        wall, peak_1m = run_one(args.out / "1m", 1_000_000, args.workers)
        walls.append(wall)
    size = sum(p.stat().st_size for p in (args.out / "1m").rglob("*.parquet")) / 2**20
    print(f"1M events -> Parquet: best {min(walls):.2f} s, median {sorted(walls)[len(walls) // 2]:.2f} s "
          f"(process start included), {size:.0f} MiB on disk, peak RSS {peak_1m:.0f} MiB")
    if args.large:
        wall, peak = run_one(args.out / "large", args.large, args.workers)
        size = sum(p.stat().st_size for p in (args.out / "large").rglob("*.parquet")) / 2**30
        print(f"{args.large:,} events streamed -> Parquet: {wall:.1f} s, {args.large / wall / 1e6:.2f} M events/s, "
              f"peak RSS (driver + workers, summed) {peak:.0f} MiB, {size:.2f} GiB on disk")
        shutil.rmtree(args.out / "large", ignore_errors=True)


if __name__ == "__main__":
    main()
