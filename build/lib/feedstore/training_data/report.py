"""Feature report of a training set: per split and feature, null rate, mean, std, quantiles; PSI train -> val and
train -> test; distribution plots (PNG) and one HTML page showing them."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from feedstore.core.io import write_json

log = logging.getLogger(__name__)

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PLOTS_PER_PAGE = 20


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float | None:
    """Population stability index of `actual` against `expected` (quantile bins of `expected`; nulls ignored)."""
    e, a = expected[~np.isnan(expected)], actual[~np.isnan(actual)]
    if not len(e) or not len(a):
        return None
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # constant in the reference: stable iff constant at the same value
        return 0.0 if np.all(a == edges[0]) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    pe = np.histogram(e, edges)[0] / len(e)
    pa_ = np.histogram(a, edges)[0] / len(a)
    pe, pa_ = np.clip(pe, 1e-6, None), np.clip(pa_, 1e-6, None)
    return float(np.sum((pa_ - pe) * np.log(pa_ / pe)))


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

    def sample(self, split: str) -> pd.DataFrame:
        parts = self._sample[split]
        return pa.concat_tables(parts).to_pandas() if parts else pd.DataFrame(columns=self.features)

    def stats(self, split: str, j: int) -> dict[str, float | None]:
        missing, count, mean, m2 = self._acc[split][:, j]
        rows = self.rows[split]
        return {"null_rate": float(missing / rows) if rows else None, "mean": float(mean) if count else None,
                "std": float(np.sqrt(m2 / count)) if count else None}


def feature_report(summary: FeatureSummary, out: Path, plots: bool = True) -> dict:
    """Null rate, mean and std are exact over every row; quantiles and PSI bins use each split's sample."""
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
    train = {f: samples["train"][f].to_numpy(dtype=np.float64, na_value=np.nan) for f in features}
    drift = {target: {f: psi(train[f], samples[target][f].to_numpy(dtype=np.float64, na_value=np.nan))
                      for f in features} for target in ("val", "test") if summary.rows.get(target)}
    report = {"features": features, "stats": stats, "psi": drift,
              "psi_guide": "< 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift",
              "sampled_rows": {n: len(s) for n, s in samples.items()}}
    write_json(report, out / "feature_report.json")
    images = _plots(samples, features, out) if plots else []
    _html(report, images, out / "index.html")
    worst = sorted(((v, f, t) for t, d in drift.items() for f, v in d.items() if v is not None), reverse=True)[:5]
    log.info("feature report: highest PSI %s", ", ".join(f"{f} ({t}) {v:.3f}" for v, f, t in worst))
    return report


def _plots(splits: dict[str, pd.DataFrame], features: list[str], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    sample = {n: (p.iloc[rng.choice(len(p), min(len(p), 20_000), replace=False)] if len(p) else p)
              for n, p in splits.items()}
    names = []
    for page in range(0, len(features), PLOTS_PER_PAGE):
        chunk = features[page: page + PLOTS_PER_PAGE]
        fig, axes = plt.subplots(4, 5, figsize=(18, 12))
        for ax, f in zip(axes.ravel(), [*chunk, *[None] * (PLOTS_PER_PAGE - len(chunk))], strict=True):
            if f is None:
                ax.axis("off")
                continue
            values = {n: s[f].to_numpy(dtype=np.float64, na_value=np.nan) for n, s in sample.items()}
            allv = np.concatenate([v[~np.isnan(v)] for v in values.values()])
            if len(allv):
                lo, hi = np.quantile(allv, [0.005, 0.995])
                bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
                for n, v in values.items():
                    v = v[~np.isnan(v)]
                    if len(v):
                        ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, density=True, histtype="step", label=n)
            ax.set_title(f, fontsize=8)
            ax.tick_params(labelsize=6)
        axes.ravel()[0].legend(fontsize=7)
        fig.tight_layout()
        name = f"distributions_{page // PLOTS_PER_PAGE + 1:02d}.png"
        fig.savefig(out / name, dpi=70)
        plt.close(fig)
        names.append(name)
    return names


def _html(report: dict, images: list[str], path: Path) -> None:
    rows = []
    for f in report["features"]:
        cells = [f"<td>{html.escape(f)}</td>"]
        for split in ("train", "val", "test"):
            s = report["stats"].get(split, {}).get(f, {})
            nr, mean = s.get("null_rate"), s.get("mean")
            nr_text = "" if nr is None else f"{nr:.3f}"
            mean_text = "" if mean is None else f"{mean:.4g}"
            cells.append(f"<td>{nr_text}</td><td>{mean_text}</td>")
        for target in ("val", "test"):
            v = report["psi"].get(target, {}).get(f)
            flag = " style='background:#fdd'" if v is not None and v > 0.25 else ""
            cells.append(f"<td{flag}>{'' if v is None else f'{v:.3f}'}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Training set feature report</title>
<style>body{{font-family:system-ui,sans-serif;margin:1rem 2rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px}}img{{max-width:100%}}</style></head><body>
<h1>Training set feature report</h1><p>PSI: {html.escape(report['psi_guide'])}. Highlighted: PSI &gt; 0.25.</p>
<table><tr><th>feature</th><th>train null</th><th>train mean</th><th>val null</th><th>val mean</th><th>test null</th>
<th>test mean</th><th>PSI val</th><th>PSI test</th></tr>{''.join(rows)}</table>
<h2>Distributions (train / val / test, density)</h2>{''.join(f'<img src="{i}" alt="{i}">' for i in images)}
</body></html>"""
    path.write_text(page)
