# syntax=docker/dockerfile:1
# The airflow-asset-sync image: one image for the operator and the workers it creates
# (`airflow-asset-sync operator` / `airflow-asset-sync worker`; the chart and the operator
# pass the subcommand as args).
#
#   docker build -t airflow-asset-sync:0.1.0.dev0 .
#
# Stage 1 builds the project's wheel and installs it with the pinned runtime dependencies
# (requirements/runtime.lock, binary wheels only) into a virtualenv. Stage 2 is a clean
# python:3.11-slim with that virtualenv and nothing else: no build tools, no sources, no pip
# cache, a numeric non-root user (the chart and the worker pods run with runAsNonRoot).

FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements/runtime.lock requirements/runtime.lock
# Exactly the lock (no resolver, no surprise upgrades); wheels only, so no compiler is needed
# and a dependency without a wheel for this platform fails the build instead of compiling.
RUN /opt/venv/bin/pip install --no-deps --only-binary=:all: -r requirements/runtime.lock

COPY pyproject.toml README.md LICENSE ./
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
    && /opt/venv/bin/airflow-asset-sync version

FROM python:3.11-slim

LABEL org.opencontainers.image.title="airflow-asset-sync" \
      org.opencontainers.image.description="Keeps Apache Airflow asset events in sync between Airflow deployments" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=build /opt/venv /opt/venv

# 65532 ("nonroot" in distroless images): numeric, so Kubernetes can verify runAsNonRoot.
USER 65532:65532
WORKDIR /tmp

ENTRYPOINT ["airflow-asset-sync"]
CMD ["--help"]
