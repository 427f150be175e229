"""How long Airflow takes to parse dags/etl_dag.py (a fresh interpreter per run, Airflow itself imported first,
as the scheduler has it): median and max of a few runs. Timings live here, never in tests."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5

CODE = f"""
import importlib.util, json, time
import airflow.sdk  # noqa: F401  (loaded before the DAG file, as in the scheduler)
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("etl_dag", {str(ROOT / 'dags' / 'etl_dag.py')!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps({{"parse": time.perf_counter() - t}}))
"""


def main() -> None:
    times = []
    for _ in range(RUNS):
        res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True,
                             env={**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
        times.append(json.loads(res.stdout.strip().splitlines()[-1])["parse"])
    print(f"DAG parse (dags/etl_dag.py, {RUNS} runs): median {statistics.median(times):.3f} s, "
          f"max {max(times):.3f} s (target < 2 s)")


if __name__ == "__main__":
    main()
