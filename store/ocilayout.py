"""The store root as an OCI image layout: ``oci-layout`` and an ``index.json`` of named images.

Tools that read OCI layouts (skopeo, umoci) find an image by the descriptor annotation
``org.opencontainers.image.ref.name``. :class:`ImageIndex` keeps that file consistent
between processes (a file lock, and atomic replacement).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

import errdefs
from store.values import Descriptor

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_layout(root: Path) -> None:
    """Create ``oci-layout`` and an empty ``index.json`` if they are missing."""
    layout = root / "oci-layout"
    if not layout.exists():
        _write_json(layout, {"imageLayoutVersion": LAYOUT_VERSION})
    index = root / "index.json"
    if not index.exists():
        with _index_lock(root):
            if not index.exists():
                _write_json(index, _empty_index())


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}


_THREAD_LOCK = threading.Lock()


@contextmanager
def _index_lock(root: Path) -> Iterator[None]:
    (root / "locks").mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, filelock.FileLock(root / "locks" / "index.json.lock"):
        yield


class ImageIndex:
    """Named images in the layout's ``index.json`` (name → the image's root descriptor)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        ensure_layout(self.root)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_text())
        except (OSError, ValueError) as e:
            raise errdefs.DataLoss(f"read {self.root / 'index.json'}: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("manifests"), list):
            raise errdefs.DataLoss(f"{self.root / 'index.json'} is not an OCI image index")
        return data

    def list(self) -> list[tuple[str, Descriptor]]:
        """Every named image as (name, descriptor), in file order."""
        out = []
        for entry in self._load()["manifests"]:
            desc = Descriptor.from_oci(entry)
            name = desc.annotations.get(REF_NAME)
            if name:
                out.append((name, desc))
        return out

    def get(self, name: str) -> Descriptor:
        """The descriptor recorded for ``name``; NotFound if there is none."""
        for n, desc in self.list():
            if n == name:
                return desc
        raise errdefs.NotFound(f"image {name}")

    def put(self, name: str, desc: Descriptor) -> None:
        """Record ``desc`` under ``name``, replacing an earlier entry of that name."""
        if not name:
            raise errdefs.InvalidArgument("image name must not be empty")
        entry = desc.to_oci()
        annotations = dict(desc.annotations)
        annotations[REF_NAME] = name
        entry["annotations"] = annotations
        with _index_lock(self.root):
            data = self._load()
            data["manifests"] = [
                m for m in data["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != name
            ] + [entry]
            _write_json(self.root / "index.json", data)

    def remove(self, name: str) -> None:
        """Forget ``name``; NotFound if it is not recorded."""
        with _index_lock(self.root):
            data = self._load()
            kept = [
                m for m in data["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != name
            ]
            if len(kept) == len(data["manifests"]):
                raise errdefs.NotFound(f"image {name}")
            data["manifests"] = kept
            _write_json(self.root / "index.json", data)
