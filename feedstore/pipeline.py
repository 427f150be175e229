"""Pipeline stages as plain functions of the config: the CLI and the Airflow DAG both call these."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import date, datetime

from feedstore.config import PipelineConfig

log = logging.getLogger(__name__)

#: Below this many events a process pool costs more than it saves (output is identical either way).
_PARALLEL_THRESHOLD = 200_000


def default_workers(interactions: int) -> int:
    """Worker processes for generation: all cores (at most 8) for large runs, 1 for small ones."""
    if interactions < _PARALLEL_THRESHOLD:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def validate_events(cfg: PipelineConfig, *, start: date | None = None, end: date | None = None,
                    as_of: datetime | None = None):
    """Stage 2: the raw-data gate. Writes validated/, quarantine/ and reports; raises ValidationFailed on failure."""
    from ingestion.validate import validate_raw

    return validate_raw(cfg, start=start, end=end, as_of=as_of)


@dataclass(frozen=True)
class GenerateResult:
    interactions: int
    faults: dict[str, int]
    realism_passed: int | None
    realism_failed: int | None


def generate_events(
    cfg: PipelineConfig,
    *,
    fault_rate: float = 0.0,
    workers: int | None = None,
    report: bool = True,
    progress: bool = True,
) -> GenerateResult:
    """Stage 1: write `<data_dir>/raw/` (users, items, interactions, faults.json) and the realism report."""
    from ingestion.generate import generate
    from ingestion.realism import write_report

    gen = cfg.generation
    summary = generate(
        gen,
        cfg.data_dir,
        fault_rate=fault_rate,
        workers=workers or default_workers(gen.interactions),
        progress=progress,
    )
    passed = failed = None
    if report:
        doc = write_report(cfg.data_dir, gen)
        passed, failed = doc["passed"], doc["failed"]
        if failed:
            log.warning("%d realism check(s) missed their target (see the table above)", failed)
    return GenerateResult(summary.interactions, summary.faults, passed, failed)
