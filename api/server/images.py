"""``containerd.services.images.v1.Images`` recorded in the store's OCI ``index.json``.

An image is a name mapped to the descriptor of its root (a manifest or an index). Each
image is one entry of the OCI layout's ``index.json`` (via :class:`store.ImageIndex`),
named by the ``org.opencontainers.image.ref.name`` annotation, so OCI tools (skopeo,
umoci) see what ``ctr content fetch`` recorded. What the OCI descriptor has no field
for rides in annotations of that entry:

* the image's labels as ``io.ingestq.image.label.<key>``;
* its creation and update times as ``io.ingestq.image.created-at`` / ``updated-at``
  (RFC 3339); entries written without them report the file's modification time.

The remaining annotations are the target's own. Images are shared by every namespace
(see :mod:`api.namespaces`).

Errors (containerd's): Get/Update/Delete of a missing name NotFound ``image "<name>"``;
Create of an existing name AlreadyExists ``image "<name>"``; an empty name, an invalid
target digest, a size <= 0, an empty media type, an oversize label or an unknown update
path InvalidArgument.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from google.protobuf.empty_pb2 import Empty

from ingestq import errdefs
from ingestq.api import namespaces
from ingestq.api.convert import descriptor_to_pb, from_timestamp, timestamp
from ingestq.api.errors import unary
from ingestq.api.proto.containerd.services.images.v1 import images_pb2
from ingestq.api.proto.containerd.types import descriptor_pb2
from ingestq.store import filters as filterlang
from ingestq.store import labels as labelrules
from ingestq.store.annotations import REF_NAME
from ingestq.store.digest import Digest
from ingestq.store.images import ImageIndex
from ingestq.store.values import Descriptor, utcnow

LABEL_PREFIX = "io.ingestq.image.label."
CREATED_AT = "io.ingestq.image.created-at"
UPDATED_AT = "io.ingestq.image.updated-at"


@dataclass(frozen=True)
class Image:
    """A named image: its target descriptor, labels and record times."""

    name: str
    target: Descriptor
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


def to_entry(image: Image) -> Descriptor:
    """The index.json descriptor that records ``image`` (labels and times as
    annotations; ImageIndex adds the ref name)."""
    annotations = {k: v for k, v in image.target.annotations.items() if k != REF_NAME}
    annotations.update({LABEL_PREFIX + k: v for k, v in image.labels.items()})
    annotations[CREATED_AT] = image.created_at.isoformat()
    annotations[UPDATED_AT] = image.updated_at.isoformat()
    t = image.target
    return Descriptor(t.digest, t.size, t.media_type, annotations, t.urls)


def from_entry(name: str, entry: Descriptor, fallback: datetime) -> Image:
    """The image an index.json entry records (see :func:`to_entry`)."""
    labels: dict[str, str] = {}
    target_annotations: dict[str, str] = {}
    times: dict[str, datetime] = {}
    for key, value in entry.annotations.items():
        if key.startswith(LABEL_PREFIX):
            labels[key[len(LABEL_PREFIX) :]] = value
        elif key in (CREATED_AT, UPDATED_AT):
            try:
                times[key] = datetime.fromisoformat(value)
            except ValueError:
                times[key] = fallback
        elif key != REF_NAME:
            target_annotations[key] = value
    target = Descriptor(entry.digest, entry.size, entry.media_type, target_annotations, entry.urls)
    return Image(
        name=name,
        target=target,
        labels=labels,
        created_at=times.get(CREATED_AT, fallback),
        updated_at=times.get(UPDATED_AT, times.get(CREATED_AT, fallback)),
    )


def _validate(image: Image) -> None:
    if not image.name:
        raise errdefs.InvalidArgument("image name must not be empty")
    try:
        labelrules.validate(image.labels)
    except errdefs.InvalidArgument as e:
        raise errdefs.wrap(e, "image.Labels") from e
    if image.target.size <= 0:
        raise errdefs.InvalidArgument("Target.Size must be greater than zero")
    if not image.target.media_type:
        raise errdefs.InvalidArgument("Target.MediaType must be set")


def _target_from_pb(msg: descriptor_pb2.Descriptor) -> Descriptor:
    try:
        digest = Digest.parse(msg.digest)
    except errdefs.InvalidArgument as e:
        raise errdefs.InvalidArgument(f"Target.Digest {msg.digest!r} invalid: {e}") from e
    return Descriptor(digest, msg.size, msg.media_type, dict(msg.annotations))


def image_from_pb(msg: images_pb2.Image) -> Image:
    """A store-side Image from a Create request's message (times from the message, now
    if unset). InvalidArgument for a missing or malformed target digest."""
    now = utcnow()
    return Image(
        name=msg.name,
        target=_target_from_pb(msg.target),
        labels=dict(msg.labels),
        created_at=from_timestamp(msg.created_at) if msg.HasField("created_at") else now,
        updated_at=from_timestamp(msg.updated_at) if msg.HasField("updated_at") else now,
    )


def image_to_pb(image: Image) -> images_pb2.Image:
    """The ``Image`` message, always with both timestamps."""
    return images_pb2.Image(
        name=image.name,
        labels=dict(image.labels),
        target=descriptor_to_pb(image.target),
        created_at=timestamp(image.created_at),
        updated_at=timestamp(image.updated_at),
    )


@dataclass(frozen=True)
class ImageChange:
    """What an Update request carries: the name, labels, the target (None when the
    message has no target digest) and the target's annotations."""

    name: str
    labels: Mapping[str, str]
    target: Descriptor | None
    annotations: Mapping[str, str]


