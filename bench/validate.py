"""Benchmark the validation gate: 1M interactions (CLI wall time) and 10M (wall time, peak RSS).

Run:  .venv/bin/python bench/validate.py [--large 10000000] [--out bench/out]
Each size is generated once (not timed), then `feedstore validate` runs in a fresh process, so the wall time
includes Python start-up and importing Great Expectations, as a user would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from measure import run_tree  # bench/measure.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parent.parent


def bench(out: Path, n: int, repeat: int) -> None:
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(out)}
    env.pop("FEEDSTORE_CONFIG", None)
    if out.exists():
        shutil.rmtree(out)
    feedstore = [sys.executable, "-m", "feedstore", "--log-level", "WARNING"]
    _, _, rc, err = run_tree([*feedstore, "generate", "--interactions", str(n), "--no-report"], env)
    assert rc == 0, f"generation failed: {err[-2000:]}"
    walls, peaks = [], []
    for _ in range(repeat):
        wall, peak, rc, err = run_tree([*feedstore, "validate", "--as-of", "2026-01-01"], env)
        assert rc == 0, f"validation failed: {err[-2000:]}"
        walls.append(wall)
        peaks.append(peak)
    report = json.loads((out / "reports" / "validation" / "interactions.json").read_text())
    rules = len(report["expectations"])
    print(f"{n:,} interactions, {rules} interaction rules (+ users, items suites), GX Data Docs built: "
          f"best {min(walls):.2f} s, median {sorted(walls)[len(walls) // 2]:.2f} s wall of {repeat} "
          f"(process start + GX import included); peak RSS {max(peaks):.0f} MiB; "
          f"{report['validated']:,} validated + {report['quarantined']:,} quarantined")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=10_000_000, help="size of the bounded-memory run (0 = skip)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    bench(args.out / "validate-1m", 1_000_000, args.repeat)
    if args.large:
        bench(args.out / "validate-large", args.large, 1)
        shutil.rmtree(args.out / "validate-large", ignore_errors=True)


if __name__ == "__main__":
    main()
