"""Quarantine: which rows the row rules flagged, with every failed rule as the reason and the row's source file and
row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from feedstore.core.gx import ROW, RuleOutcome

_MAX_RULES = 62


@dataclass
class TableResult:
    """Outcome of one table's gate."""

    table: str
    suite: str
    rows_in: int = 0
    validated: int = 0
    quarantined: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, RuleOutcome] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    example_limit: int = 5

    def add(self, outcomes: list[RuleOutcome], rows: int) -> None:
        """Merge a chunk's outcomes (counts summed, examples from the first chunks, success = all chunks)."""
        for o in outcomes:
            prev = self.outcomes.get(o.rule)
            if prev is None:
                self.outcomes[o.rule] = o
                o.unexpected_rows = o.unexpected_rows[:0]
                continue
            prev.success = prev.success and o.success
            prev.unexpected_count += o.unexpected_count
            prev.element_count = (prev.element_count or 0) + (o.element_count or 0)
            prev.error = prev.error or o.error
            prev.examples.extend(o.examples[: max(0, self.example_limit - len(prev.examples))])
            if o.level != ROW:
                prev.observed_value = o.observed_value

    def finish(self) -> None:
        for o in self.outcomes.values():
            if o.level == ROW:
                o.unexpected_percent = round(100.0 * o.unexpected_count / self.rows_in, 6) if self.rows_in else 0.0

    @property
    def quarantined_fraction(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0


def quarantine_mask(n: int, outcomes: list[RuleOutcome]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """From row rules' failing rows: (bad-row mask, reason string per bad row, count of rows per rule)."""
    rules = sorted(o for o in {o.rule for o in outcomes if o.level == ROW})
    if len(rules) > _MAX_RULES:
        raise ValueError(f"at most {_MAX_RULES} row rules per suite")
    bit = {r: np.int64(1) << np.int64(i) for i, r in enumerate(rules)}
    codes = np.zeros(n, dtype=np.int64)
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.level == ROW and len(o.unexpected_rows):
            codes[o.unexpected_rows] |= bit[o.rule]
    bad = codes != 0
    uniq, inverse = np.unique(codes[bad], return_inverse=True)
    labels = np.array([";".join(r for r in rules if u & bit[r]) for u in uniq], dtype=object)
    for r in rules:
        c = int(np.count_nonzero(codes & bit[r]))
        if c:
            counts[r] = c
    return bad, labels[inverse] if len(uniq) else np.empty(0, dtype=object), counts


def _quarantine_table(table: pa.Table, bad: np.ndarray, reasons: np.ndarray, files: np.ndarray,
                      rows: np.ndarray) -> pa.Table:
    """The bad rows of `table` with why (`_reason`, one per bad row) and where each came from: `files` and `rows`
    give the source file and row number of every row of `table`."""
    idx = np.flatnonzero(bad)
    return (table.take(pa.array(idx))
            .append_column("_reason", pa.array(reasons.tolist(), pa.string()))
            .append_column("_source_file", pa.array(np.asarray(files, dtype=object)[idx].tolist(), pa.string()))
            .append_column("_source_row", pa.array(np.asarray(rows, dtype=np.int64)[idx])))
