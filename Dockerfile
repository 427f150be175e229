# The feedstore image the compose services run: built once from the pinned locks, nothing installed at start.
#   docker compose build            (every target)
# runtime: the CLI and the Feast feature server (requirements/demo.lock);
# airflow: + Airflow and the PostgreSQL driver (requirements/test.lock), + Java and pyspark: the Spark driver of
#          `engine: spark` / the redis-spark store (client mode against the compose Spark cluster or local[*]);
# spark:   the Spark master and workers: the official apache/spark image's Spark and Java on the project's Python
#          with feedstore installed (the executors' Python workers run feedstore's code, and PySpark needs the same
#          Python minor version on the driver and the workers: the official image's Python is another one).
# SPARK_VERSION must equal the pyspark of the driver (the same Spark on every side of the cluster).
ARG SPARK_VERSION=4.3.0
FROM apache/spark:${SPARK_VERSION} AS spark-dist

FROM python:3.11-slim AS base
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && useradd --create-home --uid 10001 feedstore
# the deployment's pipeline config sits here (FEEDSTORE_CONFIG in docker-compose.yaml); the package has the rest
WORKDIR /opt/feedstore

# the project, built once into a wheel (package data and the stage folders included) that every target installs
FROM base AS wheel
COPY pyproject.toml README.md ./
COPY feedstore feedstore
COPY config config
COPY feature_repo feature_repo
COPY ingestion ingestion
COPY training_data training_data
COPY serving serving
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM base AS runtime
COPY requirements/demo.lock requirements/demo.lock
RUN pip install -r requirements/demo.lock
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
COPY config config
USER feedstore

FROM base AS airflow
ARG SPARK_VERSION
COPY --from=spark-dist /opt/java/openjdk /opt/java/openjdk
ENV JAVA_HOME=/opt/java/openjdk PATH=/opt/venv/bin:/opt/java/openjdk/bin:$PATH
COPY requirements/test.lock requirements/test.lock
RUN pip install -r requirements/test.lock psycopg2-binary "pyspark==${SPARK_VERSION}"
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
COPY config config
COPY dags /opt/feedstore/dags
USER feedstore

# the runtime image (the project and its runtime dependencies) plus Spark and Java
FROM runtime AS spark
COPY --from=spark-dist /opt/java/openjdk /opt/java/openjdk
COPY --from=spark-dist /opt/spark /opt/spark
ENV JAVA_HOME=/opt/java/openjdk SPARK_HOME=/opt/spark PYSPARK_PYTHON=/opt/venv/bin/python \
    SPARK_WORKER_DIR=/tmp/spark-work PATH=/opt/venv/bin:/opt/spark/bin:/opt/java/openjdk/bin:$PATH
