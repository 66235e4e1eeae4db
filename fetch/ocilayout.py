"""An OCI image layout directory as a source (``oci-layout:DIR:NAME``).

References read like skopeo's ``oci:`` transport:

* ``oci-layout:DIR:NAME``: the ``index.json`` entry whose
  ``org.opencontainers.image.ref.name`` annotation is ``NAME``. As in skopeo the text
  is split at the *first* ``:`` after the prefix, so ``DIR`` cannot hold a ``:`` and
  ``NAME`` may (``oci-layout:/srv/store:127.0.0.1:5000/app:v1`` names the image
  ``127.0.0.1:5000/app:v1``, which is how ingestq records pulled images);
* ``oci-layout:DIR@sha256:...``: the manifest or index with that digest (listed in
  ``index.json`` or only present under ``blobs/``);
* ``oci-layout:DIR``: the only entry of ``index.json``.

Blobs are plain files (``DIR/blobs/<alg>/<hex>``), so a child ingest uses the file
source (spec ``{"type": "file", "path": ...}``) and obeys the same file roots
(:attr:`~ingestq.fetch.options.FetchOptions.file_roots`) as any file ingest.

Every file of the layout (``oci-layout``, ``index.json``, the manifests and indexes
read here) is read through a :class:`~ingestq.fetch.files.FileSource` too: opened
beneath its file root without following a symlink, so a directory swapped for a
symlink while the layout is read is refused, never read outside the roots; and a
FIFO, socket, device or directory in place of one is InvalidArgument at once.

Errors: NotFound (no layout, no such name or digest, missing blob), InvalidArgument (a
malformed reference, ``index.json`` or ``oci-layout``, several entries and no name, a
layout file that is not a regular file), DataLoss (a blob whose bytes do not match its
digest), PermissionDenied (outside the allowed file roots, or a path that changed to a
symlink while it was opened), ResourceExhausted (a layout file over its size limit).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingestq import errdefs
from ingestq.fetch import manifests
from ingestq.fetch.files import FileSource, check_path
from ingestq.store.annotations import REF_NAME as REF_NAME_ANNOTATION
from ingestq.store.digest import ALGORITHMS, Digest
from ingestq.store.values import Descriptor

PREFIX = "oci-layout:"

# Upper bounds on what is read into memory: generous, far above real layouts.
_MARKER_LIMIT = 64 << 10
_INDEX_LIMIT = 64 << 20


def parse_layout_reference(text: str) -> tuple[str, str | None, Digest | None]:
    """Split ``oci-layout:DIR[:NAME|@DIGEST]`` into (dir, name, digest).

    InvalidArgument when the prefix is missing, the directory is empty, or the digest
    is malformed.
    """
    if not text.startswith(PREFIX):
        raise errdefs.InvalidArgument(f"{text!r} is not an oci-layout: reference")
    rest = text[len(PREFIX) :]
    directory, sep, name = rest.partition(":")
    digest: Digest | None = None
    at = directory.rfind("@")
    if at > 0 and sep and directory[at + 1 :] in ALGORITHMS:
        # ``DIR@sha256:hex``: the first ':' belongs to the digest.
        directory, digest = directory[:at], Digest.parse(f"{directory[at + 1 :]}:{name}")
        name = ""
    if not directory:
        raise errdefs.InvalidArgument(f"{text!r}: the layout directory must not be empty")
    return directory, (name or None), digest


class OCILayout:
    """Read access to one OCI image layout directory.

    Args:
        root: the layout directory.
        roots: the file roots it must lie in (None: anywhere); see
            :func:`ingestq.fetch.files.check_path`. Every file is read beneath them.
        use_openat2: False forces the portable component walk for those reads (see
            :class:`~ingestq.fetch.files.FileSource`).

    Raises NotFound when ``root/oci-layout`` is missing, InvalidArgument when it is not
    a layout of version 1.x (or not a regular file), PermissionDenied outside ``roots``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        roots: Sequence[Path] | None = None,
        *,
        use_openat2: bool = True,
    ) -> None:
        self._roots = None if roots is None else tuple(roots)
        self._use_openat2 = use_openat2
        self.root = check_path(os.path.abspath(os.fspath(root)), self._roots)
        marker = self.root / "oci-layout"
        doc = self._read_json(marker, _MARKER_LIMIT, "no oci-layout file")
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise errdefs.InvalidArgument(f"{marker}: unsupported imageLayoutVersion {version!r}")

    def _read(self, path: Path, limit: int) -> bytes:
        """At most ``limit + 1`` bytes of ``path``, opened beneath the file roots
        (the errors of :meth:`FileSource.open <ingestq.fetch.files.FileSource.open>`)."""
        opened = FileSource(path, self._roots, use_openat2=self._use_openat2).open()
        try:
            chunks: list[bytes] = []
            left = limit + 1
            while left > 0:
                chunk = opened.stream.read(min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            opened.stream.close()

    def _read_json(self, path: Path, limit: int, missing: str) -> Any:
        try:
            data = self._read(path, limit)
        except errdefs.NotFound:
            raise errdefs.NotFound(f"OCI layout {self.root}: {missing}") from None
        if len(data) > limit:
            raise errdefs.ResourceExhausted(f"{path} exceeds {limit} bytes")
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError included
            raise errdefs.InvalidArgument(f"{path}: not JSON: {e}") from e

    def entries(self) -> list[dict[str, Any]]:
        """The ``manifests`` array of ``index.json``."""
        path = self.root / "index.json"
        doc = self._read_json(path, _INDEX_LIMIT, "no index.json")
        entries = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise errdefs.InvalidArgument(f"{path}: manifests must be a list of descriptors")
        return entries

    def names(self) -> list[str]:
        """Every ``ref.name`` in ``index.json``, in order."""
        out = []
        for entry in self.entries():
            name = (entry.get("annotations") or {}).get(REF_NAME_ANNOTATION)
            if isinstance(name, str):
                out.append(name)
        return out

    def resolve(self, name: str | None = None, digest: Digest | None = None) -> Descriptor:
        """The descriptor of the image named ``name``, with ``digest``, or the only one.

        The ``ref.name`` annotation is dropped (so ingest refs depend on the digest
        only). NotFound / InvalidArgument as in the module docstring.
        """
        entries = self.entries()
        if digest is not None:
            for entry in entries:
                if entry.get("digest") == str(digest):
                    return _strip(Descriptor.from_oci(entry))
            data = self.read_blob(Descriptor(digest))
            media_type = manifests.sniff_media_type(data)
            if media_type is None:
                raise errdefs.InvalidArgument(
                    f"OCI layout {self.root}: {digest} is not a manifest or an index"
                )
            return Descriptor(digest=digest, size=len(data), media_type=media_type)
        if name is None:
            if len(entries) != 1:
                raise errdefs.InvalidArgument(
                    f"OCI layout {self.root} holds {len(entries)} images; name one "
                    f"(oci-layout:DIR:NAME)"
                )
            return _strip(Descriptor.from_oci(entries[0]))
        for entry in entries:
            if (entry.get("annotations") or {}).get(REF_NAME_ANNOTATION) == name:
                return _strip(Descriptor.from_oci(entry))
        raise errdefs.NotFound(f"image {name!r} in OCI layout {self.root}")

    def blob_path(self, digest: Digest) -> Path:
        """``root/blobs/<alg>/<hex>``."""
        return self.root / "blobs" / digest.algorithm / digest.encoded

    def read_blob(self, desc: Descriptor, limit: int = 4 << 20) -> bytes:
        """A small blob's bytes, verified against ``desc`` (size when known, digest).

        NotFound when missing, ResourceExhausted over ``limit``, DataLoss on mismatch,
        and the other errors of :meth:`FileSource.open <ingestq.fetch.files.FileSource.open>`.
        """
        try:
            data = self._read(self.blob_path(desc.digest), limit)
        except errdefs.NotFound as e:
            raise errdefs.NotFound(f"OCI layout {self.root}: blob {desc.digest}: {e}") from e
        if len(data) > limit:
            raise errdefs.ResourceExhausted(f"blob {desc.digest} exceeds {limit} bytes")
        manifests.verify(data, desc, f"OCI layout {self.root}: blob {desc.digest}")
        return data


def _strip(desc: Descriptor) -> Descriptor:
    annotations = {k: v for k, v in desc.annotations.items() if k != REF_NAME_ANNOTATION}
    return Descriptor(desc.digest, desc.size, desc.media_type, annotations, desc.urls)


class OCILayoutImage:
    """An image in an OCI layout, for a pull (an :class:`ingestq.images.request.ImageSource`).

    ``name`` is what the image is recorded as by default, saying where it came from:
    the reference with the layout's absolute directory, ``oci-layout:<dir>:<NAME>``
    (``NAME`` the reference's, else the only entry's own) or
    ``oci-layout:<dir>@<digest>``, and ``oci-layout:<dir>`` for an unnamed only entry.
    """

    kind = "oci-layout"

    def __init__(self, text: str, roots: Sequence[Path] | None = None) -> None:
        directory, self._name, self._digest = parse_layout_reference(text)
        self.layout = OCILayout(directory, roots)
        self._roots = roots

    @property
    def name(self) -> str:
        """The default image name (class docstring)."""
        where = f"{PREFIX}{self.layout.root}"
        if self._name:
            return f"{where}:{self._name}"
        if self._digest is not None:
            return f"{where}@{self._digest}"
        names = self.layout.names()
        return f"{where}:{names[0]}" if len(names) == 1 else where

    @property
    def distribution_source(self) -> tuple[str, str] | None:
        """Layouts have no registry: None (no distribution-source label)."""
        return None

    def resolve(self) -> Descriptor:
        return self.layout.resolve(self._name, self._digest)

    def fetch_manifest(self, desc: Descriptor) -> bytes:
        return self.layout.read_blob(desc)

    def blob_source(self, desc: Descriptor) -> FileSource:
        return FileSource(self.layout.blob_path(desc.digest), self._roots)

    def spec(self, desc: Descriptor) -> dict[str, Any]:
        """The job-argument form of :meth:`blob_source` (a file spec)."""
        return {"type": "file", "path": str(self.layout.blob_path(desc.digest))}


__all__ = ["PREFIX", "OCILayout", "OCILayoutImage", "parse_layout_reference"]
