"""Baseline model check: a scikit-learn classifier on train, AUC and log loss on val and test.

It shows the features carry signal, and it is a leakage alarm: point-in-time features give a plausible AUC;
a feature that peeks at the label (e.g. statistics that include the current impression) makes it jump.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from feedstore.core.catalog import Catalog
from feedstore.core.config import PipelineConfig
from feedstore.core.errors import InputDataError
from feedstore.core.io import write_json

log = logging.getLogger(__name__)


def evaluate_frames(train: pd.DataFrame, val: pd.DataFrame | Iterable[pd.DataFrame],
                    test: pd.DataFrame | Iterable[pd.DataFrame], features: list[str], preprocessor=None,
                    max_train_rows: int = 300_000, seed: int = 0) -> dict:
    """Logistic regression on train only (after `preprocessor`, fitted on train; a fresh imputer + scaler fitted
    on train if none is given); AUC and log loss on val and test, which may be frames or streams of frames
    (scored chunk by chunk: only labels and scores are kept)."""
    from sklearn.base import clone
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if preprocessor is None:
        preprocessor = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                 ("scale", StandardScaler())]).fit(train[features].astype(np.float64))
    if len(train) > max_train_rows:
        train = train.sample(max_train_rows, random_state=seed)
    x = lambda d: preprocessor.transform(d[features].astype(np.float64))  # noqa: E731
    model = clone(LogisticRegression(max_iter=300, C=1.0))
    model.fit(x(train), train["click"].to_numpy())
    out = {"model": "logistic regression on the train-fitted imputer + scaler", "train_rows": int(len(train)),
           "features": len(features)}
    for name, parts in (("val", val), ("test", test)):
        labels, scores = [], []
        for part in [parts] if isinstance(parts, pd.DataFrame) else parts:
            if len(part):
                labels.append(part["click"].to_numpy())
                scores.append(model.predict_proba(x(part))[:, 1])
        y = np.concatenate(labels) if labels else np.empty(0)
        if len(np.unique(y)) == 2:
            p = np.concatenate(scores)
            out[name] = {"auc": float(roc_auc_score(y, p)), "log_loss": float(log_loss(y, p)),
                         "rows": int(len(y)), "ctr": float(y.mean())}
    return out


def _batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns):
        yield batch.to_pandas()


def load_preprocessor(path: Path, manifest: dict):
    """Unpickle preprocessor.joblib only if its sha256 is the one the build recorded in the manifest (a pickle runs
    code when loaded: a file swapped after the build is refused, never loaded)."""
    import hashlib

    import joblib

    file = path / "preprocessor.joblib"
    expected = manifest.get("preprocessor_sha256")
    if not file.exists():
        raise InputDataError(f"{file}: not found (rebuild the training set)")
    with file.open("rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if expected is None or actual != expected:
        raise InputDataError(f"{file}: sha256 {actual[:12]}... does not match the manifest's "
                             f"{(expected or 'none')[:12]}...; refusing to load a pickle that was changed after the "
                             "build (rebuild the training set)")
    return joblib.load(file)


def evaluate_training_set(cfg: PipelineConfig, version: str | None = None, max_train_rows: int = 300_000) -> dict:
    """Stage `evaluate`: the baseline on a built training set (default: the newest), recorded the result in its
    manifest. Streams the split files (only the
    numeric features and the label): train is sampled on the way in (~`max_train_rows` rows, seeded), val and
    test are scored batch by batch, so memory does not grow with the set."""
    import pyarrow.parquet as pq

    path = Catalog(cfg.data_dir).published_training_set(version)
    manifest = json.loads((path / "manifest.json").read_text())
    columns = [*manifest["numeric_features"], "click"]
    batch_rows = cfg.splits.batch_rows
    n_train = pq.ParquetFile(path / "train.parquet").metadata.num_rows
    keep = min(1.0, max_train_rows / n_train) if n_train else 1.0
    rng = np.random.default_rng(0)
    train = pd.concat([b[rng.random(len(b)) < keep] for b in _batches(path / "train.parquet", columns, batch_rows)]
                      or [pd.DataFrame(columns=columns)], ignore_index=True)
    preprocessor = load_preprocessor(path, manifest)  # fitted on train only, at build time
    result = evaluate_frames(train, _batches(path / "val.parquet", columns, batch_rows),
                             _batches(path / "test.parquet", columns, batch_rows), manifest["numeric_features"],
                             preprocessor=preprocessor, max_train_rows=max_train_rows)
    aucs = [result[s]["auc"] for s in ("val", "test") if s in result]
    result["suspicious_auc_threshold"] = cfg.splits.suspicious_auc
    result["leakage_suspected"] = bool(aucs and max(aucs) >= cfg.splits.suspicious_auc)
    manifest["evaluation"] = result
    write_json(manifest, path / "manifest.json")
    for s in ("val", "test"):
        if s in result:
            log.info("baseline %s: AUC %.4f, log loss %.4f (%s rows, CTR %.4f)", s, result[s]["auc"],
                     result[s]["log_loss"], f"{result[s]['rows']:,}", result[s]["ctr"])
    if result["leakage_suspected"]:
        log.warning("baseline AUC >= %.2f: implausibly high for click prediction; check the features for leakage",
                    cfg.splits.suspicious_auc)
    return result

