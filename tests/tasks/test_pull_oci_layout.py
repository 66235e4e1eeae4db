"""A layout written by ``skopeo copy`` pulled into the store by the in-process pull
(the layout source itself: tests/fetch/test_ocilayout_source.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ingestq.fetch.ocilayout import OCILayoutImage
from ingestq.jobs.config import Settings
from ingestq.jobs.local import LocalClient
from ingestq.store.digest import Digest
from ingestq.store.images import ImageIndex
from ingestq.tasks.client import enqueue_pull
from tests.servers import oci
from tests.servers.registry import Registry
from tests.servers.skopeo import skopeo_copy, skopeo_inspect


def test_a_layout_saved_by_skopeo_is_pulled_into_the_store(
    registry: Registry, tmp_path: Path
) -> None:
    layers = [os.urandom(100_000), os.urandom(50_000)]
    oci.push_image(registry, "app", "v1", layers, flavor="docker")
    saved = tmp_path / "saved"
    skopeo_copy(f"docker://{registry.host}/app:v1", f"oci:{saved}:v1", preserve_digests=False)
    saved_digest = json.loads((saved / "index.json").read_text())["manifests"][0]["digest"]

    image = OCILayoutImage(f"oci-layout:{saved}:v1")
    assert image.name == f"oci-layout:{saved}:v1" and image.distribution_source is None
    client = LocalClient(Settings(root=tmp_path / "store", fsync=False))
    result = enqueue_pull(f"oci-layout:{saved}:v1", name="saved/app:v1", client=client).wait(60)
    assert str(result.target.digest) == saved_digest
    assert result.target.media_type == oci.OCI_MANIFEST
    assert result.name == "saved/app:v1"
    root = client.store.root
    assert ImageIndex(root).get("saved/app:v1").digest == Digest.parse(saved_digest)
    manifest = json.loads((root / "blobs" / "sha256" / saved_digest[7:]).read_text())
    for layer in manifest["layers"]:
        assert (root / "blobs" / "sha256" / layer["digest"][7:]).read_bytes() == (
            saved / "blobs" / "sha256" / layer["digest"][7:]
        ).read_bytes()
    labels = client.store.info(Digest.parse(saved_digest)).labels
    assert labels["containerd.io/gc.ref.content.config"] == manifest["config"]["digest"]
    assert not any(k.startswith("containerd.io/distribution.source") for k in labels)
    assert skopeo_inspect(f"oci:{root}:saved/app:v1")["Digest"] == saved_digest
