"""Test helpers of the images layer: pulls from OCI layout directories run step by step
(plan, ingest the children, finalize) with the ingest core, no jobs involved."""

from __future__ import annotations

from pathlib import Path

from ingestq.images.finalize import finalize
from ingestq.images.plan import PlannedBlob, PullPlan, plan_pull
from ingestq.images.request import ImageSource, PullRequest, open_image
from ingestq.ingest.wait import ingest
from ingestq.store.local import LocalStore
from ingestq.store.values import Descriptor, Info
from tests.servers import oci


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
