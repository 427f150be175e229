"""evaluate unpickles preprocessor.joblib only if its bytes are the ones the build recorded."""

from __future__ import annotations

import hashlib

import joblib
import pytest

from feedstore.core.errors import InputDataError
from feedstore.training_data.evaluate import load_preprocessor


def test_matching_hash_loads(tmp_path):
    joblib.dump({"scale": 2.0}, tmp_path / "preprocessor.joblib")
    digest = hashlib.sha256((tmp_path / "preprocessor.joblib").read_bytes()).hexdigest()
    assert load_preprocessor(tmp_path, {"preprocessor_sha256": digest}) == {"scale": 2.0}


@pytest.mark.parametrize("manifest", [{"preprocessor_sha256": "0" * 64}, {}])
def test_changed_or_unrecorded_pickle_is_refused_unloaded(tmp_path, manifest):
    class Boom:
        def __reduce__(self):  # what a malicious pickle does: run code on load
            return (exec, ("raise SystemExit('pickle code ran')",))

    joblib.dump(Boom(), tmp_path / "preprocessor.joblib")
    with pytest.raises(InputDataError, match="refusing to load"):
        load_preprocessor(tmp_path, manifest)
