"""The one typed pipeline configuration: `config/pipeline.yaml` loaded into `PipelineConfig`.

Precedence, highest first: command-line flag > environment variable > preset overlay > config file > default.
Every model forbids unknown keys, so a misspelt key fails loudly with its dotted path and the file it came from.
"""

from __future__ import annotations

import copy
import math
import os
from datetime import UTC, date, datetime, time, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from feedstore.core.contracts import DEVICES
from feedstore.core.errors import ConfigError
from feedstore.core.spec import FEATURE_SPEC

#: The repository's `config/` folder (present in a source checkout and an editable install).
#: config/ ships inside the package (feedstore/config -> ../config in the source tree, package data in a wheel), so
#: an installed CLI finds its defaults and presets from any directory.
CONFIG_DIR = Path(str(files("feedstore") / "config"))
DEFAULT_CONFIG_PATH = CONFIG_DIR / "pipeline.yaml"
PRESETS_DIR = CONFIG_DIR / "presets"

ENV_CONFIG = "FEEDSTORE_CONFIG"
ENV_DATA_DIR = "FEEDSTORE_DATA_DIR"
ENV_PRESET = "FEEDSTORE_PRESET"
ENV_ENGINE = "FEEDSTORE_ENGINE"
ENV_SPARK_MASTER = "FEEDSTORE_SPARK_MASTER"
ENV_ONLINE_STORE = "FEEDSTORE_ONLINE_STORE"



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ActivityConfig(_Strict):
    """Who is active, and how unequally (power law of user activity)."""

    sigma: float = Field(
        2.3,
        ge=0.0,
        le=5.0,
        description="Log-normal sigma of per-user activity. 2.3 reproduces the seed's 'top 1% of users make "
        "~50% of interactions' at 10K users / 1M events; 1.0-1.6 matches public feed logs.",
    )
    inactive_user_fraction: float = Field(
        0.03, ge=0.0, lt=1.0, description="Users who sign up and never interact (cold start)."
    )
    initial_user_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="Users already signed up before `start`; the rest sign up during the range."
    )
    initial_item_fraction: float = Field(
        0.2, gt=0.0, le=1.0, description="Items published before `start`; the rest are published during the range."
    )


class TemporalConfig(_Strict):
    """Diurnal and weekly cycles, in volume and in engagement."""

    hourly_weights: list[float] = Field(
        default=[
            2.0, 1.3, 0.9, 0.7, 0.7, 1.0, 1.8, 2.8, 3.5, 3.6, 3.7, 3.9,
            4.3, 4.2, 4.0, 4.0, 4.3, 5.0, 6.2, 7.4, 8.3, 8.4, 7.0, 4.0,
        ],
        min_length=24,
        max_length=24,
        description="Relative volume of each UTC hour 0..23: trough at night, peak in the evening "
        "(shape after the Open Bandit Dataset's ~12x peak/trough).",
    )
    weekend_volume_multiplier: float = Field(1.3, gt=0.0, description="Events per weekend day / per weekday.")
    evening_ctr_lift: float = Field(0.15, description="Click log-odds added for 17:00-21:59 UTC.")
    weekend_ctr_lift: float = Field(0.10, description="Click log-odds added on Saturday and Sunday.")

    @field_validator("hourly_weights")
    @classmethod
    def _positive_weights(cls, v: list[float]) -> list[float]:
        if any(w < 0 or not math.isfinite(w) for w in v) or sum(v) <= 0:
            raise ValueError("hourly weights must be finite, non-negative and not all zero")
        return v


class PreferenceConfig(_Strict):
    """Users' category preferences and their slow drift."""

    categories: int = Field(10, ge=1, le=1000, description="Number of content categories.")
    concentration: float = Field(
        0.3, gt=0.0, description="Dirichlet alpha of a user's category preferences (smaller = more focused)."
    )
    exploration: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of impressions drawn uniformly over categories (exploration)."
    )
    drift: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Share of a user's preference mass that moves to a second preference vector, linearly "
        "over the date range (0 = fixed interests).",
    )
    affinity_ctr_effect: float = Field(0.5, ge=0.0, description="Click log-odds per unit log relative affinity.")


class ItemConfig(_Strict):
    """Recency, lifecycle, popularity and quality of items."""

    half_life_days: float = Field(
        3.0, gt=0.0, description="Half-life of an item's exposure and viral engagement after publication."
    )
    evergreen_weight: float = Field(
        0.02, ge=0.0, description="Exposure an old item keeps, relative to a just-published one."
    )
    viral_ctr_lift: float = Field(0.4, ge=0.0, description="Click log-odds lift at age 0, decaying with half-life.")
    popularity_sigma: float = Field(1.0, ge=0.0, description="Log-normal sigma of an item's exposure prior.")
    quality_alpha: float = Field(5.0, gt=0.0, description="Beta(alpha, beta) of base_quality (seed: 5, 2).")
    quality_beta: float = Field(2.0, gt=0.0)
    quality_ctr_effect: float = Field(2.0, ge=0.0, description="Click log-odds per unit of base_quality.")
    category_ctr_spread: float = Field(
        0.4, ge=0.0, description="Categories' click log-odds offsets are spread evenly over +-this."
    )


