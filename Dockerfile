# dora-forwarder: Celery workers that forward incident events from a Redis stream to
# Datadog's DORA Metrics API.
#
# Build:  docker build -t dora-forwarder .
# Run:    docker run --rm -e DD_API_KEY=... -e FORWARDER_REDIS_URL=redis://host:6379/0 dora-forwarder
#         (default command: one worker with an embedded beat, for a single machine; for a
#         fleet, see docker-compose.yml: `celery -A workers worker` + one `celery -A workers beat`,
#         and `celery -A workers flower` for the optional web monitor)
#
# Configuration comes only from environment variables: DD_API_KEY (required by workers),
# DD_SITE, FORWARDER_API_URL, FORWARDER_REDIS_URL and the FORWARDER_* tunables; .env.example
# lists them all.

# --- build: install the project and its dependencies into a self-contained venv ---------
FROM python:3.12-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
# The whole context (trimmed by .dockerignore): pyproject.toml names README.md as the readme,
# so it must be present for the build.
COPY . .
# With the `flower` extra: compose's optional monitor runs from this same image, so it always
# matches the workers' Celery version and task names. It costs a few MB in every image.
RUN pip install --no-cache-dir ".[flower]"

# --- runtime: the venv only, no sources, no build leftovers -----------------------------
FROM python:3.12-slim

LABEL org.opencontainers.image.title="dora-forwarder" \
      org.opencontainers.image.description="Forwards incident events from Redis to Datadog's DORA Metrics API via Celery workers" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH="/opt/venv/bin:${PATH}"

# Fixed numeric ids so orchestrators that insist on a non-root UID (runAsNonRoot) can check it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --create-home --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv

# Writable working directory: beat (standalone or embedded with `dora-forwarder worker`)
# keeps its celerybeat-schedule file in the current directory.
WORKDIR /app
USER 10001:10001

# A worker's Prometheus metrics (FORWARDER_METRICS_PORT, /metrics). Documentation for
# `docker run -P` and orchestrators; nothing is published unless asked for.
EXPOSE 9641

# Exec form: the process gets SIGTERM directly, so Celery does a warm shutdown.
CMD ["dora-forwarder", "worker"]
