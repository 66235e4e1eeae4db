"""Test helpers of the images layer: pulls from OCI layout directories run step by step
(plan, ingest the children, finalize) with the ingest core, no jobs involved; images
served by the misbehaving blob server standing in for a registry."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ingestq.images.finalize import finalize
from ingestq.images.plan import PlannedBlob, PullPlan, plan_pull
from ingestq.images.request import ImageSource, PullRequest, open_image
from ingestq.ingest.wait import ingest
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor, Info
from tests.servers import oci
from tests.tasks.blobserver import Behaviour, BlobServer


def layout(directory: Path, content: oci.Image | oci.Index, tag: str = "v1") -> str:
    """Put ``content`` in the OCI layout at ``directory``; its pull reference."""
    oci.add_to_oci_layout(directory, content, tag)
    return f"oci-layout:{directory}:{tag}"


def plan(store: LocalStore, request: PullRequest) -> tuple[PullPlan, ImageSource]:
    """Plan ``request``, ingesting its index and manifests into ``store``."""
    image = open_image(request)

    def fetch(blob: PlannedBlob) -> object:
        return ingest(store, image.blob_source(blob.desc), blob.request())

    return plan_pull(store, image, request, fetch), image


def fetch_children(store: LocalStore, plan: PullPlan, image: ImageSource) -> None:
    """Ingest every config and layer of ``plan``."""
    for child in plan.children:
        ingest(store, image.blob_source(child.desc), child.request())


def pull(store: LocalStore, request: PullRequest) -> tuple[PullPlan, Info, Descriptor]:
    """The whole pull: plan, children, finalize."""
    the_plan, image = plan(store, request)
    fetch_children(store, the_plan, image)
    info, recorded = finalize(store, the_plan)
    return the_plan, info, recorded


def serve_image(blob_server: BlobServer, image: oci.Image, repo: str, tag: str) -> str:
    """``image`` as ``<blob server>/<repo>:<tag>`` (the blob server standing in for a
    registry: manifest by tag and digest, blobs by digest); its reference. Tests make a
    blob misbehave through ``blob_server.paths[f"/v2/{repo}/blobs/{digest}"]``."""
    manifest = Behaviour(data=image.manifest, headers={"Content-Type": image.descriptor.media_type})
    blob_server.add(f"/v2/{repo}/manifests/{tag}", manifest)
    blob_server.add(f"/v2/{repo}/manifests/{image.digest}", manifest)
    for digest, data in image.blobs().items():
        blob_server.add(f"/v2/{repo}/blobs/{digest}", Behaviour(data=data))
    return f"{blob_server.url.removeprefix('http://')}/{repo}:{tag}"


def lying_image(blob_server: BlobServer, layer: bytes, repo: str = "app") -> tuple[str, str]:
    """An image served as ``<repo>:v1`` whose manifest says its one layer is one byte
    longer than ``layer``; (reference, the layer's digest)."""
    image = oci.build_image([layer])
    manifest = json.loads(image.manifest)
    manifest["layers"][0]["size"] += 1
    data = json.dumps(manifest).encode()
    lying = replace(image, manifest=data,
                    descriptor=oci.Descriptor.of(image.descriptor.media_type, data))  # fmt: skip
    return serve_image(blob_server, lying, repo, "v1"), image.layer_descriptors[0].digest
