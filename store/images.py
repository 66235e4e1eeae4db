"""Image records: the store root as an OCI image layout, ``oci-layout`` and an
``index.json`` of named images.

An image record is a name mapped to the descriptor of its root (a manifest or an
index). Each record is one entry of ``index.json``, named by the descriptor annotation
``org.opencontainers.image.ref.name``, so tools that read OCI layouts (skopeo, umoci)
find it. What the OCI descriptor has no field for rides in annotations of that entry
(names in :mod:`store.annotations`):

* the image's labels as ``io.ingestq.image.label.<key>``;
* its creation and update times as ``io.ingestq.image.created-at`` / ``updated-at``
  (RFC 3339); entries written without them (e.g. by a pull) report the file's
  modification time.

The remaining annotations are the target's own. :class:`ImageIndex` keeps the file
consistent between threads and processes (a lock file, and atomic replacement).
Errors: DataLoss for an ``index.json`` that is not an OCI index, NotFound, AlreadyExists,
InvalidArgument; OSError is mapped to its kind (PermissionDenied, ResourceExhausted, ...).
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ingestq import errdefs
from ingestq.store.annotations import (
    IMAGE_CREATED_AT,
    IMAGE_LABEL_PREFIX,
    IMAGE_UPDATED_AT,
    REF_NAME,
)
from ingestq.store.atomic import write_json
from ingestq.store.layout import RootLayout
from ingestq.store.lockfile import held
from ingestq.store.oserrors import from_os_error
from ingestq.store.ownfiles import read_record
from ingestq.store.values import Descriptor, utcnow

#: The largest ``index.json`` read; a longer one is DataLoss.
MAX_INDEX_FILE = 64 << 20

LAYOUT_VERSION = "1.0.0"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


def ensure_layout(layout: RootLayout) -> None:
    """Create ``oci-layout`` and an empty ``index.json`` if they are missing. Raises OSError."""
    if not layout.oci_layout.exists():
        write_json(layout.oci_layout, {"imageLayoutVersion": LAYOUT_VERSION})
    if not layout.index.exists():
        with _index_lock(layout):
            if not layout.index.exists():
                write_json(layout.index, _empty_index())


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}


@contextmanager
def _index_lock(layout: RootLayout) -> Iterator[None]:
    layout.locks.mkdir(parents=True, exist_ok=True)
    with held(layout.index_lock, what=f"lock {layout.index}"):
        yield


_Entries = list[Any]


def _name_of(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return None
    annotations = entry.get("annotations")
    if not isinstance(annotations, dict):
        return None
    name = annotations.get(REF_NAME)
    return name if isinstance(name, str) else None


@dataclass(frozen=True)
class ImageRecord:
    """A named image: its target descriptor, labels and record times."""

    name: str
    target: Descriptor
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


def record_to_entry(record: ImageRecord) -> Descriptor:
    """The ``index.json`` descriptor that stores ``record`` (labels and times as
    annotations; :meth:`ImageIndex.put` adds the ref name)."""
    annotations = {k: v for k, v in record.target.annotations.items() if k != REF_NAME}
    annotations.update({IMAGE_LABEL_PREFIX + k: v for k, v in record.labels.items()})
    annotations[IMAGE_CREATED_AT] = record.created_at.isoformat()
    annotations[IMAGE_UPDATED_AT] = record.updated_at.isoformat()
    t = record.target
    return Descriptor(t.digest, t.size, t.media_type, annotations, t.urls)


def record_from_entry(name: str, entry: Descriptor, fallback: datetime) -> ImageRecord:
    """The record an ``index.json`` entry stores (see :func:`record_to_entry`); times
    missing or unreadable in the entry read as ``fallback``."""
    labels: dict[str, str] = {}
    target_annotations: dict[str, str] = {}
    times: dict[str, datetime] = {}
    for key, value in entry.annotations.items():
        if key.startswith(IMAGE_LABEL_PREFIX):
            labels[key[len(IMAGE_LABEL_PREFIX) :]] = value
        elif key in (IMAGE_CREATED_AT, IMAGE_UPDATED_AT):
            try:
                times[key] = datetime.fromisoformat(value)
            except ValueError:
                times[key] = fallback
        elif key != REF_NAME:
            target_annotations[key] = value
    target = Descriptor(entry.digest, entry.size, entry.media_type, target_annotations, entry.urls)
    return ImageRecord(
        name=name,
        target=target,
        labels=labels,
        created_at=times.get(IMAGE_CREATED_AT, fallback),
        updated_at=times.get(IMAGE_UPDATED_AT, times.get(IMAGE_CREATED_AT, fallback)),
    )


class ImageIndex:
    """Named images in the layout's ``index.json`` (name -> the image's root descriptor).

    Creates ``oci-layout`` and ``index.json`` when missing. Every change is a locked
    read-modify-write with an atomic replace, so concurrent writers (threads or
    processes) never lose each other's entries or leave a torn file.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.layout = RootLayout(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            ensure_layout(self.layout)
        except OSError as e:
            raise from_os_error(e, f"open OCI layout {self.root}") from e

    @property
    def path(self) -> Path:
        """The ``index.json`` file."""
        return self.layout.index

    def _load(self) -> dict[str, Any]:
        raw = read_record(self.path, MAX_INDEX_FILE, f"read {self.path}")
        if raw is None:
            return _empty_index()
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise errdefs.DataLoss(f"read {self.path}: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("manifests"), list):
            raise errdefs.DataLoss(f"{self.path} is not an OCI image index")
        return data

    def modified_at(self) -> datetime:
        """When ``index.json`` last changed (now if it cannot be read): the time of
        records written without times of their own."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return utcnow()
        return datetime.fromtimestamp(mtime, UTC)

    def list(self) -> list[tuple[str, Descriptor]]:
        """Every named image as (name, descriptor), in file order. DataLoss for a
        damaged index; unnamed entries are skipped."""
        out = []
        for entry in self._load()["manifests"]:
            name = _name_of(entry)
            if not name:
                continue
            try:
                out.append((name, Descriptor.from_oci(entry)))
            except errdefs.InvalidArgument as e:
                raise errdefs.DataLoss(f"{self.path}: entry {name!r}: {e}") from e
        return out

    def get(self, name: str) -> Descriptor:
        """The descriptor recorded for ``name``; NotFound if there is none."""
        for n, desc in self.list():
            if n == name:
                return desc
        raise errdefs.NotFound(f"image {name}")

    def records(self) -> builtins.list[ImageRecord]:
        """Every named image as an :class:`ImageRecord`, in file order. DataLoss for a
        damaged index."""
        fallback = self.modified_at()
        return [record_from_entry(n, d, fallback) for n, d in self.list()]

    def record(self, name: str) -> ImageRecord:
        """The record of ``name``; NotFound ``image <name>`` if there is none."""
        return record_from_entry(name, self.get(name), self.modified_at())

    def put(self, name: str, desc: Descriptor) -> None:
        """Record ``desc`` under ``name``, replacing an earlier entry of that name.
        InvalidArgument for an empty name."""
        entry = self._entry(name, desc)
        self._change(lambda ms: [m for m in ms if _name_of(m) != name] + [entry], name)

    def put_record(self, record: ImageRecord) -> None:
        """Store ``record``, replacing an earlier record of its name. InvalidArgument
        for an empty name."""
        self.put(record.name, record_to_entry(record))

    def add_record(self, record: ImageRecord) -> None:
        """Store a new ``record``; AlreadyExists ``image "<name>"`` if the name is taken
        (checked and written under the index lock, so one of two racing adds wins).
        InvalidArgument for an empty name."""
        entry = self._entry(record.name, record_to_entry(record))

        def add(ms: _Entries) -> _Entries:
            if any(_name_of(m) == record.name for m in ms):
                raise errdefs.AlreadyExists(f'image "{record.name}"')
            return [*ms, entry]

        self._change(add, record.name)

    def remove(self, name: str) -> None:
        """Forget ``name``; NotFound if it is not recorded."""

        def drop(ms: _Entries) -> _Entries:
            kept = [m for m in ms if _name_of(m) != name]
            if len(kept) == len(ms):
                raise errdefs.NotFound(f"image {name}")
            return kept

        self._change(drop, name)

    @staticmethod
    def _entry(name: str, desc: Descriptor) -> dict[str, object]:
        if not name:
            raise errdefs.InvalidArgument("image name must not be empty")
        entry = desc.to_oci()
        entry["annotations"] = {**desc.annotations, REF_NAME: name}
        return entry

    def _change(self, fn: Callable[[_Entries], _Entries], name: str) -> None:
        try:
            with _index_lock(self.layout):
                data = self._load()
                data["manifests"] = fn(data["manifests"])
                write_json(self.path, data, limit=MAX_INDEX_FILE)
        except OSError as e:
            raise from_os_error(e, f"update {self.path} for {name}") from e


@runtime_checkable
class KeepsImageIndex(Protocol):
    """A store that keeps its image records itself (the S3 store, in its bucket)."""

    def image_index(self) -> ImageIndex:
        """The store's image index."""
        ...


def image_index_of(store: object, root: str | os.PathLike[str]) -> ImageIndex:
    """The image records of ``store``: its own index when it keeps one
    (:class:`KeepsImageIndex`), else ``index.json`` under ``root``."""
    if isinstance(store, KeepsImageIndex):
        return store.image_index()
    return ImageIndex(root)


__all__ = [
    "INDEX_MEDIA_TYPE",
    "LAYOUT_VERSION",
    "ImageIndex",
    "ImageRecord",
    "KeepsImageIndex",
    "ensure_layout",
    "image_index_of",
    "record_from_entry",
    "record_to_entry",
]
