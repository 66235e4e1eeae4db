"""The S3 store: the store protocols on S3-compatible object storage
(:class:`~ingestq.s3.store.S3Store`), selected with ``INGESTQ_STORE=s3://BUCKET/PREFIX``
and the usual AWS environment. Imports errdefs and store; its only third-party
dependency, boto3, is the optional extra ``ingestq[s3]`` and is imported when a client
is made (:func:`open_s3_store`), so this package imports without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ingestq.s3.location import S3Location
from ingestq.s3.store import S3ReaderAt, S3Store, S3Writer
from ingestq.store.budget import Budget
from ingestq.store.locks import RefLocker


def open_s3_store(
    url: str,
    root: str | Path,
    locker: RefLocker | None = None,
    env: Mapping[str, str] | None = None,
    budget: Budget | None = None,
) -> S3Store:
    """The S3 store at ``url`` (``s3://BUCKET[/PREFIX]``) with a client from the AWS
    environment ``env`` (see :func:`ingestq.s3.client.make_client`), ``root`` for what
    stays local, ``locker`` for the ref locks and ``budget`` (see :class:`S3Store`).
    InvalidArgument for a bad URL, FailedPrecondition without boto3 (``pip install
    'ingestq[s3]'``), Unimplemented for a ``min_free`` budget."""
    from ingestq.s3.client import make_client

    location = S3Location.parse(url)
    return S3Store(location, make_client(env), root, locker=locker, budget=budget)


__all__ = ["S3Location", "S3ReaderAt", "S3Store", "S3Writer", "open_s3_store"]
