"""Shared fixtures; tests under tests/unit get the `unit` marker, under tests/integration `integration`."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedstore.config import GenerationConfig, PipelineConfig

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in path.parts:
            item.add_marker(pytest.mark.integration)


def small_generation(**overrides) -> GenerationConfig:
    """A small but pattern-bearing world: 2K users, 5K items, 60K events over 8 weeks."""
    base = dict(users=2_000, items=5_000, interactions=60_000, start="2024-03-04", end="2024-04-28", seed=7)
    base.update(overrides)
    return GenerationConfig.model_validate(base)


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory) -> tuple[Path, GenerationConfig]:
    """One generated dataset shared by read-only tests."""
    from ingestion.generate import generate

    cfg = small_generation()
    data_dir = tmp_path_factory.mktemp("small_raw")
    generate(cfg, data_dir, progress=False)
    return data_dir, cfg


@pytest.fixture
def pipeline_config(tmp_path) -> PipelineConfig:
    return PipelineConfig(data_dir=tmp_path, generation=small_generation())
