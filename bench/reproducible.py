"""Byte-identical reruns at scale: the pipeline twice on the same config, every published Parquet file compared.

Run:  .venv/bin/python bench/reproducible.py [--interactions 10000000] [--out bench/out]
Runs generate -> validate -> stats -> apply -> training-set (the CLI, fresh processes, default config with
`--interactions N`) into two empty data dirs, then compares the sha256 of every Parquet file a reader sees under
validated/, offline/ and training/ (through the publication links). Prints the file count, the bytes compared, the
training-set folder (its name is the fingerprint of the inputs' contents) and any file that differs; exit 1 if one
does. tests/integration/test_reproducible.py checks the same at a size CI can afford.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = (["validate", "--as-of", "2026-01-01"], ["stats"], ["apply"], ["training-set"])


def run_pipeline(data: Path, interactions: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSTORE_")}
    t0 = time.perf_counter()
    for args in (["generate", "--interactions", str(interactions), "--no-report"], *STAGES):
        res = subprocess.run([sys.executable, "-m", "feedstore", "--data-dir", str(data), "--log-level", "WARNING",
                              *args], env=env, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"feedstore {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def digests(data: Path) -> dict[str, tuple[str, int]]:
    """Published Parquet file (as a reader addresses it) -> (sha256, size)."""
    out = {}
    for folder in ("validated", "offline", "training"):
        for dirpath, dirnames, files in os.walk(data / folder, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(f for f in files if f.endswith(".parquet")):
                p = Path(dirpath) / name
                with p.open("rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                out[f"{folder}/{p.relative_to(data / folder)}"] = (digest, p.stat().st_size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--keep", action="store_true", help="keep the two data dirs")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average at start {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    base = args.out / "reproducible" / str(args.interactions)
    shutil.rmtree(base, ignore_errors=True)
    runs = [base / "one", base / "two"]
    for d in runs:
        print(f"{d.name}: pipeline in {run_pipeline(d, args.interactions):.0f} s")
    a, b = digests(runs[0]), digests(runs[1])
    differ = sorted(k for k in set(a) | set(b) if a.get(k, ("", 0))[0] != b.get(k, ("", 0))[0])
    training = sorted({k.split("/")[1] for k in a if k.startswith("training/")})
    print(f"{args.interactions:,} interactions: {len(a):,} / {len(b):,} Parquet files, "
          f"{sum(s for _, s in a.values()) / 2**30:.2f} GiB compared; training set folder(s) {training}; "
          f"files that differ: {len(differ)}" + (f" (first: {differ[:5]})" if differ else ""))
    print(f"load average at end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
