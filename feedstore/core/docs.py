"""Data Docs: one site per data dir (`reports/data_docs/`) that accumulates every suite and validation run of every
stage, rendered by feedstore from the GX validation results (`GXRunner` records them) with jinja2 templates
shipped in the package (`feedstore/core/templates/`).

Why not GX's own site builder: each stage validates in its own ephemeral GX context, and GX's index builder deletes
the pages it does not know, so only the last stage's suites survived; its pages draw their tables with JavaScript
and their icons and styles from CDNs (blank offline); and they name rules by their GX expectation on our internal
check columns (`_click_binary`) instead of the rule names the CLI prints. Here every run is one JSON record
(`runs/<suite>/<run id>.json`, the newest `validation.docs_history` per suite are kept) and the HTML is rebuilt
from all records: no script, stylesheet or font from anywhere but the page itself.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedstore.core.io import atomic_path, write_json

log = logging.getLogger(__name__)

#: Stages in pipeline order, and how their suites are named.
STAGES = (("validate", "raw_"), ("stats", "offline_"), ("training-set", "training_set"))
PASSED, QUARANTINE, FAILED = "passed", "quarantined rows", "FAILED"
#: What GX's own site builder left behind in older data dirs (replaced by this site).
_GX_LEFTOVERS = ("validations", "expectations", "static")


def stage_of(suite: str) -> str:
    for stage, prefix in STAGES:
        if suite.startswith(prefix):
            return stage
    return "other"


def _fmt(value: Any, limit: int = 60) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _col(name: str) -> str:
    return f"<code>{name}</code>"


def describe(expectation_type: str, kwargs: dict[str, Any], notes: str | None) -> str:
    """What a rule checks, in words. Rules on our computed check columns (leading underscore) are described by
    their `notes`, so the page never shows a made-up column; rules on real columns by their expectation."""
    if "_" in expectation_type:  # GX reports the snake_case name: expect_column_values_to_be_between
        expectation_type = "".join(w.capitalize() for w in expectation_type.split("_"))
    column = kwargs.get("column")
    helper = isinstance(column, str) and column.startswith("_")
    if notes and (helper or expectation_type not in ("ExpectColumnValuesToBeBetween", "ExpectColumnValuesToBeInSet")):
        return notes
    if expectation_type == "ExpectTableColumnsToMatchSet":
        real = [c for c in kwargs.get("column_set") or [] if not str(c).startswith("_")]
        return f"the table has exactly the contract's {len(real)} columns: {', '.join(real)}"
    if expectation_type == "ExpectTableRowCountToBeBetween":
        return f"at least {kwargs.get('min_value')} row(s)"
    if helper:  # a check column without notes: say what it is, not its name
        return "computed check (see the rule name)"
    if expectation_type == "ExpectColumnValuesToNotBeNull":
        text = f"{column} is never null"
    elif expectation_type == "ExpectColumnValuesToBeBetween":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        lo_op = ">" if kwargs.get("strict_min") else ">="
        hi_op = "<" if kwargs.get("strict_max") else "<="
        parts = ([f"{lo_op} {_fmt(lo)}"] if lo is not None else []) + ([f"{hi_op} {_fmt(hi)}"] if hi is not None
                                                                          else [])
        text = f"{column} {' and '.join(parts)}"
    elif expectation_type == "ExpectColumnValuesToBeInSet":
        text = f"{column} in {{{', '.join(_fmt(v) for v in kwargs.get('value_set') or [])}}}"
    elif expectation_type == "ExpectColumnValuesToBeUnique":
        text = f"{column} is unique"
    elif expectation_type == "ExpectColumnPairValuesToBeEqual":
        text = f"{kwargs.get('column_A')} equals {kwargs.get('column_B')}"
    elif expectation_type == "ExpectColumnPairValuesAToBeGreaterThanB":
        op = ">=" if kwargs.get("or_equal") else ">"
        text = f"{kwargs.get('column_A')} {op} {kwargs.get('column_B')}"
    else:
        text = expectation_type
    return f"{text} ({notes})" if notes else text


def _public(value: Any) -> Any:
    """An observed value without our check columns (a table's column list names them)."""
    if isinstance(value, list):
        return [v for v in value if not (isinstance(v, str) and v.startswith("_"))]
    return value


def rule_status(outcome: Any) -> str:
    """The CLI's status of one rule: ok / quarantine / FAIL / ERROR."""
    if outcome.error:
        return "ERROR"
    if outcome.level == "table":
        return "ok" if outcome.success else "FAIL"
    return "ok" if outcome.unexpected_count == 0 else "quarantine"


def run_record(suite: str, run_name: str, outcomes: list, notes: dict[str, str | None], rows: int,
               run_time: datetime | None = None) -> dict[str, Any]:
    """One validation run as a JSON-ready record (what the site is rendered from)."""
    run_time = run_time or datetime.now(UTC)
    rules = []
    for o in outcomes:
        status = rule_status(o)
        rules.append({
            "rule": o.rule, "level": o.level, "severity": o.severity, "status": status,
            "checks": describe(o.expectation_type, o.kwargs, notes.get(o.rule)),
            "expectation_type": o.expectation_type,
            "unexpected_count": o.unexpected_count, "unexpected_percent": o.unexpected_percent,
            "observed": _fmt(_public(o.observed_value), 120), "error": o.error,
            "examples": [{k: v for k, v in e.items() if not str(k).startswith("_")} for e in o.examples[:3]],
        })
    statuses = {r["status"] for r in rules}
    status = FAILED if statuses & {"FAIL", "ERROR"} else QUARANTINE if "quarantine" in statuses else PASSED
    return {
        "id": f"{run_time:%Y%m%dT%H%M%S%fZ}", "suite": suite, "stage": stage_of(suite), "run_name": run_name,
        "run_time": f"{run_time:%Y-%m-%d %H:%M:%S}", "rows": rows, "status": status,
        "counts": {s: sum(r["status"] == s for r in rules) for s in ("ok", "quarantine", "FAIL", "ERROR")},
        "rules": rules,
    }


class DataDocs:
    """The site under `root`: `add(record)` stores a run, `build()` prunes the history and re-renders every page."""

    def __init__(self, root: Path, history: int = 20):
        self.root = Path(root)
        self.history = history

    def add(self, record: dict[str, Any]) -> None:
        write_json(record, self.root / "runs" / _safe(record["suite"]) / f"{record['id']}.json")

    def _records(self) -> list[dict[str, Any]]:
        out = []
        for suite_dir in sorted((self.root / "runs").glob("*")):
            files = sorted(suite_dir.glob("*.json"))
            for old in files[: max(0, len(files) - self.history)]:  # bounded history: newest N per suite
                old.unlink(missing_ok=True)
                old.with_suffix(".html").unlink(missing_ok=True)
            for f in files[-self.history:]:
                try:
                    out.append(json.loads(f.read_text()))
                except (OSError, ValueError):  # a record being replaced by another process: skip this build
                    continue
        return out

    def build(self) -> Path:
        """Render index, one page per suite and one per run; return the index path."""
        import jinja2

        env = jinja2.Environment(loader=jinja2.PackageLoader("feedstore.core", "templates"),
                                 autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                                 lstrip_blocks=True)
        for leftover in _GX_LEFTOVERS:
            shutil.rmtree(self.root / leftover, ignore_errors=True)
        records = sorted(self._records(), key=lambda r: r["id"], reverse=True)
        order = {stage: i for i, (stage, _) in enumerate(STAGES)}
        suites: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            r["page"] = f"runs/{_safe(r['suite'])}/{r['id']}.html"
            suites.setdefault(r["suite"], []).append(r)
        latest = sorted((runs[0] for runs in suites.values()),
                        key=lambda r: (order.get(r["stage"], 99), r["suite"]))
        generated = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
        common = {"generated": generated, "stages": [s for s, _ in STAGES], "history": self.history}
        for r in records:
            _write(self.root / r["page"], env.get_template("docs_run.html.j2").render(
                run=r, root="../../", suite_page=f"../../suites/{_safe(r['suite'])}.html", **common))
        for name, runs in suites.items():
            _write(self.root / "suites" / f"{_safe(name)}.html", env.get_template("docs_suite.html.j2").render(
                suite=name, runs=runs, rules=runs[0]["rules"], root="../", **common))
        index = self.root / "index.html"
        _write(index, env.get_template("docs_index.html.j2").render(
            latest=latest, runs=records, safe=_safe, root="", data_dir=str(self.root.parent.parent), **common))
        return index


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
