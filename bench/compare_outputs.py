"""Compare two data dirs' outputs content for content (row order aside): every offline table and every training
split. Used to show a refactor or another engine gives the same rows and values as before.

    .venv/bin/python bench/compare_outputs.py DATA_A DATA_B [--training VERSION_A VERSION_B]

Exit code 0 when every table matches; prints one line per table (rows, rows only in A, rows only in B).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb


def _compare(con: duckdb.DuckDBPyConnection, a: str, b: str) -> tuple[int, int, int, int, list[str]]:
    cols_a = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {a}").fetchall()]
    cols_b = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {b}").fetchall()]
    cols = [c for c in cols_a if c in cols_b and c != "date"]
    sel = ", ".join(f'"{c}"' for c in cols)
    n_a = con.execute(f"SELECT count(*) FROM {a}").fetchone()[0]
    n_b = con.execute(f"SELECT count(*) FROM {b}").fetchone()[0]
    only_a = con.execute(f"SELECT count(*) FROM (SELECT {sel} FROM {a} EXCEPT ALL SELECT {sel} FROM {b})").fetchone()[0]
    only_b = con.execute(f"SELECT count(*) FROM (SELECT {sel} FROM {b} EXCEPT ALL SELECT {sel} FROM {a})").fetchone()[0]
    missing = sorted(set(cols_a) ^ set(cols_b))
    return n_a, n_b, only_a, only_b, missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--training", nargs=2, metavar=("VERSION_A", "VERSION_B"))
    args = ap.parse_args()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    pairs = []
    for view in sorted(p.name for p in (args.a / "offline").iterdir() if p.is_dir() and not p.name.startswith(".")):
        pairs.append((f"offline/{view}", *(f"read_parquet('{d / 'offline' / view}/*/*.parquet', "
                                            "hive_partitioning = false)" for d in (args.a, args.b))))
    if args.training:
        for split in ("train", "val", "test"):
            pairs.append((f"training/{split}", *(f"read_parquet('{d / 'training' / v / (split + '.parquet')}')"
                                                 for d, v in zip((args.a, args.b), args.training, strict=True))))
    ok = True
    for name, a, b in pairs:
        n_a, n_b, only_a, only_b, missing = _compare(con, a, b)
        same = n_a == n_b and only_a == only_b == 0 and not missing
        ok &= same
        print(f"{'same' if same else 'DIFF'}  {name}: rows {n_a:,} / {n_b:,}, only in A {only_a:,}, only in B "
              f"{only_b:,}{', columns differ: ' + str(missing) if missing else ''}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
