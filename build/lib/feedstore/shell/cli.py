"""`feedstore`: one CLI whose subcommands are the pipeline stages (the DAG calls the same functions)."""

from __future__ import annotations

import atexit
import gc
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from feedstore.core.catalog import Catalog
from feedstore.core.config import ENV_CONFIG, ENV_DATA_DIR, ENV_PRESET, PipelineConfig, load_config
from feedstore.core.errors import FeedstoreError
from feedstore.core.logs import configure_logging, redact

log = logging.getLogger("feedstore")

_DATE = click.DateTime(formats=["%Y-%m-%d"])


@dataclass
class Globals:
    config: Path | None
    data_dir: Path | None
    preset: str | None
    log_level: str | None

    def load(self, overrides: dict[str, Any] | None = None) -> PipelineConfig:
        merged = {"data_dir": self.data_dir, "log_level": self.log_level, **(overrides or {})}
        cfg = load_config(self.config, preset=self.preset, overrides=merged)
        configure_logging(cfg.log_level)
        Catalog(cfg.data_dir)  # a data dir that is a file fails here, in one line
        return cfg


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config", type=click.Path(path_type=Path), default=None,
              help=f"Pipeline config YAML [env {ENV_CONFIG}; default config/pipeline.yaml].")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help=f"Root of all stage inputs and outputs [env {ENV_DATA_DIR}; default ./data].")
@click.option("--preset", default=None, help=f"Config overlay, e.g. 'realistic' [env {ENV_PRESET}].")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default=None, help="Logging level (default INFO).")
@click.version_option(package_name="feedstore")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, data_dir: Path | None, preset: str | None,
        log_level: str | None) -> None:
    """feedstore: a point-in-time-correct feature pipeline for feed ranking.

    Each subcommand is one pipeline stage; `run` runs them all in order.
    """
    ctx.obj = Globals(config, data_dir, preset, log_level)


