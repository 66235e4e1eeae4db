"""The store root's whole layout: every path under a store root is named here.

The root is also an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``), so
skopeo and umoci read what ingestq pulled. Everything else ingestq keeps beside the
blobs lives in its own folder::

    oci-layout, index.json         the OCI image layout and its named images
                                   (see store.images)
    blobs/<alg>/<hex>              committed blobs, read-only; one committed by a
                                   small put with labels carries its metadata as the
                                   attribute user.ingestq.meta (see store.local.blobs)
    meta/<alg>/<hex>.json          created_at, updated_at and labels of a blob
                                   (wins over the attribute once written)
    meta/xattrs                    present once any blob carries that attribute
    ingest/<sha256(ref)>/          one directory per ingest (see store.local.ingest)
    locks/ref-<sha256(ref)>.lock   host-local ref locks, holding their holder's JSON
    locks/blob-<alg>-<hex>.lock    serialises publishing, relabelling and deleting a blob
    locks/index.json.lock          serialises changes to index.json
    locks/leases-<namespace>.lock  serialises changes to a namespace's leases
    locks/leases.lock              held by every lease change, and by gc while it deletes
    quarantine/<alg>-<hex>-<time>  blobs found corrupt on disk, moved aside
    resume/<sha256(ref)>.json      resume hints: the source validator of an ingest
                                   (see store.resume)
    fetched/<sha256(ref)>.json     what a source's bytes became (digest, size) and
                                   its validators (see store.fetched)
    jobs/<id>.json                 job records of in-process (embedded) jobs
    leases/<namespace>.json        leases (gRPC and job leases), per namespace
                                   (see store.leases)

A ref names files only through :func:`ref_key` (its sha256), so no ref can escape the
root. Code that needs a path asks a :class:`RootLayout` instead of joining names itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ingestq.store.digest import Digest


def ref_key(ref: str) -> str:
    """The hex sha256 of ``ref``: how a ref names files, so no ref can escape the root."""
    return hashlib.sha256(ref.encode("utf-8", "surrogatepass")).hexdigest()


def ref_lock_name(ref: str) -> str:
    """The name of ``ref``'s lock file in a lock directory."""
    return f"ref-{ref_key(ref)}.lock"


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
    def xattr_marker(self) -> Path:
        """``meta/xattrs``: written before the first blob that carries its metadata as
        an extended attribute, so a host that cannot read them knows it misses labels."""
        return self.meta / "xattrs"

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
    def fetched(self) -> Path:
        """Fetched records (source validators and the blob they became), one per ref."""
        return self.root / "fetched"

    @property
    def jobs(self) -> Path:
        """Records of in-process jobs, one file per job id."""
        return self.root / "jobs"

    @property
    def leases(self) -> Path:
        """Lease records, one file per namespace."""
        return self.root / "leases"

    @property
    def index_lock(self) -> Path:
        """The lock file that serialises changes to ``index.json``."""
        return self.lock("index.json.lock")

    def blob_dir(self, algorithm: str) -> Path:
        """The directory of committed blobs of ``algorithm``."""
        return self.blobs / algorithm

    def blob(self, digest: Digest) -> Path:
        """Where the blob ``digest`` is (or would be) committed."""
        return self.blobs / digest.algorithm / digest.encoded

    def blob_meta(self, digest: Digest) -> Path:
        """The metadata file of the blob ``digest``."""
        return self.meta / digest.algorithm / f"{digest.encoded}.json"

    def blob_lock(self, digest: Digest) -> Path:
        """The lock file that serialises publishing, relabelling and deleting ``digest``."""
        return self.lock(f"blob-{digest.algorithm}-{digest.encoded}.lock")

    def quarantined(self, digest: Digest, stamp: str) -> Path:
        """Where a corrupt copy of ``digest`` found at time ``stamp`` is moved."""
        return self.quarantine / f"{digest.algorithm}-{digest.encoded}-{stamp}"

    def ingest_dir(self, ref: str) -> Path:
        """The ingest directory of ``ref``."""
        return self.ingest / ref_key(ref)

    def ref_lock(self, ref: str) -> Path:
        """The host-local lock file of ``ref``."""
        return self.lock(ref_lock_name(ref))

    def resume_hint(self, ref: str) -> Path:
        """The resume hint file of ``ref``."""
        return self.resume / f"{ref_key(ref)}.json"

    def fetched_record(self, ref: str) -> Path:
        """The fetched record of the source whose ref is ``ref``."""
        return self.fetched / f"{ref_key(ref)}.json"

    def lease_file(self, namespace: str) -> Path:
        """The lease records of ``namespace`` (a containerd identifier, never a path)."""
        return self.leases / f"{namespace}.json"

    def leases_lock(self, namespace: str) -> Path:
        """The lock file that serialises changes to ``namespace``'s leases."""
        return self.lock(f"leases-{namespace}.lock")

    def job_record(self, job_id: str) -> Path:
        """The record file of in-process job ``job_id`` (the id is a UUID, never a path)."""
        return self.jobs / f"{job_id}.json"

    def lock(self, name: str) -> Path:
        """The host-local lock file ``name`` (a name, never a path)."""
        return self.locks / name


__all__ = ["RootLayout", "ref_key", "ref_lock_name"]