def change_from_pb(msg: images_pb2.Image) -> ImageChange:
    """The :class:`ImageChange` of an Update request's image."""
    target = _target_from_pb(msg.target) if msg.target.digest else None
    return ImageChange(msg.name, dict(msg.labels), target, dict(msg.target.annotations))


def apply_update(current: Image, change: ImageChange, paths: Sequence[str]) -> Image:
    """``current`` updated from ``change`` along ``paths`` (containerd's image update:
    ``labels``, ``labels.<k>``, ``annotations``, ``annotations.<k>``, ``target``; no
    paths replaces labels and target). InvalidArgument for any other path, or for a
    target-replacing update without a target."""

    def new_target() -> Descriptor:
        if change.target is None:
            raise errdefs.InvalidArgument("Target.Digest must be set")
        return change.target

    if not paths:
        return Image(current.name, new_target(), dict(change.labels), current.created_at, utcnow())
    labels = dict(current.labels)
    target = current.target
    annotations = dict(target.annotations)
    for path in paths:
        if path == "labels":
            labels = dict(change.labels)
        elif path.startswith("labels."):
            key = path[len("labels.") :]
            if change.labels.get(key):
                labels[key] = change.labels[key]
            else:
                labels.pop(key, None)
        elif path == "target":
            target = new_target()
            annotations = dict(target.annotations)
        elif path == "annotations":
            annotations = dict(change.annotations)
        elif path.startswith("annotations."):
            key = path[len("annotations.") :]
            if change.annotations.get(key):
                annotations[key] = change.annotations[key]
            else:
                annotations.pop(key, None)
        else:
            raise errdefs.InvalidArgument(f'cannot update "{path}" field on image "{current.name}"')
    target = Descriptor(target.digest, target.size, target.media_type, annotations, target.urls)
    return Image(current.name, target, labels, current.created_at, utcnow())


