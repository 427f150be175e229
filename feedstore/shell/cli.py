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

from feedstore.core import gx_fast
from feedstore.core.catalog import Catalog
from feedstore.core.config import (
    ENV_CONFIG,
    ENV_DATA_DIR,
    ENV_ENGINE,
    ENV_PRESET,
    ONLINE_STORES,
    PipelineConfig,
    load_config,
)
from feedstore.core.errors import FeedstoreError
from feedstore.core.logs import configure_logging, redact

log = logging.getLogger("feedstore")

_DATE = click.DateTime(formats=["%Y-%m-%d"])
#: Entity ids are int64 (the Arrow contracts): anything outside is a usage error, not an overflow deep in Feast.
_ID = click.IntRange(-(2**63), 2**63 - 1)

_ONLINE = click.option("--online-store", type=click.Choice(list(ONLINE_STORES)), default=None,
                       help="Online store (default: serving.online_store in the config, sqlite).")
_TS = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"])


@dataclass
class Globals:
    config: Path | None
    data_dir: Path | None
    preset: str | None
    log_level: str | None
    engine: str | None = None

    def load(self, overrides: dict[str, Any] | None = None) -> PipelineConfig:
        merged = {"data_dir": self.data_dir, "log_level": self.log_level, "engine": self.engine, **(overrides or {})}
        cfg = load_config(self.config, preset=self.preset, overrides=merged)
        configure_logging(cfg.log_level)
        if cfg.engine == "duckdb":  # one engine per process: GX never runs on Spark here, so it loads no pyspark
            gx_fast.without_spark()
        Catalog(cfg.data_dir)  # a data dir that is a file fails here, in one line
        return cfg


#: One example per command, shown by `feedstore --help` (commands are listed in pipeline order, not alphabetically).
EXAMPLES = {
    "run": "feedstore run --users 2000 --items 5000 --interactions 100000",
    "generate": "feedstore generate --inject-faults 0.01",
    "validate": "feedstore validate --start 2024-11-15 --end 2024-11-15",
    "stats": "feedstore stats --start 2024-11-15 --end 2024-11-15",
    "apply": "feedstore apply --online-store redis",
    "materialize": "feedstore materialize --end 2025-01-01",
    "lookup": "feedstore lookup --user 42 --items 1001,1002 --at 2025-01-01T09:00:00",
    "serve": "feedstore serve --online-store redis --port 6567 --workers 2",
    "check-skew": "feedstore check-skew --sample 200",
    "training-set": "feedstore training-set --version v1",
    "evaluate": "feedstore evaluate --version v1",
    "ui": "feedstore ui --port 8888",
}


