"""One Spark session per process, started on first use and tuned for local mode (`engine: spark`, the Spark
offline store). Its settings are the pipeline config's `spark:` section (`feedstore.core.config.SparkConfig`).

`get_spark(settings)` starts the session the first time it is called and returns the same one afterwards (the
settings of later calls are ignored; a debug line says so when they differ). Every session computes in UTC
(`spark.sql.session.timeZone`), runs its Python workers on this interpreter (PYSPARK_PYTHON), converts through
Arrow, writes Parquet timestamps as microseconds (Spark 4.3 cannot read nanoseconds back, and INT96 is
legacy), and has no UI and quiet logs. Importing this module does not import pyspark.

Start-up costs (Spark's defaults vs `_FAST_LOCAL` and quiet logs, JVM options tried) are in bench/RESULTS.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feedstore.core.config import SparkConfig
from feedstore.core.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


#: Settings every session gets (the brief's invariants): they make results independent of the machine.
_ALWAYS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}

#: Local-mode start-up and small-job settings (measured: see the module docstring).
_FAST_LOCAL = {
    "spark.driver.host": "127.0.0.1",  # no reverse lookup of the host name, no "resolves to loopback" warning
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "1024",  # list a few hundred files on the driver
    "spark.eventLog.enabled": "false",
    "spark.sql.catalogImplementation": "in-memory",  # no Hive metastore / derby
}

_lock = threading.Lock()
_session: SparkSession | None = None
_started_with: SparkConfig | None = None


def _log4j_file() -> str:
    """A log4j2 configuration that keeps Spark at ERROR (its default prints a dozen WARN lines per start)."""
    from feedstore.core.io import atomic_path

    path = Path(tempfile.gettempdir()) / "feedstore-spark-log4j2-v2.properties"
    if not path.exists():  # written whole and renamed: a JVM starting in another process never reads half of it
        with atomic_path(path) as tmp:
            tmp.write_text("rootLogger.level = error\nrootLogger.appenderRef.stderr.ref = console\n"
                           "appender.console.type = Console\nappender.console.name = console\n"
                           "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
                           "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n\n"
                           # the shell logger's level decides the "Setting default log level" banner
                           "logger.repl.name = org.apache.spark.repl.Main\nlogger.repl.level = error\n")
    return str(path)


def check_java() -> str:
    """The `java` Spark will start (JAVA_HOME's, else PATH's); ConfigError with one line if there is none."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise ConfigError("Spark needs Java 17 or 21: no `java` on PATH and JAVA_HOME is not set "
                          "(install a JDK, e.g. `apt-get install openjdk-17-jre-headless`)")
    try:
        subprocess.run([java, "-version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(f"Spark needs Java: `{java} -version` failed ({e})") from None
    return java


def spark_conf(settings: SparkConfig) -> dict[str, str]:
    """Every setting the session is started with (defaults, then `settings.conf`, then the invariants)."""
    conf = {
        "spark.master": settings.master,
        "spark.app.name": "feedstore",
        "spark.driver.memory": settings.driver_memory,
        "spark.executor.memory": settings.executor_memory,
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        **(_FAST_LOCAL if settings.master.startswith("local") else {}),
        "spark.driver.extraJavaOptions": f"-Dlog4j.configurationFile={_log4j_file()} -Dlog4j2.level=error",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    conf.update(settings.conf)
    conf.update(_ALWAYS)
    return conf


def get_spark(settings: SparkConfig | None = None) -> SparkSession:
    """The process's Spark session, started (with `settings`, default SparkConfig()) on the first call."""
    global _session, _started_with
    settings = settings or SparkConfig()
    with _lock:
        if _session is not None and _session.sparkContext._jsc is not None:
            if settings != _started_with:
                log.debug("Spark session already running with %s; ignoring %s", _started_with, settings)
            return _session
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise ConfigError("Spark needs pyspark: pip install -e '.[spark]' (pyspark>=4.3,<4.4)") from None
        check_java()
        # the driver and the Python workers run this interpreter (the venv's), whatever PATH says
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        builder = SparkSession.builder
        for key, value in spark_conf(settings).items():
            builder = builder.config(key, value)
        try:
            session = builder.getOrCreate()
        except Exception as e:  # py4j / JVM start-up failures carry pages of text
            raise ConfigError(f"Spark did not start ({settings.master}): {str(e).strip().splitlines()[0]}") from None
        session.sparkContext.setLogLevel("ERROR")
        # py4j logs every connection it closes at INFO, also from __del__ at interpreter exit, after the handlers'
        # streams are closed ("--- Logging error ---" on stderr): its warnings are all a user needs
        logging.getLogger("py4j").setLevel(logging.WARNING)
        # getOrCreate may return a session someone else started: the invariants hold for ours either way
        for key in ("spark.sql.session.timeZone", "spark.sql.execution.arrow.pyspark.enabled",
                    "spark.sql.parquet.outputTimestampType"):
            session.conf.set(key, _ALWAYS[key])
        _session, _started_with = session, settings
        log.info("Spark %s started: master %s, %s shuffle partitions", session.version, settings.master,
                 settings.shuffle_partitions)
        return session


def stop_spark() -> None:
    """Stop the process's session (tests and benchmarks; the next get_spark starts a new one)."""
    global _session, _started_with
    with _lock:
        if _session is not None:
            _session.stop()
        _session, _started_with = None, None


def spark_settings(source: Any) -> SparkConfig:
    """A SparkConfig from any object with SparkConfig's fields (e.g. the offline store's yaml config)."""
    fields = {k: getattr(source, k) for k in SparkConfig.model_fields if getattr(source, k, None) is not None}
    return SparkConfig.model_validate(fields)


__all__ = ["SparkConfig", "get_spark", "spark_conf", "stop_spark", "check_java", "spark_settings"]
