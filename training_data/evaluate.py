"""Baseline model check: a scikit-learn classifier on train, AUC and log loss on val and test.

It shows the features carry signal, and it is a leakage alarm: point-in-time features give a plausible AUC;
a feature that peeks at the label (e.g. statistics that include the current impression) makes it jump.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from feedstore.config import PipelineConfig
from feedstore.io import write_json

log = logging.getLogger(__name__)


def evaluate_frames(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, features: list[str],
                    preprocessor=None, max_train_rows: int = 300_000, seed: int = 0) -> dict:
    """Logistic regression on train only (after `preprocessor`, fitted on train; a fresh imputer + scaler fitted
    on train if none is given); AUC and log loss on val and test."""
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
    for name, part in (("val", val), ("test", test)):
        if len(part) and part["click"].nunique() == 2:
            p = model.predict_proba(x(part))[:, 1]
            out[name] = {"auc": float(roc_auc_score(part["click"], p)), "log_loss": float(log_loss(part["click"], p)),
                         "rows": int(len(part)), "ctr": float(part["click"].mean())}
    return out


def evaluate_training_set(cfg: PipelineConfig, path: Path) -> dict:
    """Evaluate a built training set and record the result in its manifest."""
    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    splits = {n: pd.read_parquet(path / f"{n}.parquet") for n in ("train", "val", "test")}
    import joblib

    preprocessor = joblib.load(path / "preprocessor.joblib")  # fitted on train only, at build time
    result = evaluate_frames(splits["train"], splits["val"], splits["test"], manifest["numeric_features"],
                             preprocessor=preprocessor)
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
