"""The annotation and label vocabulary of image records, in one place.

OCI's own annotation names and ingestq's additions to an ``index.json`` entry; the
pull that records an image, the CLI that lists images and the gRPC images service all
read and write these names.
"""

from __future__ import annotations

#: The name an ``index.json`` entry is recorded under (OCI image-layout spec).
REF_NAME = "org.opencontainers.image.ref.name"
#: The digest of the image as the source served it, when the recorded entry is an
#: OCI view of a Docker-typed manifest.
SOURCE_DIGEST = "io.ingestq.image.source.digest"
#: The media type of the image as the source served it.
SOURCE_MEDIA_TYPE = "io.ingestq.image.source.mediaType"
#: Prefix of an image record's labels (``io.ingestq.image.label.<key>``).
IMAGE_LABEL_PREFIX = "io.ingestq.image.label."
#: When an image record was created (RFC 3339).
IMAGE_CREATED_AT = "io.ingestq.image.created-at"
#: When an image record last changed (RFC 3339).
IMAGE_UPDATED_AT = "io.ingestq.image.updated-at"

__all__ = [
    "IMAGE_CREATED_AT",
    "IMAGE_LABEL_PREFIX",
    "IMAGE_UPDATED_AT",
    "REF_NAME",
    "SOURCE_DIGEST",
    "SOURCE_MEDIA_TYPE",
]