class EngagementConfig(_Strict):
    """Click, like, share and dwell-time signals."""

    target_ctr: float = Field(
        0.12, gt=0.0, lt=1.0, description="Overall click-through rate the generator calibrates to."
    )
    user_propensity_sigma: float = Field(0.3, ge=0.0, description="Std of per-user click log-odds offsets.")
    like_given_click: float = Field(0.25, ge=0.0, le=1.0, description="P(like | click) for an average item.")
    share_given_like: float = Field(0.20, ge=0.0, le=1.0, description="P(share | click, like).")
    share_given_no_like: float = Field(0.03, ge=0.0, le=1.0, description="P(share | click, no like).")
    dwell_weibull_shape: float = Field(
        0.8, gt=0.0, description="Weibull shape k of dwell time; k < 1 = early abandonment dominates (Liu et al. 2010)."
    )
    dwell_scale_seconds: float = Field(30.0, gt=0.0, description="Weibull scale of dwell for base_quality 0.5.")
    dwell_cap_seconds: float = Field(300.0, gt=0.0, le=300.0, description="Dwell time is capped here (seed: 300 s).")


class DeviceConfig(_Strict):
    """Device mix and how loyal users are to their preferred device."""

    mix: dict[str, float] = Field(
        default={"mobile": 0.6, "desktop": 0.3, "tablet": 0.1},
        description="Share of users preferring each device (seed: 0.6 / 0.3 / 0.1).",
    )
    loyalty: float = Field(0.8, ge=0.0, le=1.0, description="P(a request uses the user's preferred device).")

    @field_validator("mix")
    @classmethod
    def _known_devices(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(DEVICES)
        if unknown:
            raise ValueError(f"unknown device(s) {sorted(unknown)}; expected {list(DEVICES)}")
        if any(p < 0 for p in v.values()) or sum(v.values()) <= 0:
            raise ValueError("device shares must be non-negative and not all zero")
        return {d: float(v.get(d, 0.0)) for d in DEVICES}


class RealismTargets(_Strict):
    """Bands the realism report checks measured values against ([low, high], inclusive)."""

    top1_user_share: tuple[float, float] = (0.45, 0.55)
    top10_user_share: tuple[float, float] = (0.70, 0.95)
    ctr: tuple[float, float] = (0.10, 0.15)
    like_rate: tuple[float, float] = (0.01, 0.15)
    peak_to_trough_hour_ratio: tuple[float, float] = (4.0, 30.0)
    weekend_to_weekday_volume: tuple[float, float] = (1.1, 1.6)
    users_without_events: tuple[float, float] = (0.01, 0.5)
    items_without_events: tuple[float, float] = (0.001, 0.8)

    @model_validator(mode="after")
    def _ordered(self) -> RealismTargets:
        for name, (lo, hi) in self:
            if lo > hi:
                raise ValueError(f"{name}: low {lo} is above high {hi}")
        return self


class GenerationConfig(_Strict):
    """Sizes, date range, seed and the pattern parameters of the synthetic feed."""

    users: int = Field(10_000, ge=1, description="Number of users.")
    items: int = Field(50_000, ge=1, description="Number of items.")
    interactions: int = Field(1_000_000, ge=0, description="Number of impressions (rows) to generate.")
    start: date = Field(date(2024, 1, 1), description="First day of events (UTC, inclusive).")
    end: date = Field(date(2024, 12, 31), description="Last day of events (UTC, inclusive).")
    seed: int = Field(42, ge=0, description="Random seed: same seed and config => byte-identical output.")
    block_events: int = Field(
        1_048_576,
        ge=1_000,
        description="A day with more events than this is generated in blocks of at most this many. Part of the "
        "data's identity (changing it changes the data); memory per worker grows with it.",
    )
    request_size_mean: float = Field(
        3.0, ge=1.0, description="Mean impressions per feed request (they share user, device and timestamp)."
    )
    activity: ActivityConfig = ActivityConfig()
    temporal: TemporalConfig = TemporalConfig()
    preferences: PreferenceConfig = PreferenceConfig()
    items_model: ItemConfig = ItemConfig()
    engagement: EngagementConfig = EngagementConfig()
    devices: DeviceConfig = DeviceConfig()
    realism_targets: RealismTargets = RealismTargets()

    @model_validator(mode="after")
    def _range(self) -> GenerationConfig:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self

    @property
    def start_ts(self) -> datetime:
        return datetime.combine(self.start, time(0), tzinfo=UTC)

    @property
    def end_ts(self) -> datetime:
        """Exclusive upper bound of event timestamps: midnight after `end`."""
        return datetime.combine(self.end + timedelta(days=1), time(0), tzinfo=UTC)

    @property
    def n_days(self) -> int:
        return (self.end - self.start).days + 1


class SplitConfig(_Strict):
    """Temporal train / val / test split (consumed by `feedstore training-set`): by ratio of rows in time order,
    or by explicit cut timestamps; all rows of one timestamp land in one split."""

    train: float = Field(0.70, gt=0.0, lt=1.0)
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, gt=0.0, lt=1.0)
    gap_hours: float = Field(0.0, ge=0.0, description="Events dropped after each cut (between splits).")
    train_end: datetime | None = Field(None, description="Explicit cut: train = events before this (UTC).")
    val_end: datetime | None = Field(None, description="Explicit cut: val = events from train_end to this.")
    max_null_fraction: float = Field(
        0.6, ge=0.0, le=1.0, description="Training-set gate: any feature null in more rows than this fails."
    )
    sparse_features: list[str] = Field(
        default_factory=lambda: FEATURE_SPEC.sparse_columns(),
        description="Features whose null means 'never happened' (first exposure): allowed up to 99.5% null. "
        "null: the feature spec's active-days views (the user x item history).",
    )
    suspicious_auc: float = Field(
        0.9, gt=0.5, le=1.0, description="`feedstore evaluate` flags a baseline AUC at or above this as likely leakage."
    )
    batch_rows: int = Field(
        250_000, ge=1_000, description="The builder streams get_historical_features in batches of this many "
        "rows (gate, report and split files are fed batch by batch): memory is bounded by it, not by the rows."
    )

    @field_validator("sparse_features", mode="before")
    @classmethod
    def _spec_sparse(cls, value: Any) -> Any:
        # null (the shipped yaml) = the spec's, resolved here so the config (and the training-set fingerprint that
        # hashes it) names the columns, not "null"
        return FEATURE_SPEC.sparse_columns() if value is None else value

    @model_validator(mode="after")
    def _cuts(self) -> SplitConfig:
        if (self.train_end is None) != (self.val_end is None):
            raise ValueError("give both train_end and val_end, or neither")
        if self.train_end and self.val_end and self.val_end <= self.train_end:
            raise ValueError(f"val_end ({self.val_end}) must be after train_end ({self.train_end})")
        return self

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + val + test must be 1.0, got {total:g}")
        return self


