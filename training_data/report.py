"""Feature report of a training set: per split and feature, null rate, mean, std, quantiles; PSI train -> val and
train -> test (n/a, with the reason, where quantile bins collapse); distribution plots (PNG, log or quantile-clipped
axes) and one HTML page (`templates/feature_report.html.j2`) with a summary at the top."""

from __future__ import annotations

import logging
import math
import re
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from feedstore.core.io import atomic_path, write_json

log = logging.getLogger(__name__)

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PLOTS_PER_PAGE, PLOT_COLUMNS = 12, 3
PSI_BINS = 10
#: Features whose drift a time split causes by construction, so their PSI measures the split, not a data problem:
#: ages and cumulative counts grow with time (later splits sit higher); calendar features of a split that spans a
#: few days cover only those days.
EXPECTED_DRIFT = (
    (re.compile(r"(_age_days|_days_since_|_timestamp$|_lifetime$)"),
     "grows with time: drift is expected under a time split"),
    (re.compile(r"^(day_of_week|is_weekend|hour_of_day)$"),
     "calendar: a split spanning few days covers only those days; drift is expected under a time split"),
)
SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float | None:
    """Population stability index of `actual` against `expected` (quantile bins of `expected`; nulls ignored)."""
    return Reference(expected, bins).psi(actual)


class Reference:
    """A reference distribution (train) for PSI: its non-null values and quantile bin edges, computed once however
    many splits are compared with it (the report compares val and test)."""

    def __init__(self, expected: np.ndarray, bins: int = PSI_BINS):
        self.bins = bins
        self.values = expected[~np.isnan(expected)]
        self.edges = (np.unique(np.quantile(self.values, np.linspace(0, 1, bins + 1))) if len(self.values)
                      else np.empty(0))

    def psi(self, actual: np.ndarray) -> float | None:
        e, a = self.values, actual[~np.isnan(actual)]
        if not len(e) or not len(a):
            return None
        if len(self.edges) < 2:  # constant in the reference: stable iff constant at the same value
            return 0.0 if np.all(a == self.edges[0]) else float("inf")
        edges = self.edges.copy()
        edges[0], edges[-1] = -np.inf, np.inf
        pe = np.histogram(e, edges)[0] / len(e)
        pa_ = np.histogram(a, edges)[0] / len(a)
        pe, pa_ = np.clip(pe, 1e-6, None), np.clip(pa_, 1e-6, None)
        return float(np.sum((pa_ - pe) * np.log(pa_ / pe)))

    def psi_or_reason(self, actual: np.ndarray) -> tuple[float | None, str | None]:
        """PSI, or None and why it would mislead: when the reference's quantile bins collapse (binary or
        mostly-one-value features: fewer than half of the bins remain), a PSI near 0 says nothing about drift."""
        e, bins = self.values, self.bins
        if not len(e) or not np.any(~np.isnan(actual)):
            return None, "no non-null values"
        if len(self.edges) - 1 < bins / 2:
            values, counts = np.unique(e, return_counts=True)
            top = counts.argmax()
            kind = "binary" if len(values) <= 2 else f"{len(values)} distinct values" if len(values) <= bins else (
                "mostly one value")
            return None, (f"{kind}: {len(self.edges) - 1} of {bins} quantile bins left ({counts[top] / len(e):.0%} "
                          f"of train is {values[top]:g})")
        return self.psi(actual), None


QUANTILE_SAMPLE = 200_000


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for null (what pandas' to_numpy(float, na_value=nan) gives)."""
    if pa.types.is_boolean(col.type):
        col = col.cast(pa.int8())
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False)


