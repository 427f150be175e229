"""Great Expectations runtime shared by every stage's validation gate.

Each expectation carries ``meta = {"rule": <name>, "level": "row" | "table"}``:

* **row** rules have severity *warning*: their failing rows (GX's ``unexpected_index_list``) are quarantined
  with the rule name as the reason; the stage fails only if too many rows are quarantined.
* **table** rules have severity *critical*: any failure stops the pipeline.

Results are matched to rules by the rule name, never by position. GX runs in an ephemeral context with
analytics, progress bars and INFO logging off; Data Docs are built from trimmed results (no per-row lists)
and made readable offline.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)

ROW, TABLE = "row", "table"


def expectation(cls_name: str, rule: str, level: str = ROW, **kwargs: Any):
    """Build a GX expectation tagged with its rule name and level (row = warning, table = critical)."""
    import great_expectations.expectations as gxe

    if level not in (ROW, TABLE):
        raise ValueError(f"level must be {ROW!r} or {TABLE!r}")
    if "row_condition" in kwargs:
        kwargs.setdefault("condition_parser", "pandas")
    cls = getattr(gxe, cls_name)
    return cls(meta={"rule": rule, "level": level}, severity="warning" if level == ROW else "critical", **kwargs)


def suite(name: str, expectations: list) -> Any:
    """An ExpectationSuite from tagged expectations; rule names must be unique within a suite."""
    import great_expectations as gx

    names = [e.meta["rule"] for e in expectations]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"suite {name}: duplicate rule names {sorted(dupes)}")
    s = gx.ExpectationSuite(name=name)
    for e in expectations:
        s.add_expectation(e)
    return s


@dataclass
class RuleOutcome:
    """What one expectation found."""

    rule: str
    level: str
    severity: str
    expectation_type: str
    kwargs: dict[str, Any]
    success: bool
    observed_value: Any = None
    element_count: int | None = None
    unexpected_count: int = 0
    unexpected_percent: float | None = None
    error: str | None = None
    unexpected_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def blocking(self) -> bool:
        """A failed critical (table-level) expectation, or one that could not be evaluated at all."""
        return (not self.success and self.level == TABLE) or self.error is not None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def records(df: pd.DataFrame, rows: np.ndarray, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of `df` (by position) as JSON-ready dicts."""
    sub = df.iloc[rows] if columns is None else df.iloc[rows][columns]
    return [_jsonable(r) for r in sub.to_dict(orient="records")]