class _PipelineGroup(click.Group):
    """Lists commands in the order they are defined (pipeline order), each with its help line and an example."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [n for n in self.list_commands(ctx) if not getattr(self.get_command(ctx, n), "hidden", True)]
        width = max(map(len, names)) + 2
        with formatter.section("Commands, in pipeline order (feedstore COMMAND --help for its options)"):
            for name in names:  # whole lines, never cut: the first line of the help, then the example
                first = (self.get_command(ctx, name).help or "").strip().splitlines()[0]
                formatter.write(f"{'':{formatter.current_indent}}{name:<{width}}{first}\n")
                if name in EXAMPLES:
                    formatter.write(f"{'':{formatter.current_indent + width}}$ {EXAMPLES[name]}\n")


_CONFIG_HELP = f"Pipeline config YAML [env {ENV_CONFIG}; default config/pipeline.yaml]."
_DATA_DIR_HELP = f"Root of all stage inputs and outputs [env {ENV_DATA_DIR}; default ./data]."


def _set_global(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:  # given after the subcommand: overrides the same option before it
        setattr(ctx.find_object(Globals), param.name, value)


def _global_options(fn):
    """--config and --data-dir, also accepted after the subcommand (`feedstore validate --data-dir /tmp/d`)."""
    fn = click.option("--data-dir", "data_dir", type=click.Path(path_type=Path), default=None, expose_value=False,
                      callback=_set_global, help=_DATA_DIR_HELP)(fn)
    return click.option("--config", "config", type=click.Path(path_type=Path), default=None, expose_value=False,
                        callback=_set_global, help=_CONFIG_HELP)(fn)


@click.group(cls=_PipelineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config", type=click.Path(path_type=Path), default=None, help=_CONFIG_HELP)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=_DATA_DIR_HELP)
@click.option("--preset", default=None, help=f"Config overlay, e.g. 'realistic' [env {ENV_PRESET}].")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default=None, help="Logging level (default INFO).")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default=None,
              help=f"Compute engine of validate and stats [env {ENV_ENGINE}; default duckdb; spark needs the "
              "`spark` extra and Java].")
@click.version_option(package_name="feedstore")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, data_dir: Path | None, preset: str | None,
        log_level: str | None, engine: str | None) -> None:
    """feedstore: a point-in-time-correct feature pipeline for feed ranking.

    Each subcommand is one pipeline stage; `run` runs them all in order. --config and --data-dir may also
    follow the subcommand. Exit codes: 0 ok, 2 bad configuration or usage, 3 unreadable input, 4 a validation
    gate failed, 5 the online store or registry cannot serve, 6 training/serving skew.
    """
    ctx.obj = Globals(config, data_dir, preset, log_level, engine)


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
@_ONLINE
@click.option("--inject-faults", "fault_rate", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="Corrupt this fraction of generated rows (the validation gate quarantines them).")
@click.option("--skip-generate", is_flag=True,
              help="Start from the raw data already in the data dir (raw/) instead of generating it.")
@_global_options
@click.pass_obj
def run(g: Globals, users, items, interactions, start, end, seed, online_store, fault_rate, skip_generate) -> None:
    """Run every stage: generate, validate, stats, apply, materialize, a sample lookup, training set, evaluate."""
    from feedstore.shell.runner import run_pipeline

    overrides = _generation_overrides(users, items, interactions, start, end, seed)
    if online_store:
        overrides["serving.online_store"] = online_store
    cfg = g.load(overrides)
    if skip_generate:  # the raw data is taken as it is: generation options may only restate how it was made
        from feedstore.shell.runner import raw_generation

        if fault_rate:
            raise click.UsageError("--inject-faults corrupts rows as they are generated: with --skip-generate the raw "
                                   "data is taken as it is (its injected faults are counted in raw/faults.json)")
        made = raw_generation(cfg)
        asked = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("generation.") and v is not None}
        if any(getattr(made, k) != v for k, v in asked.items()):
            raise click.UsageError(
                f"--skip-generate takes the raw data as it is: it covers {made.start}..{made.end} "
                f"({made.interactions:,} interactions, {made.users:,} users, {made.items:,} items, seed {made.seed}), "
                f"but {' '.join(f'--{k} {v}' for k, v in asked.items())} says otherwise; drop those options or "
                "drop --skip-generate")
    out = run_pipeline(cfg, progress=sys.stderr.isatty(), fault_rate=fault_rate, skip_generate=skip_generate)
    answer, built, metrics = out["lookup"], out["training_set"], out["metrics"]
    log.info("sample lookup: user %s on %s at %s, %d candidates (full JSON: `feedstore lookup`)\n%s",
             answer["user_id"], answer["device"], out["materialized_at"].isoformat(), len(answer["candidates"]),
             lookup_table(answer))
    log.info("pipeline run complete: training set %s (%s); baseline AUC val %.4f, test %.4f", built.path,
             ", ".join(f"{k} {v:,}" for k, v in built.rows.items()), metrics["val"]["auc"], metrics["test"]["auc"])
    log.info("look at: Data Docs %s; feature report %s; Feast UI: `feedstore ui`",
             Catalog(cfg.data_dir).data_docs_index,
             built.path / "report" / "index.html")


#: The columns of the short lookup table: (header, feature).
_LOOKUP_COLUMNS = (("user CTR 7d", "user_ctr_smoothed_7d"), ("item CTR 7d", "item_ctr_smoothed_7d"),
                   ("item impr 7d", "item_impressions_7d"), ("item age d", "item_age_days"),
                   ("seen before", "user_item_impressions"), ("affinity", "user_category_affinity_for_item"))


def lookup_table(answer: dict) -> str:
    """A few telling features per candidate, one row each (the full answer is `feedstore lookup`'s JSON)."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.0f}" if v.is_integer() else f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    header = ["item_id", *[h for h, _ in _LOOKUP_COLUMNS], "missing"]
    rows = [header]
    for c in answer["candidates"]:
        missing = ",".join(k for k, v in c["missing"].items() if v) or "-"
        rows.append([str(c["item_id"]), *[cell(c["features"].get(f)) for _, f in _LOOKUP_COLUMNS], missing])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  " + "  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


@cli.command()
@_generation_options
@click.option("--inject-faults", "fault_rate", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="Corrupt this fraction of rows (exact counts per kind in raw/faults.json).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: all cores for large runs). Does not change the output.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Measure the data patterns into reports/realism.json.")
@_global_options
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
@_global_options
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



@cli.command()
@click.option("--start", type=_DATE, default=None,
              help="First snapshot day of an incremental update (default: a full recompute from the first day).")
@click.option("--end", type=_DATE, default=None, help="Last snapshot day (default: last day of data).")
@_global_options
@click.pass_obj
def stats(g: Globals, start, end) -> None:
    """Compute timestamped user / item / user x item statistics into <data-dir>/offline/.

    Without --start, a full recompute; with it, an incremental update of [start, end] from those days' events, the
    stored tiles and the lifetime state (late data also rewrites the later rows it changes)."""
    from feedstore.shell.runner import compute_stats

    cfg = g.load()
    _check_range(start, end)
    compute_stats(cfg, start=_as_date(start), end=_as_date(end))


@cli.command()
@_ONLINE
@_global_options
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
@_global_options
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
@_global_options
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


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="FEEDSTORE_SERVE_HOST",
              help="Interface to listen on (0.0.0.0 in a container) [env FEEDSTORE_SERVE_HOST].")