class ValidationConfig(_Strict):
    """Thresholds of the validation gates (consumed by `feedstore validate` and later stages' gates)."""

    max_quarantine_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="Fail the run if more than this share of a table's rows is quarantined."
    )
    mostly: float = Field(
        0.99, ge=0.0, le=1.0, description="GX `mostly` of row-level expectations (their own pass/fail flag)."
    )
    ctr: tuple[float, float] = Field((0.05, 0.35), description="Overall CTR of validated rows (seed's bounds).")
    like_rate: tuple[float, float] = Field((0.01, 0.15), description="Likes per impression (seed's bounds).")
    max_duplicate_id_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="More duplicate interaction_ids than this = key collapse: stop."
    )
    min_rows_per_day: int = Field(1, ge=0, description="Every day of the range needs this many rows (no gaps).")
    daily_rows_vs_median: tuple[float, float] = Field(
        (0.2, 5.0), description="Each day's validated rows / the median day's, inclusive band (volume spikes/drops)."
    )
    chunk_rows: int = Field(
        2_000_000, ge=10_000, description="Rows validated per GX batch; bounds memory at any input size."
    )
    duckdb_memory_limit: str = Field(
        "2GB", pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$",
        description="DuckDB's memory for the repeated-key pass over all selected files (it spills beyond that).",
    )
    example_rows: int = Field(5, ge=0, le=100, description="Offending example rows kept per expectation in reports.")
    docs_history: int = Field(
        20, ge=1, le=10_000, description="Data Docs keep the newest this many validation runs of each suite."
    )

    @model_validator(mode="after")
    def _bands(self) -> ValidationConfig:
        for name in ("ctr", "like_rate", "daily_rows_vs_median"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low {lo} is above high {hi}")
        return self


#: The `serving.online_store` choices: each names one feature_repo/feature_store*.yaml (feedstore.core.feast_repo).
ONLINE_STORES = ("sqlite", "redis", "redis-postgres", "redis-spark")


class ServingConfig(_Strict):
    """Feast online store choice and serving checks (Feast's own settings live in feature_repo/*.yaml)."""

    online_store: str = Field("sqlite", description="sqlite (embedded, feature_store.sqlite.yaml), redis "
                              "(feature_store.yaml, REDIS_CONNECTION_STRING), redis-postgres (Redis + the Feast "
                              "SQL registry in PostgreSQL at FEEDSTORE_REGISTRY_URL, feature_store.postgres.yaml) or "
                              "redis-spark (Redis, with Feast's offline side on Spark: training sets, materialization "
                              "and the skew check's retrieval; feature_store.spark.yaml, master `spark.master`).")
    skew_sample: int = Field(200, ge=1, description="Entity rows compared online vs offline by check-skew.")

    @field_validator("online_store")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ONLINE_STORES:
            raise ValueError(f"online_store must be one of {', '.join(map(repr, ONLINE_STORES))}, got {v!r}")
        return v


class SparkConfig(_Strict):
    """How the process's Spark session starts when `engine: spark` (feedstore.core.spark.get_spark). A cluster is
    a different `master` (spark://host:7077, yarn, k8s://https://host:443) and nothing else."""

    master: str = Field("local[*]", description="Spark master URL: local[*] (all cores of this machine), local[2], "
                        "spark://host:7077, yarn, k8s://...")
    driver_memory: str = Field("2g", description="spark.driver.memory.")
    executor_memory: str = Field("2g", description="spark.executor.memory.")
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions (Spark's 200 costs ~200 "
                                    "tiny tasks per shuffle in local mode; raise it on a cluster).")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings, applied last (the UTC "
                                 "session time zone and microsecond Parquet timestamps always hold).")


class PipelineConfig(_Strict):
    """The whole pipeline configuration."""

    data_dir: Path = Field(Path("data"), description="Root of every stage's inputs and outputs.")
    log_level: str = Field("INFO", description="Python logging level name.")
    engine: Literal["duckdb", "spark"] = Field(
        "duckdb", description="Compute engine of `validate` and `stats`: duckdb (one machine, the default) or spark "
        "(the `spark` extra and Java 17/21; settings under `spark`). Both write the same tables.")
    spark: SparkConfig = SparkConfig()
    generation: GenerationConfig = GenerationConfig()
    validation: ValidationConfig = ValidationConfig()
    splits: SplitConfig = SplitConfig()
    serving: ServingConfig = ServingConfig()

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {v!r}")
        return v.upper()



# --------------------------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of settings, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def resolve_preset(name_or_path: str) -> Path:
    """A preset is a YAML overlay: a path, or a name under `config/presets/`."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        return candidate
    path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")) if PRESETS_DIR.exists() else []
        raise ConfigError(f"preset {name_or_path!r}: not found (known presets: {', '.join(known) or 'none'})")
    return path


def load_config(
    config_path: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> PipelineConfig:
    """Load the pipeline config with precedence flag > env > preset > file > default.

    `overrides` maps dotted keys (e.g. ``"generation.users"``) to command-line values; ``None`` values are ignored.
    """
    env = os.environ if env is None else env
    sources: dict[str, str] = {}

    path = Path(config_path) if config_path else (Path(env[ENV_CONFIG]) if env.get(ENV_CONFIG) else None)
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    data: dict[str, Any] = _read_yaml(path) if path is not None else {}
    origin = str(path) if path is not None else "built-in defaults"

    preset = preset or env.get(ENV_PRESET) or None
    if preset:
        preset_path = resolve_preset(preset)
        overlay = _read_yaml(preset_path)
        _record_sources(overlay, "", str(preset_path), sources)
        data = _deep_merge(data, overlay)

    for key, var in (("data_dir", ENV_DATA_DIR), ("engine", ENV_ENGINE), ("spark.master", ENV_SPARK_MASTER),
                     ("serving.online_store", ENV_ONLINE_STORE)):
        if env.get(var):
            _set_dotted(data, key, env[var])
            sources[key] = f"${var}"
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(data, dotted, value)
        sources[dotted] = "--" + dotted.rsplit(".", 1)[-1].replace("_", "-")

    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e, origin, sources)) from None


def _record_sources(node: dict[str, Any], prefix: str, label: str, sources: dict[str, str]) -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _record_sources(value, f"{dotted}.", label, sources)
        else:
            sources[dotted] = label


def _one_line(error: ValidationError, origin: str, sources: dict[str, str]) -> str:
    parts = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"])
        src = next((s for k, s in sources.items() if loc == k or loc.startswith(k + ".")), origin)
        if err["type"] == "extra_forbidden" and loc.split(".")[0] == "features":
            msg = ("features are defined once, in the feature spec (feedstore/core/spec.py: windows, heartbeat, "
                   "priors, smoothing), not in the pipeline config; remove this key")
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt? see config/pipeline.yaml for the valid keys)"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        parts.append(f"{loc or '<root>'}: {msg}" + (f" [from {src}]" if src != origin else ""))
    return f"{origin}: invalid configuration: " + "; ".join(parts)
