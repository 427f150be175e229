"""The documented defaults and the `realistic` preset hit every realism target at the documented scale."""

from __future__ import annotations

import pytest

from feedstore.core.config import DEFAULT_CONFIG_PATH, load_config
from feedstore.shell.runner import generate_events


@pytest.mark.parametrize("preset", [None, "realistic"])
def test_every_realism_check_passes_at_default_scale(tmp_path, preset):
    cfg = load_config(DEFAULT_CONFIG_PATH, preset=preset, env={}, overrides={"data_dir": str(tmp_path)})
    assert cfg.generation.interactions == 1_000_000 and cfg.generation.users == 10_000
    result = generate_events(cfg, progress=False)
    assert result.interactions == 1_000_000
    assert result.realism_failed == 0, (tmp_path / "reports" / "realism.json").read_text()
