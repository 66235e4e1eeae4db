"""The S3 requests the store makes, each mapped to errdefs kinds by
:func:`ingestq.s3.errors.from_s3_error`: :class:`Bucket`."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ingestq import errdefs
from ingestq.s3.errors import from_s3_error
from ingestq.s3.records import Part

#: The largest object CopyObject copies in one request; larger ones are copied in parts.
MAX_COPY = 5 * 1024**3
#: Part size of a multipart copy.
COPY_PART = 512 * 1024**2
#: Attempts of a conditional change (:meth:`Bucket.change`) that keeps losing races.
CHANGE_ATTEMPTS = 20


@dataclass(frozen=True)
class ObjectInfo:
    """A listed or HEADed object: key, size, last modification, ETag."""

    key: str
    size: int
    modified: datetime
    etag: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)  # x-amz-meta-* (HEAD only)
    served: datetime | None = None  # the server's clock when it answered (GET/HEAD only)


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


def _served(resp: Mapping[str, Any]) -> datetime | None:
    """The time in a response's ``Date`` header: the server's clock, in whole seconds."""
    date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not date:
        return None
    try:
        return parsedate_to_datetime(str(date))
    except (TypeError, ValueError):
        return None


class Bucket:
    """One bucket through one boto3 client. Every method raises errdefs kinds only."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> tuple[bytes, str]:
        """The object's bytes (or the inclusive ``byte_range``) and its ETag. NotFound."""
        kwargs: dict[str, Any] = {"Bucket": self.name, "Key": key}
        if byte_range is not None:
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        try:
            resp = self.client.get_object(**kwargs)
            body = resp["Body"]
            try:
                return body.read(), _etag(resp.get("ETag"))
            finally:
                body.close()
        except Exception as e:
            raise from_s3_error(e, f"get {key}") from e

    def get_or_none(self, key: str) -> tuple[bytes, str] | None:
        """:meth:`get`, or None when the object does not exist (NotFound still when
        the bucket does not)."""
        try:
            return self.get(key)
        except errdefs.NotFound as e:
            if e.details.get("s3_code") == "NoSuchBucket":
                raise
            return None

    def read(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        """The object's bytes and its size, time and ETag; None when it does not exist
        (NotFound still when the bucket does not)."""
        try:
            resp = self.client.get_object(Bucket=self.name, Key=key)
            body = resp["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except Exception as e:
            err = from_s3_error(e, f"get {key}")
            if isinstance(err, errdefs.NotFound) and err.details.get("s3_code") != "NoSuchBucket":
                return None
            raise err from e
        return data, ObjectInfo(
            key, len(data), resp["LastModified"], _etag(resp.get("ETag")), served=_served(resp)
        )

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size, time and ETag, or None when it does not exist."""
        try:
            resp = self.client.head_object(Bucket=self.name, Key=key)
        except Exception as e:
            err = from_s3_error(e, f"head {key}")
            if isinstance(err, errdefs.NotFound) and err.details.get("s3_code") != "NoSuchBucket":
                return None
            raise err from e
        return ObjectInfo(
            key,
            int(resp["ContentLength"]),
            resp["LastModified"],
            _etag(resp.get("ETag")),
            dict(resp.get("Metadata") or {}),
            _served(resp),
        )

    def put(
        self,
        key: str,
        body: bytes | bytearray | memoryview,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Write the object (with user ``metadata``, ``x-amz-meta-*``); returns its ETag.
        With ``if_none_match`` only if it does not exist (AlreadyExists otherwise); with
        ``if_match`` only if its ETag is that (FailedPrecondition otherwise)."""
        kwargs: dict[str, Any] = {"Bucket": self.name, "Key": key, "Body": bytes(body)}
        if metadata:
            kwargs["Metadata"] = dict(metadata)
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            # Unquoted: radosgw compares the header byte for byte with the ETag it
            # stores (unquoted), so a quoted one never matches there. SeaweedFS
            # accepts both spellings (both tested); AWS S3 and MinIO are not tested.
            kwargs["IfMatch"] = if_match
        try:
            return _etag(self.client.put_object(**kwargs).get("ETag"))
        except Exception as e:
            raise from_s3_error(e, f"put {key}", publish=if_none_match) from e

    def change(
        self,
        key: str,
        fn: Callable[[tuple[bytes, ObjectInfo] | None], bytes | None],
        what: str,
        *,
        attempts: int = CHANGE_ATTEMPTS,
    ) -> bytes | None:
        """Read-modify-write of one object that never loses a concurrent change: ``fn``
        gets its bytes and info (None when it does not exist) and returns the new bytes
        (None: leave it as it is). The write is conditional on the ETag read
        (``If-Match``; ``If-None-Match: *`` for a new object); one that loses a race
        (412) reads again and calls ``fn`` again after a jittered pause, up to
        ``attempts`` times, then Unavailable naming ``what``. What ``fn`` raises
        propagates. Returns the bytes written (None when ``fn`` left it)."""
        for attempt in range(attempts):
            found = self.read(key)
            body = fn(found)
            if body is None:
                return None
            etag = found[1].etag if found is not None else None
            try:
                self.put(key, body, if_none_match=etag is None, if_match=etag)
                return body
            except (errdefs.FailedPrecondition, errdefs.AlreadyExists):
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
        raise errdefs.Unavailable(f"{what}: too many concurrent changes of {key}")

    def delete(self, key: str) -> None:
        """Delete the object (deleting a missing one is fine)."""
        try:
            self.client.delete_object(Bucket=self.name, Key=key)
        except Exception as e:
            err = from_s3_error(e, f"delete {key}")
            if not isinstance(err, errdefs.NotFound):
                raise err from e

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in key order (ListObjectsV2, paginated)."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents") or ():
                    yield ObjectInfo(
                        obj["Key"], int(obj["Size"]), obj["LastModified"], _etag(obj.get("ETag"))
                    )
        except Exception as e:
            raise from_s3_error(e, f"list {prefix}") from e

    # multipart ---------------------------------------------------------------------------
    def create_upload(self, key: str) -> str:
        """Start a multipart upload to ``key``; returns its id."""
        try:
            return str(self.client.create_multipart_upload(Bucket=self.name, Key=key)["UploadId"])
        except Exception as e:
            raise from_s3_error(e, f"create upload {key}") from e

    def upload_part(
        self, key: str, upload: str, number: int, body: bytes | bytearray | memoryview
    ) -> str:
        """Upload part ``number`` (replacing one of that number); returns its ETag. A
        bytearray ``body`` is sent as it is (not copied): it must not change meanwhile."""
        if isinstance(body, memoryview):
            body = bytes(body)
        try:
            resp = self.client.upload_part(
                Bucket=self.name, Key=key, UploadId=upload, PartNumber=number, Body=body
            )
            return _etag(resp.get("ETag"))
        except Exception as e:
            raise from_s3_error(e, f"upload part {number} of {key}") from e

    def list_parts(self, key: str, upload: str) -> dict[int, set[Part]]:
        """The parts the server holds for an upload, by number. A number may hold
        several: SeaweedFS keeps every upload of a part number (and completes with the
        one whose ETag it is given); S3 keeps the last. NotFound when the upload is
        gone."""
        parts: dict[int, set[Part]] = {}
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.name, Key=key, UploadId=upload
            )
            for page in pages:
                for p in page.get("Parts") or ():
                    n = int(p["PartNumber"])
                    parts.setdefault(n, set()).add(Part(n, int(p["Size"]), _etag(p.get("ETag"))))
        except Exception as e:
            raise from_s3_error(e, f"list parts of {key}") from e
        return parts

    def complete_upload(
        self, key: str, upload: str, parts: Sequence[Part], *, if_none_match: bool = False
    ) -> None:
        """Complete the upload from exactly ``parts`` (their ETags checked by the server).
        With ``if_none_match`` only if ``key`` does not exist (AlreadyExists)."""
        kwargs: dict[str, Any] = {
            "Bucket": self.name,
            "Key": key,
            "UploadId": upload,
            "MultipartUpload": {
                "Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in parts]
            },
        }
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        try:
            self.client.complete_multipart_upload(**kwargs)
        except Exception as e:
            raise from_s3_error(e, f"complete upload of {key}", publish=if_none_match) from e

    def abort_upload(self, key: str, upload: str) -> None:
        """Abort the upload and drop its parts (an upload already gone is fine)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload)
        except Exception as e:
            err = from_s3_error(e, f"abort upload of {key}")
            if not isinstance(err, errdefs.NotFound):
                raise err from e

    def uploads(self, prefix: str) -> list[tuple[str, str]]:
        """``(key, upload id)`` of every multipart upload in progress under ``prefix``."""
        found: list[tuple[str, str]] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.name, Prefix=prefix
            )
            for page in pages:
                found += [(u["Key"], u["UploadId"]) for u in page.get("Uploads") or ()]
        except Exception as e:
            raise from_s3_error(e, f"list uploads under {prefix}") from e
        return found

    def uploads_started(self, prefix: str) -> list[tuple[str, str, datetime]]:
        """``(key, upload id, initiated)`` of every multipart upload in progress under
        ``prefix``."""
        found: list[tuple[str, str, datetime]] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.name, Prefix=prefix
            )
            for page in pages:
                found += [
                    (u["Key"], u["UploadId"], u["Initiated"]) for u in page.get("Uploads") or ()
                ]
        except Exception as e:
            raise from_s3_error(e, f"list uploads under {prefix}") from e
        return found

    def copy_new(self, src: str, dst: str, size: int) -> None:
        """Copy ``src`` to ``dst`` on the server, only if ``dst`` does not exist
        (AlreadyExists). Objects over 5 GiB are copied as a multipart upload."""
        source = {"Bucket": self.name, "Key": src}
        try:
            if size <= MAX_COPY:
                self.client.copy_object(
                    Bucket=self.name, Key=dst, CopySource=source, IfNoneMatch="*"
                )
                return
        except Exception as e:
            raise from_s3_error(e, f"copy {src} to {dst}", publish=True) from e
        upload = self.create_upload(dst)
        try:
            parts = []
            for i, lo in enumerate(range(0, size, COPY_PART), start=1):
                hi = min(lo + COPY_PART, size) - 1
                try:
                    resp = self.client.upload_part_copy(
                        Bucket=self.name,
                        Key=dst,
                        UploadId=upload,
                        PartNumber=i,
                        CopySource=source,
                        CopySourceRange=f"bytes={lo}-{hi}",
                    )
                except Exception as e:
                    raise from_s3_error(e, f"copy part {i} of {src}") from e
                parts.append(Part(i, hi - lo + 1, _etag(resp["CopyPartResult"]["ETag"])))
            self.complete_upload(dst, upload, parts, if_none_match=True)
        except BaseException:
            self.abort_upload(dst, upload)
            raise


__all__ = ["CHANGE_ATTEMPTS", "Bucket", "ObjectInfo"]
