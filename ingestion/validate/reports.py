"""Validation reports: per table JSON (gate, counts, reasons, every expectation with examples) and the fault
reconciliation."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from feedstore.core.catalog import Catalog
from feedstore.core.gx import ROW
from feedstore.core.io import write_json
from feedstore.ingestion.validate.quarantine import TableResult


def _fault_reconciliation(data_dir: Path, by_reason: dict[str, int]) -> dict[str, Any] | None:
    path = Catalog(data_dir).faults
    if not path.exists():
        return None
    faults = json.loads(path.read_text())
    if not faults.get("total"):
        return None
    kinds = {k: {"injected": n, "quarantined": by_reason.get(k, 0), "match": n == by_reason.get(k, 0)}
             for k, n in faults["counts"].items()}
    return {"faults_file": str(path), "all_match": all(k["match"] for k in kinds.values()), "kinds": kinds}


def _write_reports(data_dir: Path, tables: dict[str, TableResult], passed: bool, failures: list[str],
                   as_of: datetime, days: list[str]) -> dict[str, Path]:
    paths = {}
    for name, res in tables.items():
        doc = {
            "table": name,
            "suite": res.suite,
            "gate": "pass" if passed else "fail",
            "failures": [f for f in failures if f.startswith(f"{name}.") or f.startswith(f"{name}:")],
            "as_of": as_of.isoformat(),
            "rows_in": res.rows_in,
            "validated": res.validated,
            "quarantined": res.quarantined,
            "reconciles": res.rows_in == res.validated + res.quarantined,
            "quarantined_fraction": round(res.quarantined_fraction, 8),
            "quarantined_by_reason": dict(sorted(res.by_reason.items())),
            "validated_path": str(Catalog(data_dir).validated_table(name)),
            "quarantine_path": str(Catalog(data_dir).quarantined_table(name)),
            "expectations": [
                {
                    "rule": o.rule, "level": o.level, "severity": o.severity, "expectation_type": o.expectation_type,
                    "kwargs": o.kwargs, "success": o.success, "observed_value": o.observed_value,
                    "element_count": o.element_count,
                    "unexpected_count": o.unexpected_count if o.level == ROW else None,
                    "unexpected_percent": o.unexpected_percent if o.level == ROW else None,
                    "error": o.error, "examples": o.examples,
                }
                for o in sorted(res.outcomes.values(), key=lambda o: (o.level != "table", o.rule))
            ],
        }
        if name == "interactions":
            doc["days"] = days
            doc.update(res.extra)
            rec = _fault_reconciliation(data_dir, res.by_reason)
            if rec:
                doc["fault_reconciliation"] = rec
        path = Catalog(data_dir).validation_reports / f"{name}.json"
        write_json(doc, path)
        paths[name] = path
    return paths
