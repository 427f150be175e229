from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from feedstore.core.config import DEFAULT_CONFIG_PATH, PipelineConfig, load_config
from feedstore.core.errors import ConfigError


def test_shipped_pipeline_yaml_equals_builtin_defaults():
    assert load_config(DEFAULT_CONFIG_PATH, env={}) == PipelineConfig()


def test_realistic_preset_loads_and_changes_patterns():
    cfg = load_config(DEFAULT_CONFIG_PATH, preset="realistic", env={})
    assert cfg.generation.activity.sigma < PipelineConfig().generation.activity.sigma
    assert cfg.generation.realism_targets.top1_user_share == (0.10, 0.20)
    # settings the preset does not mention keep the file's values
    assert cfg.generation.users == PipelineConfig().generation.users


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_misspelt_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, {"generation": {"interactons": 5}})
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    msg = str(e.value)
    assert "generation.interactons" in msg and str(path) in msg and "unknown key" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"generation": {"users": -5}}, "generation.users"),
        ({"generation": {"interactions": -1}}, "generation.interactions"),
        ({"generation": {"start": "2024-05-01", "end": "2024-04-01"}}, "before start"),
        ({"generation": {"engagement": {"like_given_click": 1.5}}}, "like_given_click"),
        ({"generation": {"devices": {"loyalty": -0.1}}}, "loyalty"),
        ({"generation": {"devices": {"mix": {"watch": 1.0}}}}, "unknown device"),
        ({"splits": {"train": 0.9, "val": 0.2, "test": 0.1}}, "must be 1.0"),
        ({"features": {"windows_days": [1, 7]}}, "feature spec"),
        ({"generation": {"temporal": {"hourly_weights": [1.0] * 23}}}, "hourly_weights"),
    ],
)
def test_invalid_values_fail_with_one_line(tmp_path, data, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, data), env={})
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_precedence_flag_over_env_over_preset_over_file(tmp_path):
    path = _write(tmp_path, {"data_dir": "from-file", "generation": {"activity": {"sigma": 0.5}, "seed": 1}})
    env = {"FEEDSTORE_DATA_DIR": "from-env"}
    cfg = load_config(path, env=env)
    assert cfg.data_dir == Path("from-env")
    assert cfg.generation.activity.sigma == 0.5
    cfg = load_config(path, preset="realistic", env=env, overrides={"data_dir": "from-flag", "generation.seed": 9})
    assert cfg.data_dir == Path("from-flag")
    assert cfg.generation.activity.sigma == 1.15  # preset beats file
    assert cfg.generation.seed == 9


def test_config_file_from_environment(tmp_path):
    path = _write(tmp_path, {"generation": {"users": 77}})
    assert load_config(None, env={"FEEDSTORE_CONFIG": str(path)}).generation.users == 77


def test_flag_error_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"\[from --users\]"):
        load_config(_write(tmp_path, {}), env={}, overrides={"generation.users": 0})


@pytest.mark.parametrize("text", ["a: [\n", "- 1\n- 2\n"])
def test_malformed_yaml_is_a_config_error(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path, env={})


def test_date_range_helpers():
    g = PipelineConfig().generation
    assert g.start == date(2024, 1, 1) and g.n_days == 366
    assert g.end_ts.isoformat() == "2025-01-01T00:00:00+00:00"


def test_engine_precedence_flag_over_env_over_preset_over_file(tmp_path):
    preset = tmp_path / "spark-preset.yaml"
    preset.write_text("engine: spark\nspark: {master: 'spark://preset:7077'}\n")
    path = _write(tmp_path, {"engine": "duckdb", "spark": {"master": "local[2]", "conf": {"spark.x": "1"}}})
    cfg = load_config(path, env={})
    assert cfg.engine == "duckdb" and cfg.spark.master == "local[2]" and cfg.spark.conf == {"spark.x": "1"}
    assert load_config(path, preset=str(preset), env={}).engine == "spark"  # preset beats file
    assert load_config(path, preset=str(preset), env={}).spark.master == "spark://preset:7077"
    assert load_config(path, env={"FEEDSTORE_ENGINE": "spark"}).engine == "spark"  # env beats file
    cfg = load_config(path, preset=str(preset), env={"FEEDSTORE_ENGINE": "duckdb"})
    assert cfg.engine == "duckdb"  # env beats preset
    cfg = load_config(path, env={"FEEDSTORE_ENGINE": "duckdb"}, overrides={"engine": "spark"})
    assert cfg.engine == "spark"  # flag beats env


def test_spark_master_and_online_store_from_the_environment(tmp_path):
    """FEEDSTORE_SPARK_MASTER and FEEDSTORE_ONLINE_STORE (docker compose sets them) beat the file and the preset,
    keep the file's other spark settings, and lose to a flag; a bad store names its variable."""
    preset = tmp_path / "p.yaml"
    preset.write_text("spark: {master: 'spark://preset:7077'}\nserving: {online_store: redis}\n")
    path = _write(tmp_path, {"spark": {"master": "local[2]", "driver_memory": "3g"}})
    env = {"FEEDSTORE_SPARK_MASTER": "spark://spark-master:7077", "FEEDSTORE_ONLINE_STORE": "redis-spark"}
    cfg = load_config(path, preset=str(preset), env=env)
    assert cfg.spark.master == "spark://spark-master:7077" and cfg.spark.driver_memory == "3g"
    assert cfg.serving.online_store == "redis-spark"
    assert load_config(path, env=env, overrides={"serving.online_store": "sqlite"}).serving.online_store == "sqlite"
    assert load_config(path, env={"FEEDSTORE_ONLINE_STORE": ""}).serving.online_store == "sqlite"  # empty: unset
    with pytest.raises(ConfigError, match=r"online_store.*redis-spark.*\[from \$FEEDSTORE_ONLINE_STORE\]") as e:
        load_config(path, env={"FEEDSTORE_ONLINE_STORE": "mongo"})
    assert "\n" not in str(e.value) and e.value.exit_code == 2


def test_unknown_engine_names_its_source(tmp_path):
    with pytest.raises(ConfigError, match=r"engine: .*'duckdb' or 'spark'.*\[from \$FEEDSTORE_ENGINE\]") as e:
        load_config(_write(tmp_path, {}), env={"FEEDSTORE_ENGINE": "flink"})
    assert "\n" not in str(e.value) and e.value.exit_code == 2


def test_every_online_store_has_its_feast_yaml():
    from feedstore.core.config import ONLINE_STORES
    from feedstore.core.feast_repo import YAML_FILES

    assert set(YAML_FILES) == set(ONLINE_STORES)
    assert all(path.is_file() for path in YAML_FILES.values())
