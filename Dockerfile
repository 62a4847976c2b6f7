# syntax=docker/dockerfile:1
# The airflow-asset-sync image: one image for the operator and the workers it creates
# (`airflow-asset-sync operator` / `airflow-asset-sync worker`; the chart and the operator
# pass the subcommand as args).
#
#   docker build -t airflow-asset-sync:0.1.0.dev0 .
#   docker build --build-arg BASE=my-registry/python:3.11-slim -t ... .   (a mirrored base)
#
# Stage 1 builds the project's wheel and installs it with the pinned runtime dependencies
# (requirements/runtime.lock, binary wheels only) into a virtualenv. Stage 2 is a clean
# python:3.11-slim with that virtualenv and nothing else: no build tools, no sources, no pip
# cache, a numeric non-root user (the chart and the worker pods run with runAsNonRoot).
# BASE is any Debian-like image with Python 3.11, venv and pip: the official one by default,
# a mirror of it, or the test rig's own debootstrap image (no registry is reachable there).

ARG BASE=python:3.11-slim

FROM ${BASE} AS build

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
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
    && /opt/venv/bin/airflow-asset-sync version

# The runtime UID needs a passwd entry: kopf names its peering identity after
# getpass.getuser(), which raises KeyError for a UID that /etc/passwd does not know (the
# operator crashed at start without one). Added here, copied into the final stage below, so
# that stage still runs nothing.
RUN groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot

FROM ${BASE}

LABEL org.opencontainers.image.title="airflow-asset-sync" \
      org.opencontainers.image.description="Keeps Apache Airflow asset events in sync between Airflow deployments" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=build /opt/venv /opt/venv
COPY --from=build /etc/passwd /etc/group /etc/

# 65532 ("nonroot" in distroless images): numeric, so Kubernetes can verify runAsNonRoot.
USER 65532:65532
WORKDIR /tmp

ENTRYPOINT ["airflow-asset-sync"]
CMD ["--help"]
