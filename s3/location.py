"""Where an S3 store lives: :class:`S3Location` (``s3://BUCKET/PREFIX``) and every key
under its prefix::

    <prefix>/index.json                   the image records (an OCI index; see s3.images)
    <prefix>/blobs/<alg>/<hex>            committed blobs (published only once verified)
    <prefix>/meta/<alg>/<hex>.json        created_at, updated_at and labels of each blob
    <prefix>/ingests/<sha256(ref)>.json   an ingest: ref, total, expected, times, its
                                          multipart upload and the hash state at its
                                          last uploaded part
    <prefix>/ingests/<sha256(ref)>.tail   the ingest's bytes after its last part (below
                                          the minimum part size), kept when a writer closes
    <prefix>/staging/<sha256(ref)>-<id>   the object an ingest with no expected digest
                                          uploads to, copied to its blob key at commit
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ingestq import errdefs
from ingestq.store.digest import Digest
from ingestq.store.layout import ref_key


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing ``/``; may be empty)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Parse ``s3://BUCKET[/PREFIX]``. InvalidArgument for another scheme or no bucket."""
        try:
            parts = urlsplit(url)
        except ValueError as e:  # e.g. an unclosed "[" in the host
            raise errdefs.InvalidArgument(f"store URL {url!r}: {e}") from e
        if parts.scheme != "s3" or not parts.netloc:
            raise errdefs.InvalidArgument(f"store URL {url!r} is not s3://BUCKET[/PREFIX]")
        return cls(parts.netloc, parts.path.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        """``<prefix>/<parts...>``."""
        return "/".join((self.prefix, *parts) if self.prefix else parts)

    @property
    def blobs(self) -> str:
        """The prefix every blob key starts with (ends with ``/``)."""
        return self.key("blobs") + "/"

    @property
    def ingests(self) -> str:
        """The prefix every ingest key starts with (ends with ``/``)."""
        return self.key("ingests") + "/"

    def blob(self, digest: Digest) -> str:
        """The key of a committed blob."""
        return self.key("blobs", digest.algorithm, digest.encoded)

    def meta(self, digest: Digest) -> str:
        """The key of a blob's metadata object."""
        return self.key("meta", digest.algorithm, f"{digest.encoded}.json")

    def ingest(self, ref: str) -> str:
        """The key of ``ref``'s ingest record."""
        return self.key("ingests", f"{ref_key(ref)}.json")

    def tail(self, ref: str) -> str:
        """The key of ``ref``'s buffered tail."""
        return self.key("ingests", f"{ref_key(ref)}.tail")

    def staging(self, ref: str, upload: str) -> str:
        """The key an ingest of unknown digest uploads to."""
        return self.key("staging", f"{ref_key(ref)}-{upload}")

    def digest_of_blob_key(self, key: str) -> Digest | None:
        """The digest a blob key names, or None for any other key."""
        rest = key[len(self.blobs) :] if key.startswith(self.blobs) else ""
        alg, _, encoded = rest.partition("/")
        try:
            return Digest(alg, encoded) if alg and encoded else None
        except errdefs.InvalidArgument:
            return None


__all__ = ["S3Location"]
