# The broker image: `broker serve` by default; compose.yaml also runs it as `broker worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: the persistence worker keeps the message archive in a Git repository (GitPython).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the package is built from (pyproject.toml names README.md as its readme).
COPY pyproject.toml README.md LICENSE ./
COPY broker ./broker
COPY workers ./workers
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /data --no-create-home broker \
 && mkdir -p /data \
 && chown broker /data

USER broker
WORKDIR /data
ENV STORAGE_ROOT=/data
EXPOSE 8765
CMD ["broker", "serve", "--host", "0.0.0.0", "--port", "8765"]