@click.option("--port", type=click.IntRange(1, 65535), default=6567, show_default=True, envvar="FEEDSTORE_SERVE_PORT",
              help="TCP port [env FEEDSTORE_SERVE_PORT].")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              envvar="FEEDSTORE_SERVE_WORKERS", help="uvicorn worker processes [env FEEDSTORE_SERVE_WORKERS].")
@click.option("--max-candidates", type=click.IntRange(min=1), default=1000, show_default=True,
              envvar="FEEDSTORE_MAX_CANDIDATES",
              help="Most entity rows / candidates one request may ask for (more: 413) [env FEEDSTORE_MAX_CANDIDATES].")
@_ONLINE
@_global_options
@click.pass_obj
def serve(g: Globals, host, port, workers, max_candidates, online_store) -> None:
    """HTTP feature server: Feast's /get-online-features, /rank (one user + N candidates), /health, /ready."""
    from feedstore.shell.runner import serve as run

    run(g.load(), online_store, host=host, port=port, workers=workers, max_candidates=max_candidates)


@cli.command("check-skew")
@click.option("--sample", type=click.IntRange(min=1), default=None, help="Entity rows to compare.")
@_ONLINE
@_global_options
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
@_global_options
@click.pass_obj
def training_set(g: Globals, version, start, end, online_store) -> None:
    """Build train / val / test through get_historical_features(feed_ranking_v1), with manifest and report."""
    from feedstore.shell.runner import build_training_set

    _check_range(start, end)
    build_training_set(g.load(), version=version, start=_as_date(start), end=_as_date(end),
                       online_store=online_store)


@cli.command()
@click.option("--version", default=None, help="Training set under training/ (default: the newest).")
@_global_options
@click.pass_obj
def evaluate(g: Globals, version) -> None:
    """Baseline classifier: AUC and log loss on val and test, written to the manifest (a leakage alarm)."""
    from feedstore.shell.runner import evaluate_training_set

    evaluate_training_set(g.load(), version)


@cli.command()
@click.option("--online-store", type=click.Choice(list(ONLINE_STORES)), default=None,
              help="Registry to show (default: the configured store if applied, else the one that was applied).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8888, show_default=True, help="Port of the UI.")
@_global_options
@click.pass_obj
def ui(g: Globals, online_store, host, port) -> None:
    """Feast's web UI on the registry you applied (runs `feast ui` with the matching feature_store*.yaml)."""
    from feedstore.shell.runner import feast_ui

    feast_ui(g.load(), online_store, host=host, port=port)



def main(argv: list[str] | None = None) -> None:
    """Console entry point: expected failures become one line on stderr and a non-zero exit, no traceback."""
    # Interpreter shutdown would garbage-collect every object of the big libraries a stage imported (GX alone:
    # see bench/RESULTS.md). Freezing them at exit skips that final pass; atexit handlers and flushing still run.
    atexit.register(gc.freeze)
    try:
        cli.main(args=argv, prog_name="feedstore", standalone_mode=False)
        sys.exit(0)
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
    finally:  # the DuckDB engine's GX without Spark is this command's setting, not an in-process caller's
        gx_fast.without_spark(False)


_GLOBAL_OPTIONS = ("--config", "--data-dir", "--preset", "--log-level")


def training_set_main() -> None:
    """`feedstore-training-set [options]`: the training-set builder script, the same as `feedstore training-set`
    (global options such as --data-dir may come anywhere)."""
    argv, rest = sys.argv[1:], []
    head: list[str] = []
    while argv:
        arg = argv.pop(0)
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_OPTIONS:
            head.append(arg)
            if "=" not in arg and argv:
                head.append(argv.pop(0))
        else:
            rest.append(arg)
    main([*head, "training-set", *rest])


if __name__ == "__main__":
    main()
