"""What to pull and where it comes from: :class:`PullRequest` (the job argument, JSON
both ways), the :class:`ImageSource` shape, and :func:`open_image` (a registry image or
an OCI layout directory, whose blob sources follow the process's
:class:`~ingestq.fetch.options.FetchOptions`).

Names: the image is recorded under the fully qualified reference
(``127.0.0.1:5000/app:v1``, ``docker.io/library/ubuntu:latest``; ``@sha256:...`` when
pulled by digest), or ``name`` when given; an OCI layout's image under where it came
from, ``oci-layout:<absolute dir>:<NAME>`` (or ``@<digest>``), see
:class:`~ingestq.fetch.ocilayout.OCILayoutImage`. skopeo splits ``oci:PATH:NAME`` at the first
``:``, and its name grammar accepts ``:``, ``/`` and ``@``, so
``skopeo inspect oci:<root>:127.0.0.1:5000/app:v1`` works as long as the store root has
no ``:`` in its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ingestq import errdefs
from ingestq.fetch import platforms
from ingestq.fetch.ocilayout import PREFIX as LAYOUT_PREFIX
from ingestq.fetch.ocilayout import OCILayoutImage, parse_layout_reference
from ingestq.fetch.options import FetchOptions
from ingestq.fetch.reference import parse_reference
from ingestq.fetch.registry.options import RegistryOptions
from ingestq.fetch.source import Source
from ingestq.store.values import Descriptor

if TYPE_CHECKING:
    # The HTTP stack loads when an image is opened, not when a pull is only queued.
    from ingestq.fetch.registry.client import RegistryImage

#: Threads per embedded pull fetching children at once.
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class PullRequest:
    """What to pull. JSON-serialisable (:meth:`to_json`), with no secrets in it.

    Attributes:
        reference: ``[HOST[:PORT]/]REPO[:TAG][@DIGEST]`` or ``oci-layout:DIR[:NAME]``.
        platforms: ``os/arch[/variant]`` specifiers; empty means the host's platform.
        all_platforms: take every manifest of an index.
        options: how to reach the registry (plain HTTP, TLS, timeouts, auth files).
        name: record the image under this name instead of the reference.
        concurrency: children fetched at once by an embedded pull.
    """

    reference: str
    platforms: tuple[str, ...] = ()
    all_platforms: bool = False
    options: RegistryOptions = field(default_factory=RegistryOptions)
    name: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY

    def validate(self) -> None:
        """Parse the reference and platforms; InvalidArgument if malformed."""
        if self.reference.startswith(LAYOUT_PREFIX):
            parse_layout_reference(self.reference)
        else:
            parse_reference(self.reference)
        for spec in self.platforms:
            platforms.parse(spec)
        if self.concurrency < 1:
            raise errdefs.InvalidArgument(f"concurrency {self.concurrency} must be at least 1")
        if self.name is not None and not self.name:
            raise errdefs.InvalidArgument("image name must not be empty")

    def to_json(self) -> dict[str, Any]:
        """The JSON object a pull job carries."""
        return {
            "reference": self.reference,
            "platforms": list(self.platforms),
            "all_platforms": self.all_platforms,
            "options": self.options.to_dict(),
            "name": self.name,
            "concurrency": self.concurrency,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PullRequest:
        """Parse :meth:`to_json`'s output; InvalidArgument when malformed."""
        if not isinstance(obj, Mapping) or not isinstance(obj.get("reference"), str):
            raise errdefs.InvalidArgument("pull request needs a reference")
        plats = obj.get("platforms") or []
        if not isinstance(plats, list | tuple):
            raise errdefs.InvalidArgument("pull request platforms must be a list")
        name = obj.get("name")
        concurrency = obj.get("concurrency", DEFAULT_CONCURRENCY)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool):
            raise errdefs.InvalidArgument(f"concurrency {concurrency!r} is not an integer")
        return cls(
            reference=obj["reference"],
            platforms=tuple(str(p) for p in plats),
            all_platforms=bool(obj.get("all_platforms", False)),
            options=RegistryOptions.from_dict(obj.get("options")),
            name=str(name) if name is not None else None,
            concurrency=concurrency,
        )


class ImageSource(Protocol):
    """An image to pull: :class:`~ingestq.fetch.registry.client.RegistryImage` or
    :class:`~ingestq.fetch.ocilayout.OCILayoutImage`."""

    @property
    def name(self) -> str:
        """The name the image is recorded under by default."""
        ...

    @property
    def distribution_source(self) -> tuple[str, str] | None:
        """(host, repository) for the distribution-source label, or None."""
        ...

    def resolve(self) -> Descriptor:
        """The root descriptor (an index or a manifest)."""
        ...

    def blob_source(self, desc: Descriptor) -> Source:
        """A Source for any blob of the image (manifests included)."""
        ...

    def spec(self, desc: Descriptor) -> dict[str, Any]:
        """The job-argument form of :meth:`blob_source`."""
        ...


class ConfiguredImage:
    """``image`` whose blob sources are made from its source specs with ``options``,
    exactly as a queued child job makes them (:func:`~ingestq.fetch.specs.source_from_spec`):
    so a pull in this process, its planning on a worker and its queued children all
    follow the same file roots and low-speed rule."""

    def __init__(self, image: RegistryImage | OCILayoutImage, options: FetchOptions) -> None:
        self.image = image
        self.options = options

    @property
    def name(self) -> str:
        """The name the image is recorded under by default."""
        return self.image.name

    @property
    def distribution_source(self) -> tuple[str, str] | None:
        """(host, repository) for the distribution-source label, or None."""
        return self.image.distribution_source

    def resolve(self) -> Descriptor:
        """The root descriptor (an index or a manifest)."""
        return self.image.resolve()

    def blob_source(self, desc: Descriptor) -> Source:
        """The Source of :meth:`spec` under the options (InvalidArgument if malformed)."""
        from ingestq.fetch.specs import source_from_spec

        return source_from_spec(self.spec(desc), self.options)

    def spec(self, desc: Descriptor) -> dict[str, Any]:
        """The job-argument form of :meth:`blob_source`."""
        return self.image.spec(desc)


def open_image(request: PullRequest, options: FetchOptions | None = None) -> ConfiguredImage:
    """The image ``request`` names, its blob sources following ``options`` (file roots an
    OCI layout must lie in, the low-speed rule of registry bodies; None: the defaults,
    files anywhere). How to reach a registry is ``request.options``, as in a child's
    spec. InvalidArgument for a malformed reference, NotFound / PermissionDenied for a
    missing or forbidden layout directory."""
    options = options or FetchOptions()
    image: RegistryImage | OCILayoutImage
    if request.reference.startswith(LAYOUT_PREFIX):
        image = OCILayoutImage(request.reference, options.file_roots)
    else:
        from ingestq.fetch.registry.client import RegistryImage, shared_client

        image = RegistryImage(shared_client(request.options), parse_reference(request.reference))
    return ConfiguredImage(image, options)
