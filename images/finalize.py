"""Finalizing a pull: labels (containerd's GC references, the distribution source),
the OCI view of Docker-typed images, and recording the image in the store's
``index.json``."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import replace

from ingestq import errdefs
from ingestq.fetch import manifests
from ingestq.images.plan import PullPlan
from ingestq.ingest.protocols import LocalContent
from ingestq.store.annotations import SOURCE_DIGEST, SOURCE_MEDIA_TYPE
from ingestq.store.digest import Digest
from ingestq.store.helpers import read_blob, write_blob
from ingestq.store.images import image_index_of
from ingestq.store.protocols import Manager, Store
from ingestq.store.values import Descriptor, Info, utcnow

#: Called with a blob's digest before it is written, so a gc run keeps it (a job lease).
Protect = Callable[[Digest], object]


def _unprotected(digest: Digest) -> None:
    return None


def oci_view(
    store: Store,
    plan: PullPlan,
    desc: Descriptor | None = None,
    protect: Protect = _unprotected,
) -> Descriptor:
    """The OCI-typed descriptor to record for ``desc`` (default: the plan's target).

    skopeo reads only OCI-typed entries of a layout's ``index.json`` (and refuses
    Docker configs on inspect), so a Docker schema2 manifest is recorded through an
    equivalent OCI manifest (same config and layer blobs, OCI media types), and an
    index holding any Docker manifest, or a Docker manifest list, through an OCI index
    over the pulled manifests' views. The converted blobs are written to the store with
    their GC labels; an OCI image is its own view. Deterministic, so idempotent.

    Raises NotFound when a manifest of the plan is not committed, InvalidArgument /
    Unimplemented for a malformed or unsupported manifest. ``protect`` is called with
    each converted blob's digest before it is written.
    An index that lists a manifest many times (or nests such indexes) costs one view of
    each manifest, not one per path to it.
    """
    return _view(store, plan, desc or plan.target, protect, {})


def _view(
    store: Store,
    plan: PullPlan,
    desc: Descriptor,
    protect: Protect,
    views_of: dict[Digest, Descriptor],
) -> Descriptor:
    """:func:`oci_view` of ``desc``, remembering each manifest's view in ``views_of``."""
    if desc.digest in views_of:
        return views_of[desc.digest]
    pulled = {b.desc.digest for b in plan.manifests}
    data = read_blob(store, desc)
    doc = manifests.parse(desc, data)
    if isinstance(doc, manifests.Manifest):
        if desc.media_type == manifests.OCI_MANIFEST:
            views_of[desc.digest] = desc
            return desc
        new = manifests.oci_manifest(desc, data)
        labels = doc.gc_labels()
        media_type = manifests.OCI_MANIFEST
    else:
        changed = desc.media_type != manifests.OCI_INDEX
        entries: list[dict[str, object]] = []
        views: list[Descriptor] = []
        for entry in doc.manifests:
            child = Descriptor.from_oci(entry)
            if child.digest not in pulled:
                continue
            view = _view(store, plan, child, protect, views_of)
            changed = changed or view.digest != child.digest
            entries.append(
                {**entry, "mediaType": view.media_type, "digest": str(view.digest),
                 "size": view.size}
            )  # fmt: skip
            views.append(view)
        if not changed:
            views_of[desc.digest] = desc
            return desc
        new = manifests.oci_index(entries)
        labels = manifests.index_gc_labels(views)
        media_type = manifests.OCI_INDEX
    view_desc = Descriptor(Digest.from_bytes(new), len(new), media_type)
    protect(view_desc.digest)
    write_blob(store, manifests.ref_key(view_desc), io.BytesIO(new), view_desc)
    _label(store, view_desc, labels)
    views_of[desc.digest] = view_desc
    return view_desc


def _label(store: Manager, desc: Descriptor, labels: Mapping[str, str]) -> None:
    if labels:
        now = utcnow()
        store.update(
            Info(desc.digest, desc.size, now, now, dict(labels)), *(f"labels.{k}" for k in labels)
        )


def finalize(
    store: LocalContent, plan: PullPlan, protect: Protect = _unprotected
) -> tuple[Info, Descriptor]:
    """Label every blob of ``plan`` and record the image; return the root's Info and the
    descriptor recorded in ``index.json``.

    Parents get their GC reference labels; with a registry source every blob gets its
    ``distribution.source`` label (the repository added to the comma list). Then the
    image is put in the store's ``index.json`` under ``plan.name``: the target itself
    for an OCI image, else its :func:`oci_view` (annotated with the original digest and
    media type, :data:`ingestq.store.annotations.SOURCE_DIGEST` /
    :data:`~ingestq.store.annotations.SOURCE_MEDIA_TYPE`). Idempotent.

    ``protect`` is called with every digest of the plan first, then with each blob
    the OCI view writes (the pull's lease, so gc keeps them until the image is recorded).

    Raises FailedPrecondition when a blob of the plan is not committed, InvalidArgument
    for an oversize label.
    """
    for blob in (*plan.manifests, *plan.children):
        protect(blob.desc.digest)
    for blob in (*plan.manifests, *plan.children):
        if not store.exists(blob.desc.digest):
            raise errdefs.FailedPrecondition(f"pull {plan.name}: {blob.ref} is not committed")
    for blob in (*plan.children, *plan.manifests):
        digest = blob.desc.digest
        new = dict(plan.labels.get(str(digest), {}))
        if plan.source is not None:
            host, repo = plan.source
            key = manifests.distribution_source_key(host)
            current = store.info(digest).labels.get(key)
            value = manifests.append_distribution_source(current, repo)
            if value != current:
                new[key] = value
        _label(store, blob.desc, new)
    view = oci_view(store, plan, protect=protect)
    if view.digest != plan.target.digest:
        view = replace(
            view,
            annotations={
                SOURCE_DIGEST: str(plan.target.digest),
                SOURCE_MEDIA_TYPE: plan.target.media_type,
            },
        )
    image_index_of(store, store.root).put(plan.name, view)
    return store.info(plan.target.digest), view
