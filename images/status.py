"""What a pull reports: :class:`ChildResult` and :class:`PullResult` (how it ended), and
:class:`BlobState` / :class:`BlobStatus` (where each blob of a running pull is). The
state of the pull job itself is the jobs layer's (:mod:`ingestq.jobs.pullstatus`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ingestq import errdefs
from ingestq.store.codec import info_from_json, info_to_json
from ingestq.store.digest import Digest
from ingestq.store.values import Descriptor, Info


@dataclass(frozen=True)
class ChildResult:
    """How one child ended: fetched (how many bytes, from which offset) or already there."""

    ref: str
    digest: Digest
    size: int
    fetched: bool
    bytes_fetched: int = 0
    resumed_from: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {
            "ref": self.ref,
            "digest": str(self.digest),
            "size": self.size,
            "fetched": self.fetched,
            "bytes_fetched": self.bytes_fetched,
            "resumed_from": self.resumed_from,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ChildResult:
        """Parse :meth:`to_json`'s output (or an ingest job's result); InvalidArgument
        when malformed."""
        try:
            return cls(
                ref=str(obj["ref"]),
                digest=Digest.parse(obj["digest"]),
                size=int(obj["size"]),
                fetched=bool(obj.get("fetched", False)),
                bytes_fetched=int(obj.get("bytes_fetched", 0)),
                resumed_from=int(obj.get("resumed_from", 0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise errdefs.InvalidArgument(f"malformed child result: {e}") from e


@dataclass(frozen=True)
class PullResult:
    """A finished pull: the recorded name, the root's descriptor and Info, the children."""

    name: str
    target: Descriptor
    info: Info
    children: tuple[ChildResult, ...] = ()
    recorded: Descriptor | None = None

    @property
    def bytes_fetched(self) -> int:
        """Bytes the children fetched from the source (0 when all were present)."""
        return sum(c.bytes_fetched for c in self.children)

    def to_json(self) -> dict[str, Any]:
        """The root Info's JSON (so generic job readers see an Info) plus the pull's."""
        out = info_to_json(self.info)
        out.update(
            kind="pull",
            name=self.name,
            target=self.target.to_oci(),
            recorded=(self.recorded or self.target).to_oci(),
            children=[c.to_json() for c in self.children],
            bytes_fetched=self.bytes_fetched,
        )
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PullResult:
        """Parse :meth:`to_json`'s output; InvalidArgument when malformed."""
        try:
            return cls(
                name=str(obj["name"]),
                target=Descriptor.from_oci(obj["target"]),
                info=info_from_json(obj),
                children=tuple(ChildResult.from_json(c) for c in obj.get("children") or ()),
                recorded=Descriptor.from_oci(obj["recorded"]) if obj.get("recorded") else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise errdefs.InvalidArgument(f"malformed pull result: {e}") from e


class BlobState(StrEnum):
    """Where one blob of a pull is."""

    WAITING = "waiting"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class BlobStatus:
    """One blob of a pull: ref, digest, state, bytes done of its size, and why it waits or
    failed."""

    ref: str
    digest: Digest
    media_type: str
    size: int
    state: BlobState
    offset: int = 0
    reason: str | None = None

    @property
    def kind(self) -> str:
        """The ref's prefix (``layer``, ``config``, ``manifest``, ``index``)."""
        return self.ref.split("-", 1)[0]

    @property
    def done_bytes(self) -> int:
        """Bytes committed (the size, once done) or written so far."""
        return self.size if self.state is BlobState.DONE else self.offset

    def to_json(self) -> dict[str, Any]:
        """A JSON object."""
        return {
            "ref": self.ref,
            "digest": str(self.digest),
            "media_type": self.media_type,
            "size": self.size,
            "state": self.state.value,
            "offset": self.offset,
            "reason": self.reason,
        }
