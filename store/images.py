"""The store root as an OCI image layout: ``oci-layout`` and an ``index.json`` of named images.

Tools that read OCI layouts (skopeo, umoci) find an image by the descriptor annotation
``org.opencontainers.image.ref.name``. :class:`ImageIndex` keeps that file consistent
between threads and processes (a lock file, and atomic replacement). Errors: DataLoss for
an ``index.json`` that is not an OCI index, NotFound, InvalidArgument; OSError is mapped
to its kind (PermissionDenied, ResourceExhausted, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingestq import errdefs
from ingestq.store.annotations import REF_NAME
from ingestq.store.atomic import write_json
from ingestq.store.lockfile import LockFile
from ingestq.store.oserrors import from_os_error
from ingestq.store.values import Descriptor

LAYOUT_VERSION = "1.0.0"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


def ensure_layout(root: Path) -> None:
    """Create ``oci-layout`` and an empty ``index.json`` if they are missing. Raises OSError."""
    layout = root / "oci-layout"
    if not layout.exists():
        write_json(layout, {"imageLayoutVersion": LAYOUT_VERSION})
    index = root / "index.json"
    if not index.exists():
        with _index_lock(root):
            if not index.exists():
                write_json(index, _empty_index())


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}


@contextmanager
def _index_lock(root: Path) -> Iterator[None]:
    (root / "locks").mkdir(parents=True, exist_ok=True)
    lock = LockFile(root / "locks" / "index.json.lock")
    lock.acquire(blocking=True)
    try:
        yield
    finally:
        lock.release()


_Entries = list[Any]


def _name_of(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return None
    annotations = entry.get("annotations")
    if not isinstance(annotations, dict):
        return None
    name = annotations.get(REF_NAME)
    return name if isinstance(name, str) else None


class ImageIndex:
    """Named images in the layout's ``index.json`` (name -> the image's root descriptor).

    Creates ``oci-layout`` and ``index.json`` when missing. Every change is a locked
    read-modify-write with an atomic replace, so concurrent writers (threads or
    processes) never lose each other's entries or leave a torn file.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            ensure_layout(self.root)
        except OSError as e:
            raise from_os_error(e, f"open OCI layout {self.root}") from e

    @property
    def path(self) -> Path:
        """The ``index.json`` file."""
        return self.root / "index.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _empty_index()
        except OSError as e:
            raise from_os_error(e, f"read {self.path}") from e
        except ValueError as e:
            raise errdefs.DataLoss(f"read {self.path}: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("manifests"), list):
            raise errdefs.DataLoss(f"{self.path} is not an OCI image index")
        return data

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

    def put(self, name: str, desc: Descriptor) -> None:
        """Record ``desc`` under ``name``, replacing an earlier entry of that name.
        InvalidArgument for an empty name."""
        if not name:
            raise errdefs.InvalidArgument("image name must not be empty")
        entry = desc.to_oci()
        entry["annotations"] = {**desc.annotations, REF_NAME: name}
        self._change(lambda ms: [m for m in ms if _name_of(m) != name] + [entry], name)

    def remove(self, name: str) -> None:
        """Forget ``name``; NotFound if it is not recorded."""

        def drop(ms: _Entries) -> _Entries:
            kept = [m for m in ms if _name_of(m) != name]
            if len(kept) == len(ms):
                raise errdefs.NotFound(f"image {name}")
            return kept

        self._change(drop, name)

    def _change(self, fn: Callable[[_Entries], _Entries], name: str) -> None:
        try:
            with _index_lock(self.root):
                data = self._load()
                data["manifests"] = fn(data["manifests"])
                write_json(self.path, data)
        except OSError as e:
            raise from_os_error(e, f"update {self.path} for {name}") from e
