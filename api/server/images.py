"""``containerd.services.images.v1.Images`` over the store's image records.

An image is an :class:`store.images.ImageRecord`, kept in the OCI layout's
``index.json`` (see :mod:`store.images` for the format), so OCI tools (skopeo, umoci)
see what ``ctr content fetch`` recorded. Images are shared by every namespace (see
:mod:`api.namespaces`).

Errors (containerd's): Get/Update/Delete of a missing name NotFound ``image "<name>"``;
Create of an existing name AlreadyExists ``image "<name>"``; an empty name, an invalid
target digest, a size <= 0, an empty media type, an oversize label or an unknown update
path InvalidArgument.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.empty_pb2 import Empty

from ingestq import errdefs
from ingestq.api import namespaces
from ingestq.api.convert import descriptor_to_pb, from_timestamp, timestamp
from ingestq.api.errors import unary
from ingestq.api.proto.containerd.services.images.v1 import images_pb2
from ingestq.api.proto.containerd.types import descriptor_pb2
from ingestq.store.digest import Digest
from ingestq.store.filters import Adaptor, fields, parse
from ingestq.store.images import ImageIndex, ImageRecord
from ingestq.store.labels import validate as validate_labels
from ingestq.store.values import Descriptor, utcnow


def _validate(image: ImageRecord) -> None:
    if not image.name:
        raise errdefs.InvalidArgument("image name must not be empty")
    try:
        validate_labels(image.labels)
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


def image_from_pb(msg: images_pb2.Image) -> ImageRecord:
    """The record of a Create request's image (times from the message, now
    if unset). InvalidArgument for a missing or malformed target digest."""
    now = utcnow()
    return ImageRecord(
        name=msg.name,
        target=_target_from_pb(msg.target),
        labels=dict(msg.labels),
        created_at=from_timestamp(msg.created_at) if msg.HasField("created_at") else now,
        updated_at=from_timestamp(msg.updated_at) if msg.HasField("updated_at") else now,
    )


def image_to_pb(image: ImageRecord) -> images_pb2.Image:
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


def apply_update(current: ImageRecord, change: ImageChange, paths: Sequence[str]) -> ImageRecord:
    """``current`` updated from ``change`` along ``paths`` (containerd's image update:
    ``labels``, ``labels.<k>``, ``annotations``, ``annotations.<k>``, ``target``; no
    paths replaces labels and target). InvalidArgument for any other path, or for a
    target-replacing update without a target."""

    def new_target() -> Descriptor:
        if change.target is None:
            raise errdefs.InvalidArgument("Target.Digest must be set")
        return change.target

    if not paths:
        return ImageRecord(
            current.name, new_target(), dict(change.labels), current.created_at, utcnow()
        )
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
    return ImageRecord(current.name, target, labels, current.created_at, utcnow())


class ImageStore:
    """Named images in the store root's ``index.json`` (see :mod:`store.images`)."""

    def __init__(self, index: ImageIndex) -> None:
        self._index = index
        self._mutex = threading.Lock()

    def list(self, *filters: str) -> list[ImageRecord]:
        """Every image matching any filter (``name``, ``target.digest``,
        ``target.mediatype``, ``labels.*``)."""
        flt = parse(*filters)
        return [image for image in self._index.records() if flt.match(_adaptor(image))]

    def get(self, name: str) -> ImageRecord:
        """The image; NotFound ``image "<name>"``."""
        try:
            return self._index.record(name)
        except errdefs.NotFound:
            raise errdefs.NotFound(f'image "{name}"') from None

    def create(self, image: ImageRecord) -> ImageRecord:
        """Record a new image; AlreadyExists ``image "<name>"`` if the name is taken."""
        now = utcnow()
        image = ImageRecord(image.name, image.target, image.labels, now, now)
        _validate(image)
        self._index.add_record(image)
        return image

    def update(self, change: ImageChange, paths: Sequence[str]) -> ImageRecord:
        """Update an existing image along ``paths``; NotFound if it does not exist."""
        if not change.name:
            raise errdefs.InvalidArgument("image name is required for update")
        with self._mutex:
            updated = apply_update(self.get(change.name), change, paths)
            _validate(updated)
            self._index.put_record(updated)
        return updated

    def delete(self, name: str) -> None:
        """Forget an image; NotFound ``image "<name>"``. Its content stays."""
        with self._mutex:
            try:
                self._index.remove(name)
            except errdefs.NotFound:
                raise errdefs.NotFound(f'image "{name}"') from None


def _adaptor(image: ImageRecord) -> Adaptor:
    plain = {
        "name": image.name,
        "target.digest": str(image.target.digest),
        "target.mediatype": image.target.media_type,
    }
    return fields(plain, image.labels)


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
