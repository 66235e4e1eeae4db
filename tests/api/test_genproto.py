"""The .proto files and their generated modules: the committed modules are what
``scripts/genproto.py`` generates now, and the services, methods and field numbers are
containerd's (so the gRPC method paths are ``/containerd.services.content.v1.Content/...``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor

from ingestq.api.proto.containerd.services.content.v1 import content_pb2
from ingestq.api.proto.containerd.services.images.v1 import images_pb2
from ingestq.api.proto.containerd.services.introspection.v1 import introspection_pb2
from ingestq.api.proto.containerd.services.leases.v1 import leases_pb2
from ingestq.api.proto.containerd.types import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]


def test_generated_modules_are_current() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/genproto.py", "--check", "ingestq/api"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_content_service_methods_and_streaming() -> None:
    service = content_pb2.DESCRIPTOR.services_by_name["Content"]
    assert service.full_name == "containerd.services.content.v1.Content"
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert shapes == {
        "Info": (False, False),
        "Update": (False, False),
        "List": (False, True),
        "Delete": (False, False),
        "Read": (False, True),
        "Status": (False, False),
        "ListStatuses": (False, False),
        "Write": (True, True),
        "Abort": (False, False),
    }


def fields(message: Descriptor) -> dict[str, int]:
    return {f.name: f.number for f in message.fields}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            content_pb2.Info.DESCRIPTOR,
            {"digest": 1, "size": 2, "created_at": 3, "updated_at": 4, "labels": 5},
        ),
        (content_pb2.ReadContentRequest.DESCRIPTOR, {"digest": 1, "offset": 2, "size": 3}),
        (content_pb2.ReadContentResponse.DESCRIPTOR, {"offset": 1, "data": 2}),
        (
            content_pb2.Status.DESCRIPTOR,
            {"started_at": 1, "updated_at": 2, "ref": 3, "offset": 4, "total": 5, "expected": 6},
        ),
        (
            content_pb2.WriteContentRequest.DESCRIPTOR,
            {"action": 1, "ref": 2, "total": 3, "expected": 4, "offset": 5, "data": 6, "labels": 7},
        ),
        (
            content_pb2.WriteContentResponse.DESCRIPTOR,
            {"action": 1, "started_at": 2, "updated_at": 3, "offset": 4, "total": 5, "digest": 6},
        ),
        (content_pb2.UpdateRequest.DESCRIPTOR, {"info": 1, "update_mask": 2}),
        (
            descriptor_pb2.Descriptor.DESCRIPTOR,
            {"media_type": 1, "digest": 2, "size": 3, "annotations": 5},
        ),
        (leases_pb2.Lease.DESCRIPTOR, {"id": 1, "created_at": 2, "labels": 3}),
        (leases_pb2.CreateRequest.DESCRIPTOR, {"id": 1, "labels": 3}),
        (leases_pb2.DeleteRequest.DESCRIPTOR, {"id": 1, "sync": 2}),
        (
            images_pb2.Image.DESCRIPTOR,
            {"name": 1, "labels": 2, "target": 3, "created_at": 7, "updated_at": 8},
        ),
        (
            introspection_pb2.ServerResponse.DESCRIPTOR,
            {"uuid": 1, "pid": 2, "pidns": 3, "deprecations": 4},
        ),
    ],
    ids=lambda v: getattr(v, "full_name", ""),
)
def test_field_numbers_are_containerds(message: Descriptor, expected: dict[str, int]) -> None:
    assert fields(message) == expected


def test_write_actions() -> None:
    assert (content_pb2.STAT, content_pb2.WRITE, content_pb2.COMMIT) == (0, 1, 2)
