# The ingestq image: the CLI, the worker and the gRPC server in one package.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingestq ./ingestq
COPY errdefs ./errdefs
COPY store ./store
COPY tasks ./tasks
COPY worker ./worker
COPY api ./api
RUN pip install . && useradd --uid 1000 --create-home ingestq \
    && mkdir -p /store /var/lib/ingestq/locks && chown ingestq /store /var/lib/ingestq/locks

USER ingestq
WORKDIR /home/ingestq
CMD ["ingestq", "--help"]