class FeatureSummary:
    """Per split and feature, fed batch by batch: exact row, missing (null or NaN), mean and std counts (Chan's
    parallel update, so batches combine exactly as one pass would up to rounding), and a fixed random sample of
    about `QUANTILE_SAMPLE` rows per split (Bernoulli, seeded) for quantiles, PSI bins, plots and the
    preprocessor. Memory: the sample, whatever the rows."""

    def __init__(self, features: list[str], expected_rows: dict[str, int], seed: int = 0):
        self.features = features
        self._rate = {s: min(1.0, QUANTILE_SAMPLE / n) if n else 0.0 for s, n in expected_rows.items()}
        self._rng = np.random.default_rng(seed)
        k = len(features)
        self.rows = {s: 0 for s in expected_rows}
        self._acc = {s: np.zeros((4, k)) for s in expected_rows}  # missing, count, mean, M2
        self._sample: dict[str, list[pa.Table]] = {s: [] for s in expected_rows}

    def add(self, split: str, part: pa.Table) -> None:
        """Fold one batch's rows of `split` in (Arrow in: one column at a time becomes numpy, never the batch)."""
        if not part.num_rows:
            return
        self.rows[split] += part.num_rows
        acc = self._acc[split]
        for j, f in enumerate(self.features):
            x = _floats(part.column(f))
            ok = x[~np.isnan(x)]
            acc[0, j] += len(x) - len(ok)
            if not len(ok):
                continue
            n_a, mean_a, m2_a = acc[1, j], acc[2, j], acc[3, j]
            n_b, mean_b = len(ok), ok.mean()
            m2_b = ((ok - mean_b) ** 2).sum()
            n = n_a + n_b
            delta = mean_b - mean_a
            acc[1, j], acc[2, j] = n, mean_a + delta * n_b / n
            acc[3, j] = m2_a + m2_b + delta * delta * n_a * n_b / n
        keep = self._rng.random(part.num_rows) < self._rate[split]
        self._sample[split].append(part.select(self.features).filter(pa.array(keep)))

    def sample_table(self, split: str) -> pa.Table | None:
        parts = self._sample[split]
        return pa.concat_tables(parts) if parts else None

    def sample(self, split: str) -> pd.DataFrame:
        table = self.sample_table(split)
        return table.to_pandas() if table is not None else pd.DataFrame(columns=self.features)

    def stats(self, split: str, j: int) -> dict[str, float | None]:
        missing, count, mean, m2 = self._acc[split][:, j]
        rows = self.rows[split]
        return {"null_rate": float(missing / rows) if rows else None, "mean": float(mean) if count else None,
                "std": float(np.sqrt(m2 / count)) if count else None}


def feature_report(summary: FeatureSummary, out: Path, plots: bool = True,
                   splits: dict[str, dict[str, Any]] | None = None, published_as: Path | None = None,
                   pool: Executor | None = None) -> tuple[dict, list[PendingPage]]:
    """Null rate, mean and std are exact over every row; quantiles and PSI bins use each split's sample. `splits`
    (rows, CTR, time range per split) goes into the summary at the top of the page. `published_as`: where `out`
    will be once published (a staged build writes into a folder that is gone by then): the path the log names.
    `pool`: render the plot pages there (see `_plots`); the report is complete once every returned page is
    `finish()`ed."""
    out.mkdir(parents=True, exist_ok=True)
    features = summary.features
    samples = {name: summary.sample(name) for name in summary.rows}
    stats: dict[str, dict[str, Any]] = {}
    for name, sample in samples.items():
        stats[name] = {}
        for j, f in enumerate(features):
            q = sample[f].to_numpy(dtype=np.float64, na_value=np.nan) if len(sample) else np.empty(0)
            q = q[~np.isnan(q)]
            stats[name][f] = {**summary.stats(name, j), "quantiles": dict(zip(
                [f"p{int(p * 100):02d}" for p in QUANTILES], [float(v) for v in np.quantile(q, QUANTILES)],
                strict=True)) if len(q) else {}}
    train = {f: Reference(samples["train"][f].to_numpy(dtype=np.float64, na_value=np.nan)) for f in features}
    drift: dict[str, dict[str, float | None]] = {}
    not_applicable: dict[str, str] = {}
    for target in ("val", "test"):
        if not summary.rows.get(target):
            continue
        drift[target] = {}
        for f in features:
            drift[target][f], reason = train[f].psi_or_reason(
                samples[target][f].to_numpy(dtype=np.float64, na_value=np.nan))
            if reason:
                not_applicable[f] = reason
    expected_drift = {f: note for f in features for pattern, note in EXPECTED_DRIFT[::-1] if pattern.search(f)}
    report = {"features": features, "stats": stats, "psi": drift, "psi_not_applicable": not_applicable,
              "expected_drift": expected_drift,
              "psi_guide": "< 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift",
              "splits": splits or {}, "sampled_rows": {n: len(s) for n, s in samples.items()}}
    report["summary"] = _summary(report)
    write_json(report, out / "feature_report.json")
    images, pending = _plots(samples, features, out, drift, pool) if plots else ([], [])
    _html(report, images, out / "index.html")
    worst = report["summary"]["worst_psi"]
    log.info("feature report: highest PSI %s (n/a for %d binary / mostly-one-value features; %d drift by construction "
             "under a time split) -> %s", ", ".join(f"{w['feature']} ({w['split']}) {w['psi']:.3f}" for w in worst)
             or "-", len(not_applicable), len(expected_drift), (published_as or out) / "index.html")
    return report, pending