def _generation_options(fn):
    options = [
        click.option("--users", type=int, default=None, help="Number of users."),
        click.option("--items", type=int, default=None, help="Number of items."),
        click.option("--interactions", type=int, default=None, help="Number of impressions to generate."),
        click.option("--start", type=_DATE, default=None, help="First event day, YYYY-MM-DD (UTC)."),
        click.option("--end", type=_DATE, default=None, help="Last event day, YYYY-MM-DD (UTC, inclusive)."),
        click.option("--seed", type=int, default=None, help="Random seed."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _generation_overrides(users, items, interactions, start, end, seed) -> dict[str, Any]:
    as_date = _as_date
    return {
        "generation.users": users,
        "generation.items": items,
        "generation.interactions": interactions,
        "generation.start": as_date(start),
        "generation.end": as_date(end),
        "generation.seed": seed,
    }


@cli.command()
@_generation_options
@click.option("--inject-faults", "fault_rate", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="Corrupt this fraction of rows (exact counts per kind in raw/faults.json).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: all cores for large runs). Does not change the output.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Measure the data patterns into reports/realism.json.")
@click.pass_obj
def generate(g: Globals, users, items, interactions, start, end, seed, fault_rate, workers, report) -> None:
    """Generate synthetic users, items and impressions into <data-dir>/raw/."""
    from feedstore.shell.runner import generate_events

    cfg = g.load(_generation_overrides(users, items, interactions, start, end, seed))
    generate_events(cfg, fault_rate=fault_rate, workers=workers, report=report, progress=sys.stderr.isatty())


@cli.command()
@click.option("--start", type=_DATE, default=None, help="First date partition to validate (default: all).")
@click.option("--end", type=_DATE, default=None, help="Last date partition to validate (default: all).")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Events after this UTC time are 'in the future' (default: now).")
@click.pass_obj
def validate(g: Globals, start, end, as_of) -> None:
    """Validate raw data with Great Expectations; quarantine bad rows; stop on failure (exit 4)."""
    from feedstore.shell.runner import validate_events

    cfg = g.load()
    _check_range(start, end)
    validate_events(cfg, start=_as_date(start), end=_as_date(end), as_of=_as_utc(as_of))


def _as_date(d):
    return d.date() if isinstance(d, datetime) else d


def _as_utc(ts):
    return ts.replace(tzinfo=UTC) if ts is not None and ts.tzinfo is None else ts


def _check_range(start, end) -> None:
    if start and end and end < start:
        raise click.UsageError(f"--end ({end:%Y-%m-%d}) is before --start ({start:%Y-%m-%d})")


#: Entity ids are int64 (the Arrow contracts): anything outside is a usage error, not an overflow deep in Feast.
_ID = click.IntRange(-(2**63), 2**63 - 1)

_ONLINE = click.option("--online-store", type=click.Choice(["sqlite", "redis", "redis-postgres"]), default=None,
                       help="Online store (default: serving.online_store in the config, sqlite).")
_TS = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"])


@cli.command()
@click.option("--start", type=_DATE, default=None, help="First snapshot day (default: first day of data).")
@click.option("--end", type=_DATE, default=None, help="Last snapshot day (default: last day of data).")
@click.pass_obj
def stats(g: Globals, start, end) -> None:
    """Compute timestamped user / item / user x item statistics into <data-dir>/offline/."""
    from feedstore.shell.runner import compute_stats

    cfg = g.load()
    _check_range(start, end)
    compute_stats(cfg, start=_as_date(start), end=_as_date(end))


@cli.command()
@_ONLINE
@click.pass_obj
def apply(g: Globals, online_store) -> None:
    """Register the Feast definitions in feature_repo/ (runs `feast apply`)."""
    from feedstore.shell.runner import apply_definitions

    apply_definitions(g.load(), online_store)


@cli.command()
@_ONLINE
@click.option("--end", "end", type=_TS, default=None,
              help="Materialize up to this UTC time (default: the newest offline snapshot).")
@click.option("--force", is_flag=True, help="Materialize even if the online store already reflects a later time.")
@click.pass_obj
def materialize(g: Globals, online_store, end, force) -> None:
    """Load the latest features of every entity into the online store (never rolls it back unless --force)."""
    from feedstore.shell.runner import materialize_online

    materialize_online(g.load(), online_store, _as_utc(end), force=force)


@cli.command()
@click.option("--user", "user_id", type=_ID, required=True, help="User to rank for.")
@click.option("--items", "items", required=True, help="Comma-separated candidate item ids.")
@click.option("--device", type=click.Choice(["mobile", "desktop", "tablet"]), default="mobile", show_default=True)
@click.option("--at", "at", type=_TS, default=None, help="Request time, UTC (default: now).")
@_ONLINE
@click.pass_obj
def lookup(g: Globals, user_id, items, device, at, online_store) -> None:
    """Online features of feed_ranking_v1 for a user and candidate items, as JSON on stdout."""
    import json

    from feedstore.shell.runner import lookup as do_lookup

    try:
        item_ids = [_ID.convert(x.strip(), None, None) for x in items.split(",") if x.strip()]
    except click.BadParameter:
        raise click.BadParameter(f"expected comma-separated 64-bit integer ids, got {items!r}",
                                 param_hint="--items") from None
    if not item_ids:
        raise click.BadParameter(f"no item ids in {items!r}", param_hint="--items")
    cfg = g.load()
    result = do_lookup(cfg, user_id, item_ids, device, _as_utc(at), online_store)
    click.echo(json.dumps(result, indent=2))


@cli.command("check-skew")
@click.option("--sample", type=click.IntRange(min=1), default=None, help="Entity rows to compare.")
@_ONLINE
@click.pass_obj
def check_skew(g: Globals, sample, online_store) -> None:
    """Compare online values with get_historical_features at the materialization time (exit 6 on mismatch)."""
    from feedstore.shell.runner import check_skew as run

    run(g.load(), online_store, sample)


@cli.command("training-set")
@click.option("--version", default=None, help="Output folder name under training/ (default: input fingerprint).")
@click.option("--start", type=_DATE, default=None, help="First event day to include.")
@click.option("--end", type=_DATE, default=None, help="Last event day to include.")
@_ONLINE
@click.pass_obj
def training_set(g: Globals, version, start, end, online_store) -> None:
    """Build train / val / test through get_historical_features(feed_ranking_v1), with manifest and report."""
    from feedstore.shell.runner import build_training_set

    _check_range(start, end)
    build_training_set(g.load(), version=version, start=_as_date(start), end=_as_date(end),
                       online_store=online_store)


@cli.command()
@click.option("--version", default=None, help="Training set under training/ (default: the newest).")
@click.pass_obj
def evaluate(g: Globals, version) -> None:
    """Baseline classifier: AUC and log loss on val and test, written to the manifest (a leakage alarm)."""
    from feedstore.shell.runner import evaluate_training_set

    evaluate_training_set(g.load(), version)


@cli.command()
@_generation_options
@click.pass_obj
def run(g: Globals, users, items, interactions, start, end, seed) -> None:
    """Run every stage: generate, validate, stats, apply, materialize, a sample lookup, training set, evaluate."""
    import json

    from feedstore.shell.runner import run_pipeline

    cfg = g.load(_generation_overrides(users, items, interactions, start, end, seed))
    out = run_pipeline(cfg, progress=sys.stderr.isatty())
    answer, built, metrics = out["lookup"], out["training_set"], out["metrics"]
    log.info("sample lookup (user %s, %d candidates, at %s), first candidate:\n%s", answer["user_id"],
             len(answer["candidates"]), out["materialized_at"].isoformat(),
             json.dumps(answer["candidates"][0], indent=2))
    log.info("pipeline run complete: training set %s (%s); baseline AUC val %.4f, test %.4f", built.path,
             ", ".join(f"{k} {v:,}" for k, v in built.rows.items()), metrics["val"]["auc"], metrics["test"]["auc"])


def main(argv: list[str] | None = None) -> None:
    """Console entry point: expected failures become one line on stderr and a non-zero exit, no traceback."""
    # Interpreter shutdown would garbage-collect every object of the big libraries a stage imported (GX alone:
    # ~0.8 s). Freezing them at exit skips that final pass; atexit handlers and flushing still run.
    atexit.register(gc.freeze)
    try:
        cli.main(args=argv, prog_name="feedstore", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("feedstore: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except FeedstoreError as e:
        click.echo(redact(f"feedstore: error: {e}"), err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("feedstore: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
