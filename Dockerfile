# The ingestq image: the CLI, the worker and the gRPC server in one package.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
# The one import package: ingestq/ holds the public API and relative symlinks
# ingestq/<pkg> -> ../<pkg> (COPY keeps them), so every package folder is copied beside
# it, in layer order (tests/test_packaging.py builds the wheel from exactly these lines).
COPY ingestq ./ingestq
COPY errdefs ./errdefs
COPY store ./store
COPY s3 ./s3
COPY fetch ./fetch
COPY ingest ./ingest
COPY images ./images
COPY jobs ./jobs
COPY tasks ./tasks
COPY api ./api
COPY worker ./worker
# The s3 extra (boto3) lets the image use an S3 store (INGESTQ_STORE=s3://...).
RUN pip install ".[s3]" && useradd --uid 1000 --create-home ingestq \
    && mkdir -p /store /var/lib/ingestq/locks && chown ingestq /store /var/lib/ingestq/locks

USER ingestq
WORKDIR /home/ingestq
CMD ["ingestq", "--help"]