def _summary(report: dict) -> dict:
    """The top of the page: worst PSI (other than features a time split makes drift) and null-rate outliers (over
    half null, or moving by more than 10 points between splits), features with the same null rates grouped (a
    view's features are null together: cold start)."""
    growing = set(report["expected_drift"])
    ranked = sorted(((v, f, t) for t, d in report["psi"].items() for f, v in d.items() if v is not None),
                    reverse=True)
    worst = [{"feature": f, "split": t, "psi": v} for v, f, t in ranked if f not in growing][:5]
    worst_growing = [{"feature": f, "split": t, "psi": v} for v, f, t in ranked if f in growing][:3]
    stats = report["stats"]
    groups: dict[tuple, list[str]] = {}
    for f in report["features"]:
        rates = {s: stats[s][f]["null_rate"] for s in stats if stats[s][f]["null_rate"] is not None}
        if not rates:
            continue
        spread = max(rates.values()) - min(rates.values())
        if max(rates.values()) > 0.5 or spread > 0.10:
            groups.setdefault(tuple((s, round(r, 4)) for s, r in rates.items()), []).append(f)
    outliers = []
    for key, names in groups.items():
        rates = dict(key)
        spread = max(rates.values()) - min(rates.values())
        outliers.append({"feature": names[0], "features": names, "null_rates": rates,
                         "why": "over half null" if max(rates.values()) > 0.5
                         else f"null rate moves {spread:.0%} between splits"})
    return {"worst_psi": worst, "worst_psi_time_growing": worst_growing, "null_outliers": outliers}


def _log_axis(values: np.ndarray) -> bool:
    """Heavy-tailed non-negative values (counts, dwell, popularity): the top 1% sits far above the middle."""
    if not len(values) or values.min() < 0:
        return False
    p50, p99 = np.quantile(values, [0.5, 0.99])
    return p99 >= 10 and p99 > 8 * max(p50, 1)


def plot_pages(features: list[str]) -> list[tuple[str, list[str]]]:
    """The report's plot pages: (PNG name, the features it shows), `PLOTS_PER_PAGE` features a page."""
    return [(f"distributions_{page // PLOTS_PER_PAGE + 1:02d}.png", features[page: page + PLOTS_PER_PAGE])
            for page in range(0, len(features), PLOTS_PER_PAGE)]


@dataclass(frozen=True)
class PendingPage:
    """A plot page handed to a pool: `finish()` waits for it, or renders it here if the pool has not begun it."""

    future: Future
    args: tuple

    def finish(self) -> None:
        if self.future.cancel():
            render_page(*self.args)
        else:
            self.future.result()  # a page that failed fails the report


def _plots(splits: dict[str, pd.DataFrame], features: list[str], out: Path,
           drift: dict[str, dict[str, float | None]],
           pool: Executor | None = None) -> tuple[list[str], list[PendingPage]]:
    """Render the plot pages into `out`: here, or, with `pool` (e.g. a spawned process that has imported
    matplotlib already), there, one job a page (each gets only its features' rows); the PNGs are the same bytes
    either way. Returns the PNG names and the pages handed to the pool."""
    rng = np.random.default_rng(0)
    sample = {n: (p.iloc[rng.choice(len(p), min(len(p), 20_000), replace=False)] if len(p) else p)
              for n, p in splits.items()}
    names, pending = [], []
    for name, chunk in plot_pages(features):
        args = ({n: s[chunk] for n, s in sample.items()}, chunk, {t: {f: d.get(f) for f in chunk}
                                                                  for t, d in drift.items()}, out / name)
        if pool is None:
            render_page(*args)
        else:
            pending.append(PendingPage(pool.submit(render_page, *args), args))
        names.append(name)
    return names, pending


