"""
### etl_and_feature_engineering

Daily feature pipeline for feed ranking (feedstore). Each run processes **one day**: the day before the run's
logical date (the run at 2024-11-15 02:00 processes 2024-11-14), and every task is idempotent for it
(re-running the day overwrites that day's partitions and nothing else).

`build_history` -> `generate_events` -> `validate_events` -> `compute_stats` -> `validate_stats` ->
`apply_definitions` -> `materialize_online` -> `build_training_set` -> `validate_training_set` ->
`check_skew`

* Every task calls the same `feedstore.shell.runner` function as the `feedstore` CLI; settings come from the pipeline
  config (`FEEDSTORE_CONFIG`, `FEEDSTORE_DATA_DIR`) and Feast's from `feature_repo/feature_store*.yaml`.
* `build_history` is the cold start: on an empty data dir it generates, validates and computes the statistics of
  every day from the source's first day (`generation.start`) to the day before, so the first run has the history
  its features need; afterwards it does nothing.
* `compute_stats` is incremental: it reads the day's events, the tiles its windows need and the lifetime state
  (late data for an earlier day also rewrites the later rows it changes). Backfills (`airflow backfill create
  --dag-id etl_and_feature_engineering --from-date ... --to-date ...`, one run at a time) give the same offline
  tables as one full run over the range.
* A failed validation gate fails its task at once (no retries: retrying cannot fix data), so nothing downstream
  runs; the task log shows the summary table. Other errors (a service down) get the 2 retries.
* `materialize_online` writes the entities whose online values changed: the rows stamped since the view's last
  materialization (a full load of the ttl window after late data changed a day already served).
* Run params: `inject_faults` (fraction of corrupted rows, to exercise the gate; default 0).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, get_current_context, task


def _day_and_end() -> tuple:
    """(the processed day, the end of that day as an aware datetime) for the running DAG run."""
    ctx = get_current_context()
    run_time = ctx.get("data_interval_end") or ctx["logical_date"]
    end = datetime(run_time.year, run_time.month, run_time.day, tzinfo=timezone.utc)
    return (end - timedelta(days=1)).date(), end


def _gate(fn, *args, **kwargs):
    """Run a pipeline function; expected failures (bad data, bad input) fail the task at once, without retries:
    retrying cannot fix the data. Anything else (a service down, a crash) keeps the DAG's retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from feedstore.core.errors import FeedstoreError

    try:
        return fn(*args, **kwargs)
    except FeedstoreError as e:
        raise AirflowFailException(f"{type(e).__name__}: {e}") from None


def _config():
    from feedstore.core.config import load_config
    from feedstore.core.logs import configure_logging

    cfg = load_config()
    configure_logging(cfg.log_level)
    return cfg


@dag(
    dag_id="etl_and_feature_engineering",
    schedule="0 2 * * *",
    start_date=datetime(2024, 1, 2, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "feedstore", "retries": 2, "retry_delay": timedelta(minutes=5)},
    params={"inject_faults": 0.0},
    tags=["feedstore", "feast", "feature-engineering", "great-expectations"],
    doc_md=__doc__,
)
def etl_and_feature_engineering():
    @task
    def build_history() -> str:
        """Cold start: on an empty data dir, build the history the features need (nothing otherwise)."""
        from feedstore.shell.runner import build_history as run

        day, end = _day_and_end()
        _gate(run, _config(), day, as_of=end)
        return day.isoformat()

    @task
    def generate_events(day: str, params=None) -> str:
        """Write the day's raw events (users and items are rewritten identically)."""
        from datetime import date

        from feedstore.shell.runner import generate_events as run

        day = date.fromisoformat(day)
        _gate(run, _config(), days=[day], fault_rate=float((params or {}).get("inject_faults", 0.0)), report=False,
              progress=False)
        return day.isoformat()

    @task
    def validate_events(day: str) -> str:
        """GX gate on the day's raw data; quarantines bad rows, fails the task if the gate fails."""
        from datetime import date

        from feedstore.shell.runner import validate_events as run

        _, end = _day_and_end()
        _gate(run, _config(), start=date.fromisoformat(day), end=date.fromisoformat(day), as_of=end)
        return day

    @task
    def compute_stats(day: str) -> str:
        """Timestamped statistics for the day (partition date=day of each offline source)."""
        from datetime import date

        from feedstore.shell.runner import compute_stats as run

        _gate(run, _config(), start=date.fromisoformat(day), end=date.fromisoformat(day))
        return day

    @task
    def validate_stats(day: str) -> str:
        """GX gate on the published offline statistics of the day."""
        from feedstore.shell.runner import validate_stats as run

        _gate(run, _config(), days=[day])
        return day

    @task
    def apply_definitions(day: str) -> str:
        """`feast apply` on feature_repo/."""
        from feedstore.shell.runner import apply_definitions as run

        _gate(run, _config())
        return day

    @task
    def materialize_online(day: str) -> str:
        """Latest features up to the end of the day into the online store."""
        from feedstore.shell.runner import materialize_online as run

        _, end = _day_and_end()
        _gate(run, _config(), end=end)
        return day

    @task
    def build_training_set(day: str) -> str:
        """Point-in-time training set through get_historical_features, as of the end of the day."""
        from datetime import date

        from feedstore.shell.runner import build_training_set as run

        result = _gate(run, _config(), version=f"daily-{day}", end=date.fromisoformat(day))
        return result.version

    @task
    def validate_training_set(version: str) -> str:
        """GX gate on the published training set, then the baseline model check."""
        from feedstore.shell.runner import validate_training_set as run

        _gate(run, _config(), version)
        return version

    @task
    def check_skew(version: str) -> None:
        """Online values must equal get_historical_features at the newest materialization (in a backfill, the
        online store keeps newer rows than the day processed, so that is the moment to compare at)."""
        from feedstore.shell.runner import check_skew as run

        _gate(run, _config())

    day = generate_events(build_history())
    stats = validate_stats(compute_stats(validate_events(day)))
    version = build_training_set(materialize_online(apply_definitions(stats)))
    check_skew(validate_training_set(version))


etl_dag = etl_and_feature_engineering()
