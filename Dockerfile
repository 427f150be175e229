# The feedstore image the compose services run: built once from the pinned locks, nothing installed at start.
#   docker compose build            (both targets)
# runtime: the CLI and the Feast feature server (requirements/demo.lock);
# airflow: + Airflow and the PostgreSQL driver (requirements/test.lock).
FROM python:3.11-slim AS base
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && useradd --create-home --uid 10001 feedstore
WORKDIR /opt/feedstore

FROM base AS runtime
COPY requirements/demo.lock requirements/demo.lock
RUN pip install -r requirements/demo.lock
COPY pyproject.toml README.md ./
COPY feedstore feedstore
COPY config config
COPY feature_repo feature_repo
COPY ingestion ingestion
COPY training_data training_data
COPY serving serving
RUN pip install --no-deps . && rm -rf build
USER feedstore

FROM base AS airflow
COPY requirements/test.lock requirements/test.lock
RUN pip install -r requirements/test.lock psycopg2-binary
COPY pyproject.toml README.md ./
COPY feedstore feedstore
COPY config config
COPY feature_repo feature_repo
COPY ingestion ingestion
COPY training_data training_data
COPY serving serving
RUN pip install --no-deps . && rm -rf build
COPY dags /opt/feedstore/dags
USER feedstore
