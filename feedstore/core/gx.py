"""Great Expectations runtime shared by every stage's validation gate.

Each expectation carries ``meta = {"rule": <name>, "level": "row" | "table"}``:

* **row** rules have severity *warning*: their failing rows (GX's ``unexpected_index_list``) are quarantined
  with the rule name as the reason; the stage fails only if too many rows are quarantined.
* **table** rules have severity *critical*: any failure stops the pipeline.

Results are matched to rules by the rule name, never by position. GX runs in an ephemeral context with
analytics, progress bars and INFO logging off; every run is recorded for the data dir's Data Docs
(`feedstore.core.docs`: one site accumulating every stage's runs, readable offline).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feedstore.core import gx_fast
from feedstore.core.docs import DataDocs, rule_status, run_record

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)

ROW, TABLE = "row", "table"


def expectation(cls_name: str, rule: str, level: str = ROW, **kwargs: Any):
    """Build a GX expectation tagged with its rule name and level (row = warning, table = critical)."""
    gx_fast.load()
    import great_expectations.expectations as gxe

    if level not in (ROW, TABLE):
        raise ValueError(f"level must be {ROW!r} or {TABLE!r}")
    if "row_condition" in kwargs:
        kwargs.setdefault("condition_parser", "pandas")
    cls = getattr(gxe, cls_name)
    return cls(meta={"rule": rule, "level": level}, severity="warning" if level == ROW else "critical", **kwargs)


def suite(name: str, expectations: list) -> Any:
    """An ExpectationSuite from tagged expectations; rule names must be unique within a suite."""
    gx_fast.load()
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

    def __init__(self, docs_dir: Path | None = None, example_rows: int = 5, history: int = 20):
        gx_fast.apply()  # imports GX first (gx_fast.load)
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
        self.docs = DataDocs(Path(docs_dir).resolve(), history) if docs_dir is not None else None
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
        # no unexpected_index_query: it is never read (the index list is) and GX builds it by filtering the whole
        # frame (two boolean-mask copies of every column) once per row rule
        with gx_fast.copy_on_write():
            batch = self._batch(asset_name, df)
            result = batch.validate(gx_suite, result_format={"result_format": "COMPLETE",
                                                             "partial_unexpected_count": 5,
                                                             "return_unexpected_index_query": False})
        outcomes = [self._outcome(r, df, example_columns) for r in result.results]
        if self.docs is not None:
            notes = {e.meta["rule"]: _notes(e) for e in expectation_suite.expectations}
            self.docs.add(run_record(expectation_suite.name, run_name or expectation_suite.name, outcomes, notes,
                                     len(df)))
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

    def build_docs(self) -> Path | None:
        """Re-render the data dir's Data Docs with this run's results added (see feedstore.core.docs)."""
        if self.docs is None:
            return None
        return self.docs.build()


def _notes(e: Any) -> str | None:
    notes = getattr(e, "notes", None)
    if isinstance(notes, list):
        notes = " ".join(notes)
    return notes or None


def summary_table(table: str, outcomes: list[RuleOutcome]) -> str:
    """The rules that need a look (FAIL, ERROR, quarantine), as a table, then one line counting the passing ones."""
    flagged = [o for o in sorted(outcomes, key=lambda o: (o.level != TABLE, o.rule)) if rule_status(o) != "ok"]
    passing = len(outcomes) - len(flagged)
    if not flagged:
        return f"  all {passing} rules passed"
    rows = [("table", "rule", "level", "status", "unexpected", "observed")]
    for o in flagged:
        observed = "" if o.observed_value is None or isinstance(o.observed_value, (list, dict)) else str(
            o.observed_value)
        rows.append((table, o.rule, o.level, rule_status(o), str(o.unexpected_count) if o.level == ROW else "",
                     (o.error or observed)[:40]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([*lines, f"  ... and {passing} passing rules"])
