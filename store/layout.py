"""The store root's whole layout: every path under a store root is named here.

The root is also an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``), so
skopeo and umoci read what ingestq pulled. Everything else ingestq keeps beside the
blobs lives in its own folder::

    oci-layout, index.json         the OCI image layout and its named images
    blobs/<alg>/<hex>              committed blobs, read-only
    meta/<alg>/<hex>.json          created_at, updated_at and labels of each blob
    ingest/<sha256(ref)>/          one directory per ingest (see store.local.ingest)
    locks/                         host-local lock files (refs, blobs, index.json)
    quarantine/                    blobs found corrupt on disk, moved aside
    resume/<sha256(ref)>.json      resume hints: the source validator of an ingest
    jobs/<id>.json                 job records of in-process (embedded) jobs
    leases/<namespace>.json        leases (gRPC and job leases), per namespace

Code that needs a path asks a :class:`RootLayout` instead of joining names itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingestq.store.digest import Digest


@dataclass(frozen=True)
class RootLayout:
    """The paths under one store root. Pure: creates nothing, touches no disk."""

    root: Path

    @property
    def oci_layout(self) -> Path:
        """The OCI layout marker file, ``oci-layout``."""
        return self.root / "oci-layout"

    @property
    def index(self) -> Path:
        """The OCI ``index.json`` that records named images."""
        return self.root / "index.json"

    @property
    def blobs(self) -> Path:
        """The committed blobs, ``blobs/<alg>/<hex>``."""
        return self.root / "blobs"

    @property
    def meta(self) -> Path:
        """Per-blob metadata, ``meta/<alg>/<hex>.json``."""
        return self.root / "meta"

    @property
    def ingest(self) -> Path:
        """Ingest directories, one per ref."""
        return self.root / "ingest"

    @property
    def locks(self) -> Path:
        """Host-local lock files."""
        return self.root / "locks"

    @property
    def quarantine(self) -> Path:
        """Blobs found corrupt on disk, moved aside."""
        return self.root / "quarantine"

    @property
    def resume(self) -> Path:
        """Resume hints, one file per ref."""
        return self.root / "resume"

    @property
    def jobs(self) -> Path:
        """Records of in-process jobs, one file per job id."""
        return self.root / "jobs"

    @property
    def leases(self) -> Path:
        """Lease records, one file per namespace."""
        return self.root / "leases"

    def blob(self, digest: Digest) -> Path:
        """Where the blob ``digest`` is (or would be) committed."""
        return self.blobs / digest.algorithm / digest.encoded

    def blob_meta(self, digest: Digest) -> Path:
        """The metadata file of the blob ``digest``."""
        return self.meta / digest.algorithm / f"{digest.encoded}.json"

    def job_record(self, job_id: str) -> Path:
        """The record file of in-process job ``job_id`` (the id is a UUID, never a path)."""
        return self.jobs / f"{job_id}.json"

    def lock(self, name: str) -> Path:
        """The host-local lock file ``name`` (a name, never a path)."""
        return self.locks / name


__all__ = ["RootLayout"]
