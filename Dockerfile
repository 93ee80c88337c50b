# syntax=docker/dockerfile:1
# kleer-sync: one image for every process (`kleer-sync inbound`, `... outbound poller`, ...).
#
#   docker build -t kleer-sync:0.1.0 .
#
# The base is pinned to an exact Python and Debian release. For byte-for-byte
# reproducible builds also pin its digest, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm` prints it).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: wheels for kleer-sync and every dependency --------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# README.md is the package's long description (pyproject.toml `readme`); the glob keeps
# the build working before it exists.
COPY pyproject.toml README.md* ./
COPY libs ./libs
COPY services ./services
COPY sim ./sim
# With the uvloop extra, so EVENT_LOOP=uvloop works in the image too.
RUN pip wheel --wheel-dir /wheels '.[uvloop]'

# --- runtime: slim, no compilers, no sources, non-root ----------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kleer-sync" \
      org.opencontainers.image.description="Two-way sync between Kleer and HubSpot around a Postgres event log" \
      org.opencontainers.image.version="${VERSION}"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8080 \
    METRICS_PORT=9102

# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it (runAsUser 10001
# in deploy/k8s) and file ownership is the same on every node.
RUN groupadd --system --gid 10001 kleer \
 && useradd --system --uid 10001 --gid kleer --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin kleer

# Install from the build stage's wheels only (no index): what was built is what runs.
# pip compiles the bytecode now, as root, so a read-only root filesystem is fine later.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels 'kleer-sync[uvloop]' \
 && kleer-sync --help > /dev/null

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9102

ENTRYPOINT ["kleer-sync"]
CMD ["--help"]