class GXRunner:
    """One ephemeral GX context per stage run; validates DataFrames and builds Data Docs."""

    def __init__(self, docs_dir: Path | None = None, example_rows: int = 5):
        import great_expectations as gx

        # GX sets INFO on some of its own loggers at import: quiet every one of them
        for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        self.context = gx.get_context(mode="ephemeral")
        try:
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        except ImportError:  # pragma: no cover - older GX
            pass
        self.docs_dir = docs_dir = Path(docs_dir).resolve() if docs_dir is not None else None
        if docs_dir is not None:
            self.context.add_data_docs_site(
                site_name="local",
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        self.datasource = self.context.data_sources.add_pandas("feedstore")
        self.example_rows = example_rows
        self._assets: dict[str, Any] = {}
        self._suites: dict[str, Any] = {}

    def _batch(self, asset_name: str, df: pd.DataFrame):
        if asset_name not in self._assets:
            asset = self.datasource.add_dataframe_asset(asset_name)
            self._assets[asset_name] = asset.add_batch_definition_whole_dataframe("whole")
        return self._assets[asset_name].get_batch(batch_parameters={"dataframe": df})

    def validate(self, df: pd.DataFrame, expectation_suite: Any, asset_name: str, *,
                 example_columns: list[str] | None = None, run_name: str | None = None) -> list[RuleOutcome]:
        """Validate `df` (positional RangeIndex required) and return one outcome per rule."""
        if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
            df = df.reset_index(drop=True)
        if expectation_suite.name not in self._suites:
            self._suites[expectation_suite.name] = self.context.suites.add(expectation_suite)
        gx_suite = self._suites[expectation_suite.name]
        batch = self._batch(asset_name, df)
        result = batch.validate(gx_suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": 5})
        outcomes = [self._outcome(r, df, example_columns) for r in result.results]
        if self.docs_dir is not None:
            self._store_for_docs(result, gx_suite, batch, run_name)
        return outcomes

    def _outcome(self, r: Any, df: pd.DataFrame, example_columns: list[str] | None) -> RuleOutcome:
        cfg = r.expectation_config
        meta = cfg.meta or {}
        res = r.result or {}
        error = None
        info = r.exception_info or {}
        if info.get("raised_exception"):
            error = str(info.get("exception_message") or "expectation raised an exception").splitlines()[0]
        else:  # some GX versions key exception_info by metric
            for v in info.values() if isinstance(info, dict) else []:
                if isinstance(v, dict) and v.get("raised_exception"):
                    error = str(v.get("exception_message") or "metric raised an exception").splitlines()[0]
        rows = np.asarray(res.get("unexpected_index_list") or [], dtype=np.int64)
        severity = getattr(cfg.severity, "value", cfg.severity)
        out = RuleOutcome(
            rule=meta.get("rule", cfg.type),
            level=meta.get("level", TABLE),
            severity=str(severity),
            expectation_type=cfg.type,
            kwargs={k: _jsonable(v) for k, v in cfg.kwargs.items() if k not in ("batch_id",)},
            success=bool(r.success),
            observed_value=_jsonable(res.get("observed_value")),
            element_count=res.get("element_count"),
            unexpected_count=int(res.get("unexpected_count") or 0),
            unexpected_percent=_jsonable(res.get("unexpected_percent")),
            error=error,
            unexpected_rows=rows,
        )
        if len(rows):
            out.examples = records(df, rows[: self.example_rows], example_columns)
        return out

    def _store_for_docs(self, result: Any, gx_suite: Any, batch: Any, run_name: str | None) -> None:
        """Store a copy without per-row lists in the results store, so Data Docs stay small."""
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        for r in result.results:
            for key in ("unexpected_list", "unexpected_index_list", "unexpected_index_query",
                        "partial_unexpected_index_list", "partial_unexpected_counts"):
                if r.result and key in r.result:
                    r.result.pop(key)
        run_id = RunIdentifier(run_name=run_name or gx_suite.name, run_time=datetime.now(UTC))
        result.meta["run_id"] = run_id
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=gx_suite.name),
            run_id=run_id,
            batch_identifier=batch.id,
        )
        self.context.validation_results_store.set(key, result)

    def build_docs(self) -> Path | None:
        """Build Data Docs and make them readable offline (no CDN scripts or stylesheets)."""
        if self.docs_dir is None:
            return None
        self.context.build_data_docs(site_names=["local"])
        make_offline(self.docs_dir)
        return self.docs_dir / "index.html"


_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", re.I)
_REMOTE_LINK = re.compile(r"<link[^>]*\bhref=\"https?://[^\"]*\"[^>]*/?>", re.I)
_REMOTE_URL = re.compile(r"url\(['\"]?https?://[^)]*\)", re.I)
_OFFLINE_CSS = """<style>/* feedstore: offline fallback for the CDN stylesheets GX links to */
body{font-family:system-ui,sans-serif;margin:1rem 2rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}
.collapse:not(.show){display:none}.badge{padding:0 .3rem;border-radius:.2rem;background:#eee}
.text-danger{color:#b00}.text-success{color:#070}img{max-height:2rem}</style>"""


def make_offline(root: Path) -> None:
    """Strip remote <script>/<link>/url() references from GX Data Docs and inline a minimal stylesheet."""
    for page in root.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        html = _REMOTE_SCRIPT.sub("", html)
        html = _REMOTE_LINK.sub("", html)
        html = _REMOTE_URL.sub("none", html)
        if "feedstore: offline fallback" not in html:
            html = html.replace("</head>", _OFFLINE_CSS + "</head>", 1)
        page.write_text(html, encoding="utf-8")


def summary_table(table: str, outcomes: list[RuleOutcome]) -> str:
    """A readable table: table, rule, level, status, unexpected count."""
    rows = [("table", "rule", "level", "status", "unexpected", "observed")]
    for o in sorted(outcomes, key=lambda o: (o.level != TABLE, o.rule)):
        if o.error:
            status = "ERROR"
        elif o.level == TABLE:
            status = "ok" if o.success else "FAIL"
        else:
            status = "ok" if o.unexpected_count == 0 else "quarantine"
        observed = "" if o.observed_value is None or isinstance(o.observed_value, (list, dict)) else str(
            o.observed_value)
        rows.append((table, o.rule, o.level, status, str(o.unexpected_count) if o.level == ROW else "",
                     observed[:40]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