class ImageStore:
    """Named images in the store root's ``index.json`` (see the module docstring)."""

    def __init__(self, index: ImageIndex) -> None:
        self._index = index
        self._mutex = threading.Lock()

    def _fallback(self) -> datetime:
        try:
            mtime = (self._index.root / "index.json").stat().st_mtime
        except OSError:
            return utcnow()
        return datetime.fromtimestamp(mtime, UTC)

    def list(self, *filters: str) -> list[Image]:
        """Every image matching any filter (``name``, ``target.digest``,
        ``target.mediatype``, ``labels.*``)."""
        flt = filterlang.parse(*filters)
        fallback = self._fallback()
        images = [from_entry(n, d, fallback) for n, d in self._index.list()]
        return [image for image in images if flt.match(_adaptor(image))]

    def get(self, name: str) -> Image:
        """The image; NotFound ``image "<name>"``."""
        for n, d in self._index.list():
            if n == name:
                return from_entry(n, d, self._fallback())
        raise errdefs.NotFound(f'image "{name}"')

    def create(self, image: Image) -> Image:
        """Record a new image; AlreadyExists ``image "<name>"`` if the name is taken."""
        now = utcnow()
        image = Image(image.name, image.target, image.labels, now, now)
        _validate(image)
        with self._mutex:
            if any(n == image.name for n, _ in self._index.list()):
                raise errdefs.AlreadyExists(f'image "{image.name}"')
            self._index.put(image.name, to_entry(image))
        return image

    def update(self, change: ImageChange, paths: Sequence[str]) -> Image:
        """Update an existing image along ``paths``; NotFound if it does not exist."""
        if not change.name:
            raise errdefs.InvalidArgument("image name is required for update")
        with self._mutex:
            updated = apply_update(self.get(change.name), change, paths)
            _validate(updated)
            self._index.put(updated.name, to_entry(updated))
        return updated

    def delete(self, name: str) -> None:
        """Forget an image; NotFound ``image "<name>"``. Its content stays."""
        with self._mutex:
            try:
                self._index.remove(name)
            except errdefs.NotFound:
                raise errdefs.NotFound(f'image "{name}"') from None


def _adaptor(image: Image) -> filterlang.Adaptor:
    def lookup(fieldpath: Sequence[str]) -> str | None:
        path = tuple(fieldpath)
        if path == ("name",):
            return image.name
        if path == ("target", "digest"):
            return str(image.target.digest)
        if path == ("target", "mediatype"):
            return image.target.media_type
        if len(path) > 1 and path[0] == "labels":
            return image.labels.get(".".join(path[1:]))
        return None

    return lookup


class ImagesService:
    """``containerd.services.images.v1.Images`` over an :class:`ImageStore`."""

    def __init__(self, images: ImageStore) -> None:
        self._images = images

    @unary
    def Get(
        self, request: images_pb2.GetImageRequest, context: grpc.ServicerContext
    ) -> images_pb2.GetImageResponse:
        namespaces.required(context)
        return images_pb2.GetImageResponse(image=image_to_pb(self._images.get(request.name)))

    @unary
    def List(
        self, request: images_pb2.ListImagesRequest, context: grpc.ServicerContext
    ) -> images_pb2.ListImagesResponse:
        namespaces.required(context)
        found = self._images.list(*request.filters)
        return images_pb2.ListImagesResponse(images=[image_to_pb(i) for i in found])

    @unary
    def Create(
        self, request: images_pb2.CreateImageRequest, context: grpc.ServicerContext
    ) -> images_pb2.CreateImageResponse:
        namespaces.required(context)
        created = self._images.create(image_from_pb(request.image))
        return images_pb2.CreateImageResponse(image=image_to_pb(created))

    @unary
    def Update(
        self, request: images_pb2.UpdateImageRequest, context: grpc.ServicerContext
    ) -> images_pb2.UpdateImageResponse:
        namespaces.required(context)
        paths = tuple(request.update_mask.paths) if request.HasField("update_mask") else ()
        updated = self._images.update(change_from_pb(request.image), paths)
        return images_pb2.UpdateImageResponse(image=image_to_pb(updated))

    @unary
    def Delete(
        self, request: images_pb2.DeleteImageRequest, context: grpc.ServicerContext
    ) -> Empty:
        namespaces.required(context)
        self._images.delete(request.name)
        return Empty()