def import_matplotlib() -> None:
    """What rendering a page imports (Agg backend): a worker process calls it ahead of its first page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def render_page(sample: dict[str, pd.DataFrame], chunk: list[str], drift: dict[str, dict[str, float | None]],
                path: Path) -> None:
    """One PNG of `chunk`'s distributions per split (`sample`: the rows to draw, per split)."""
    import_matplotlib()
    import matplotlib.pyplot as plt

    with plt.rc_context({"font.size": 11, "axes.titlesize": 12, "xtick.labelsize": 10, "ytick.labelsize": 10,
                         "legend.fontsize": 10}):
        rows = math.ceil(len(chunk) / PLOT_COLUMNS)  # the last page is only as tall as its plots
        fig, axes = plt.subplots(rows, PLOT_COLUMNS, figsize=(15, 3.4 * rows), squeeze=False)
        for ax, f in zip(axes.ravel(), [*chunk, *[None] * (rows * PLOT_COLUMNS - len(chunk))], strict=True):
            if f is None:
                ax.axis("off")
                continue
            values = {n: s[f].to_numpy(dtype=np.float64, na_value=np.nan) for n, s in sample.items()}
            _plot_feature(ax, f, {n: v[~np.isnan(v)] for n, v in values.items()},
                          {t: d.get(f) for t, d in drift.items()})
        axes.ravel()[0].legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _plot_feature(ax, feature: str, values: dict[str, np.ndarray], psi_by_split: dict[str, float | None]) -> None:
    """Share of rows per bin for each split: bars for few distinct values, a log axis for heavy tails, else a
    linear axis clipped to the 0.5-99.5% quantiles."""
    allv = np.concatenate([v for v in values.values()]) if values else np.empty(0)
    rows = {n: len(v) for n, v in values.items()}  # shares are of every non-null row, drawn or not
    psi_text = " · ".join(f"{t} {'n/a' if v is None else f'{v:.2f}'}" for t, v in psi_by_split.items())
    ax.set_title(f"{feature}\nPSI {psi_text}" if psi_text else feature, loc="left")
    if not len(allv):
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        return
    distinct = np.unique(allv)
    if len(distinct) <= 12:
        width = 0.8 / max(len(values), 1)
        for i, (n, v) in enumerate(values.items()):
            share = [(v == d).mean() if len(v) else 0 for d in distinct]
            ax.bar(np.arange(len(distinct)) + i * width, share, width, label=n, color=SPLIT_COLORS.get(n))
        ax.set_xticks(np.arange(len(distinct)) + width * (len(values) - 1) / 2, [f"{d:g}" for d in distinct])
        ax.set_ylabel("share of rows")
        return
    if _log_axis(allv):
        top = max(np.quantile(allv, 0.999), 1)
        if np.all(allv == np.round(allv)):  # counts: bins centred on whole numbers, never narrower than 1
            bins = np.unique(np.round(np.geomspace(1, top + 1, 40))) - 0.5
            bins = np.concatenate([[-0.5], bins])
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlabel("value (log scale)")
        else:  # positive values on a log axis; the share of zeros is said, not drawn
            positive = allv[allv > 0]
            lo = max(np.quantile(positive, 0.001), 1e-6)
            bins = np.geomspace(lo, max(top, lo * 10), 40)
            ax.set_xscale("log")
            zeros = 1 - len(positive) / len(allv)
            ax.set_xlabel(f"value (log scale; zeros, {zeros:.0%} of rows, not shown)" if zeros else "value (log scale)")
            values = {n: v[v > 0] for n, v in values.items()}
    else:
        lo, hi = np.quantile(allv, [0.005, 0.995])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        ax.set_xlabel("value (0.5-99.5% quantiles)")
    for n, v in values.items():
        if len(v):
            ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, weights=np.full(len(v), 1 / rows[n]),
                    histtype="step", linewidth=1.6, label=n, color=SPLIT_COLORS.get(n))
    ax.set_ylabel("share of rows")


def _html(report: dict, images: list[str], path: Path) -> None:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("feedstore.training_data", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    na, growing = report["psi_not_applicable"], report["expected_drift"]
    rows = []
    for f in report["features"]:
        notes = [n for n in (na.get(f) and f"PSI n/a: {na[f]}", growing.get(f)) if n]
        rows.append({"feature": f,
                     "stats": {s: report["stats"].get(s, {}).get(f, {}) for s in ("train", "val", "test")},
                     "psi": {t: report["psi"].get(t, {}).get(f) for t in ("val", "test")}, "na": na.get(f),
                     "growing": growing.get(f), "notes": "; ".join(notes)})
    with atomic_path(path) as tmp:
        tmp.write_text(env.get_template("feature_report.html.j2").render(report=report, rows=rows, images=images),
                       encoding="utf-8")
